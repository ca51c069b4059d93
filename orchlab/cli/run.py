"""``orchlab run`` (one answer) and ``orchlab chat`` (a conversation stored in the thread store)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchlab.cli.common import ConfigOpt, EnvOpt, JsonOpt, Options, UrlOpt, client, options, print_json
from orchlab.errors import InvalidRequestError, StoreError

if TYPE_CHECKING:
    from orchlab.types import LLMResponse

System = Annotated[str | None, typer.Option("--system", "-s", help="a system message")]
Params = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="a call parameter, key=value (value read as YAML: 0.2, true, [a, b])"),
]


def run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="a role, provider:model or a URN")],
    prompt: Annotated[str | None, typer.Argument(help="the prompt (default: read from stdin)")] = None,
    system: System = None,
    param: Params = None,
    format: Annotated[str | None, typer.Option(help="raw, markdown, json or a registered format")] = None,
    output_schema: Annotated[
        Path | None, typer.Option(help="a JSON schema file: ask for a structured answer")
    ] = None,
    stream: Annotated[
        bool | None, typer.Option("--stream/--no-stream", help="print as it comes (default: on a terminal)")
    ] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Answer a prompt with a role (stdin works: `echo text | orchlab run llm.inference`)."""
    opts = options(ctx, config, env, json_, url)
    text = _prompt(prompt)
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    params = parse_params(param or [])
    output = schema_model(output_schema) if output_schema is not None else None
    if stream is None:
        stream = sys.stdout.isatty() and not opts.json
    if stream and (output is not None or format is not None or opts.json):
        raise InvalidRequestError(
            "--stream prints text as it comes: not with --json, --format or --output-schema",
            parameter="stream",
        )
    if opts.url:
        _run_remote(opts, target, messages, params, stream, output is not None or format is not None)
        return
    llm = client(opts)
    if stream:
        chunks = llm.stream(target, messages, params or None)
        for delta in chunks:
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    response = llm.run(target, messages, params or None, output=output, format=format)
    if opts.json:
        print_json(response_json(response))
    elif output is not None and response.output is not None:
        sys.stdout.write(json.dumps(response.output.model_dump(), ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(response.content.rstrip("\n") + "\n")


def _run_remote(
    opts: Options,
    target: str,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    stream: bool,
    structured: bool,
) -> None:
    """``run`` through a gateway's ``POST /v1/chat/completions``."""
    from orchlab.cli.remote import Gateway

    if structured:
        raise InvalidRequestError(
            "--format and --output-schema run on the local config only, not with --url / ORCHLAB_URL",
            parameter="url",
        )
    gateway = Gateway(str(opts.url))
    if stream:
        for delta in gateway.stream(target, messages, params):
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    answer = gateway.complete(target, messages, params)
    if opts.json:
        print_json(answer)
    else:
        sys.stdout.write(str(answer["content"]).rstrip("\n") + "\n")


def _prompt(prompt: str | None) -> str:
    if prompt is not None and prompt != "-":
        return prompt
    if sys.stdin.isatty():
        raise InvalidRequestError("no prompt: give one after the role, or pipe one in", parameter="prompt")
    text = sys.stdin.read()
    if not text.strip():
        raise InvalidRequestError("the prompt read from stdin is empty", parameter="prompt")
    return text


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["temperature=0.2", "stop=[x]"]`` → ``{"temperature": 0.2, "stop": ["x"]}``."""
    import yaml

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidRequestError(f"-p {item!r}: write key=value (-p temperature=0.2)", parameter="param")
        try:
            params[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            params[key.strip()] = value
    return params


def schema_model(path: Path) -> type:
    """A pydantic model class whose JSON schema is the file's (the answer must be a JSON object)."""
    from pydantic import BaseModel, ConfigDict

    try:
        schema = json.loads(path.expanduser().read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequestError(f"--output-schema {path}: {exc}", parameter="output_schema") from None
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise InvalidRequestError(
            f"--output-schema {path}: a JSON schema of an object ({{'type': 'object', ...}})",
            parameter="output_schema",
        )

    class Output(BaseModel):
        model_config = ConfigDict(extra="allow")

        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return dict(schema)

    Output.__name__ = str(schema.get("title") or path.stem)
    return Output


def response_json(response: LLMResponse) -> dict[str, Any]:
    output = response.output.model_dump() if hasattr(response.output, "model_dump") else response.output
    return {
        "content": response.content,
        "output": output,
        "role": response.role,
        "provider": response.provider,
        "model": response.model,
        "input_tokens": response.usage.input_tokens,
        "output_tokens": response.usage.output_tokens,
        "cost_usd": response.cost_usd,
        "latency_s": response.latency_s,
        "finish_reason": response.finish_reason,
        "trace_id": response.trace_id,
        "message_id": response.message_id,
        "id": response.id,
    }


LAST_THREAD = "orchlab.cli.last_thread"


def chat(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="a role, provider:model or a URN")],
    thread: Annotated[str | None, typer.Option("--thread", "-t", help="a thread name or id")] = None,
    continue_: Annotated[
        bool, typer.Option("--continue", "-c", help="continue the last thread (of the local store)")
    ] = False,
    system: System = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    url: UrlOpt = None,
) -> None:
    """Talk with a role; the conversation is stored (/exit or Ctrl-D ends, Ctrl-C cancels an answer).

    With --url the gateway stores it (POST /chat with the thread): --thread ID resumes it there."""
    opts = options(ctx, config, env, url=url)
    if opts.url:
        if continue_ and thread is None:
            raise typer.BadParameter(
                "--continue finds the last thread in the local store; on a gateway (--url / "
                "ORCHLAB_URL) give the thread: --thread ID",
                param_hint="'--continue'",
            )
        _chat_remote(opts, target, thread, system)
        return
    llm = client(opts)
    name = thread
    if continue_ and name is None:
        last = llm.store.threads(limit=1)
        if len(last):
            name = str(last.iloc[0]["id"])
    conversation = llm.thread(name, system=system)
    print(f"thread {conversation.id} · {target} · /exit to leave", file=sys.stderr)

    def answer(line: str) -> None:
        for delta in conversation.stream(target, line):
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")

    _converse(answer)


def _chat_remote(opts: Options, target: str, thread: str | None, system: str | None) -> None:
    """``chat`` on a gateway: each turn a ``POST /chat`` naming the thread, whose history the
    gateway keeps and sends (a system prompt is sent each turn, not stored, as in the library)."""
    from orchlab.cli.remote import Gateway

    gateway = Gateway(str(opts.url))
    where = f"{target} · {gateway.url} · /exit to leave"
    if thread is not None:
        from orchlab.store.ids import is_ulid

        found = gateway.thread(thread)  # a wrong key or URL shows here, before the first prompt
        if found is not None:
            thread = str(found["id"])
            print(f"thread {thread} · {len(found.get('messages') or ())} messages · {where}", file=sys.stderr)
        elif is_ulid(thread):
            raise StoreError(f"no thread {thread!r} on the gateway at {gateway.url}")
        else:
            print(f"new thread named {thread!r} · {where}", file=sys.stderr)
    else:
        from datetime import UTC, datetime
        from uuid import uuid4

        thread = f"cli-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid4().hex[:6]}"  # made on first use
        print(f"new thread named {thread!r} · {where}", file=sys.stderr)
    current = {"thread": thread}

    def answer(line: str) -> None:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": line})
        out = gateway.chat(target, messages, current["thread"])
        if out["thread_id"] != current["thread"]:  # the name's thread was made: say its id once
            print(f"thread {out['thread_id']} (resume: --thread {out['thread_id']})", file=sys.stderr)
            current["thread"] = out["thread_id"]
        sys.stdout.write(str(out.get("answer") or "").rstrip("\n") + "\n")
        sys.stdout.flush()

    _converse(answer)


def _converse(answer: Callable[[str], None]) -> None:
    """The prompt loop: ``answer`` each line; /exit, /quit or Ctrl-D ends; Ctrl-C cancels one answer."""
    err = sys.stderr
    while True:
        try:
            line = input("> ")
        except EOFError:
            print(file=err)
            return
        except KeyboardInterrupt:
            print(file=err)
            continue
        if not line.strip():
            continue
        if line.strip() in ("/exit", "/quit"):
            return
        try:
            answer(line)
        except KeyboardInterrupt:
            print("\n(cancelled)", file=err)
