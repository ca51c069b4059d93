"""What one ``%%llm`` cell does, given its parsed options: build the messages, call the client,
stream, show the answer in its format with the footer and the feedback buttons, bind ``-o``.

The magic (`orchlab.notebook.magics`) only parses and translates errors; this module only calls
the public client API (``run``, ``stream``, ``complete``, ``ensemble``, ``orchlab.compare``,
``orchlab.load_prompt``); it knows nothing about providers.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orchlab.errors import OrchlabError, UnsupportedCapabilityError
from orchlab.notebook.args import CellArgs, cell_help
from orchlab.notebook.formats import Answer, AnswerFormatError, raw_answer
from orchlab.notebook.interpolate import interpolate
from orchlab.notebook.live import LiveText
from orchlab.notebook.session import LiveMode, NotebookSession

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator
    from orchlab.tools.model import ToolRun
    from orchlab.types import LLMResponse

Messages = list[Any]
"""Message dicts, or `PromptMessage` objects (they carry the registered prompt's version)."""


class CellError(Exception):
    """A call from a cell failed; the message names the error, the role and the target."""


class CellUsageError(ValueError):
    """The cell cannot run as written (empty prompt, no role to default to, unknown chat)."""


def describe_error(exc: BaseException, *, role: str | None = None, target: str | None = None) -> str:
    """One readable message: ``AuthError: ... [role 'llm.inference' → openai:gpt-4.1]``."""
    text = str(exc)
    subs: Sequence[BaseException] = getattr(exc, "exceptions", ())
    if subs:
        text = getattr(exc, "message", text)
        text += "".join(f"\n  - {type(e).__name__}: {e}" for e in subs)
    where = []
    if role and role not in text:
        where.append(f"role {role!r}")
    if target and target not in text:
        where.append(target)
    suffix = f" [{' → '.join(where)}]" if where else ""
    return f"{type(exc).__name__}: {text}{suffix}"


def live_mode(shell: Any, session: NotebookSession) -> LiveMode:
    if session.live_mode is not None:
        return session.live_mode
    return "display" if getattr(shell, "kernel", None) is not None else "print"


def messages_for(prompt: str, system: str | None) -> Messages:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": prompt}]


def run_cell(shell: Any, session: NotebookSession, args: CellArgs, body: str) -> Any:
    """Run one cell; returns its response (or compare results). The magic itself returns nothing,
    so the answer is not shown twice."""
    if args.help:
        print(cell_help())
        return None
    client = session.client_for(args.config)
    if args.prompt:
        if args.chat:
            raise CellUsageError("--prompt and --chat do not combine: a registered prompt is one exchange")
        messages = registered_prompt_messages(client, args.prompt, body, shell.user_ns)
        prompt = messages[-1].content
        if args.system:
            messages = [{"role": "system", "content": args.system}, *messages]
    else:
        prompt = interpolate(body, shell.user_ns).strip()
        if not prompt:
            raise CellUsageError("the cell is empty: write the prompt on the lines below %%llm")
        messages = []
    chat = session.chats.get(args.chat, args.depth, client=client) if args.chat else None
    turn = chat.begin(prompt, system=args.system) if chat else None
    if not messages:
        messages = list(turn.sent) if turn else messages_for(prompt, args.system)
    params = args.params_override()

    if args.compare:
        return _compare(shell, client, args, messages, params)

    role = args.role
    if role is None and not (args.strategy or args.model or args.ensemble):
        try:
            role = session.default_role(client)
        except LookupError as exc:
            raise CellUsageError(str(exc)) from None
    target = args.model or (_target_of(client, role) if role else None)
    try:
        with _logging(args):
            response = _answer(shell, session, client, args, role, messages, params)
    except OrchlabError as exc:
        raise CellError(describe_error(exc, role=role, target=target)) from exc

    if chat is not None and turn is not None:
        response = chat.finish(turn, response)  # stored: it survives a kernel restart
    session.last = response
    if args.out:
        shell.user_ns[args.out] = response
    show(shell, client, response, args)
    return response


def tool_items(names: list[str], namespace: Mapping[str, Any]) -> list[object]:
    """``--tools`` names: a notebook variable (a function, an ``@orchlab.tool``, or a list of
    them) or else a YAML toolset's name (checked by the library, with "did you mean")."""
    items: list[object] = []
    for name in names:
        value = namespace.get(name)
        if value is None:
            items.append(name)
        elif isinstance(value, list | tuple):
            items.extend(value)
        else:
            items.append(value)
    return items


def show_tool_run(run: ToolRun) -> None:
    """One tool call of a ``--tools`` cell and its result, shown as soon as the tool has run
    (`delegate`'s ``on_tool``), before the answer."""
    from IPython.display import display

    result = run.result.content if len(run.result.content) <= 200 else run.result.content[:197] + "..."
    verdict = "error: " if run.result.is_error else ""
    call = f"{run.call.name}({run.call.raw_arguments})"
    display(
        {
            "text/markdown": f"tool · step {run.step} `{call}` → {verdict}`{result}`",
            "text/plain": f"step {run.step}  {call} -> {verdict}{result}",
        },
        raw=True,
    )


def _answer(
    shell: Any,
    session: NotebookSession,
    client: Orchestrator,
    args: CellArgs,
    role: str | None,
    messages: Messages,
    params: dict[str, Any],
) -> LLMResponse:
    """The one library call this cell makes."""
    if args.tools:
        target = args.model or role
        tools = tool_items(args.tools, shell.user_ns)
        return client.delegate(messages, role=target, tools=tools, on_tool=show_tool_run, **params)
    output = output_model(args.output, shell.user_ns) if args.output else None
    if args.ensemble:
        return client.ensemble(messages, mode=args.ensemble, role=role, **params)
    if args.strategy or args.model:
        return client.complete(
            messages, role=role, strategy=args.strategy, model=args.model, output=output, **params
        )
    assert role is not None
    mode = live_mode(shell, session)
    if args.no_stream or mode == "off" or output is not None:
        return client.run(role, messages, params, output=output)
    live = LiveText(mode, interval_s=session.live_interval_s)
    streamed = _stream(client, role, messages, params, live)
    return streamed if streamed is not None else client.run(role, messages, params)


def output_model(name: str, namespace: Mapping[str, Any]) -> Any:
    """The class ``--output NAME`` names in the notebook (``City`` or ``models.City``)."""
    head, *rest = name.split(".")
    if head not in namespace:
        raise CellUsageError(
            f"--output {name}: no {head!r} in the notebook; define it first "
            "(class City(BaseModel): name: str)"
        )
    value = namespace[head]
    for part in rest:
        if not hasattr(value, part):
            raise CellUsageError(f"--output {name}: {head} has no attribute {part!r}")
        value = getattr(value, part)
    return value


def show(shell: Any, client: Orchestrator, response: LLMResponse, args: CellArgs) -> None:
    """The answer in its format with the footer, then the feedback buttons (tracked calls)."""
    from IPython.display import display

    answer = Answer(response, args.format)
    try:
        _, value = answer.body()
    except AnswerFormatError as exc:
        display(raw_answer(response, str(exc)), raw=True)
        bound = f" and bound to {args.out}" if args.out else ""
        raise CellError(f"{exc} (the raw answer is shown above{bound})") from None
    display(answer)
    if response.trace_id:
        from orchlab.widgets.rating import FeedbackWidget

        display(FeedbackWidget(response, client=client))
    if args.insert and value:
        problem = not_runnable(value)
        if problem is None:
            shell.set_next_input(f"{INSERTED_HEADER}\n{value}", replace=False)
        else:
            display({"text/plain": f"not put in a new cell: {problem}"}, raw=True)


INSERTED_HEADER = "# code from an %%llm answer (-f code --insert): read it before running it"


def not_runnable(code: str) -> str | None:
    """Why ``code`` must not become a cell (it does not compile as Python), or None.

    ``--insert`` is opt-in and checked, so a notebook run twice does not gain a new cell of a cut-off
    answer each time (which the next Run All would then execute)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning on "\d": compiling is only a check
            compile(code, "<llm answer>", "exec")
    except SyntaxError as exc:
        return f"the code does not compile as Python ({type(exc).__name__}: {exc.msg}, line {exc.lineno})"
    except ValueError as exc:
        return f"the code does not compile as Python ({exc})"
    return None


def _compare(
    shell: Any, client: Orchestrator, args: CellArgs, messages: Messages, params: dict[str, Any]
) -> Any:
    from IPython.display import display

    from orchlab.widgets.compare import ComparePanel, run_targets

    try:
        with _logging(args):
            results = run_targets(client, messages, args.compare, params=params or None, log=not args.no_log)
    except OrchlabError as exc:
        raise CellError(describe_error(exc)) from exc
    if args.out:
        shell.user_ns[args.out] = results
    display(ComparePanel(results, client=client, prompt=messages))
    return results


def registered_prompt_messages(
    client: Orchestrator, ref: str, body: str, namespace: Mapping[str, Any]
) -> Messages:
    """Render ``name@version`` with variables from the cell (a YAML mapping, or the whole text
    when the prompt has one variable) and, for any still missing, the notebook's variables."""
    import yaml

    from orchlab.tracking.prompts import load_prompt

    prompt = load_prompt(ref, client=client)
    text = interpolate(body, namespace).strip()
    variables: dict[str, Any] = {}
    try:
        parsed = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        parsed = None
    if isinstance(parsed, dict) and parsed and set(map(str, parsed)) <= prompt.variables:
        variables = {str(k): v for k, v in parsed.items()}
    elif parsed is None:
        pass  # only comments: the notebook's variables fill the prompt
    elif text and len(prompt.variables) == 1:
        variables = {next(iter(prompt.variables)): text}
    elif text:
        raise CellUsageError(
            f"prompt {prompt.ref} has variables {', '.join(sorted(prompt.variables)) or 'none'}: give them "
            "as 'name: value' lines in the cell (the notebook's own variables fill the rest)"
        )
    for name in prompt.variables - set(variables):
        if name in namespace:
            variables[name] = namespace[name]
    # PromptMessage objects: the trace records which prompt version the call used.
    return list(prompt.render(**variables))


def _logging(args: CellArgs) -> contextlib.AbstractContextManager[None]:
    """``--no-log``: the calls of this cell are not traced."""
    if not args.no_log:
        return contextlib.nullcontext()
    from orchlab.tracking.context import untracked

    return untracked()


def _target_of(client: Orchestrator, role: str) -> str | None:
    try:
        return client.resolve(role).target
    except OrchlabError:
        return None


def _stream(
    client: Orchestrator, role: str, messages: Messages, params: dict[str, Any], live: LiveText
) -> LLMResponse | None:
    """Stream into the cell; None when the provider cannot stream (the caller runs it instead)."""
    stream = client.stream(role, messages, params)
    live.start()
    try:
        for delta in stream:
            live.add(delta)
    except UnsupportedCapabilityError:
        if live.parts:
            live.finish(keep=True)
            raise
        live.finish()
        return None
    except BaseException:
        live.finish(keep=True)
        raise
    live.finish()
    return stream.response
