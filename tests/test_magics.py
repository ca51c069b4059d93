"""%%llm and %llm in a real IPython InteractiveShell, generating with the real local model."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from orchlab.notebook import NotebookSession, set_session
from orchlab.notebook.args import ArgsError, parse_cell_args
from orchlab.notebook.interpolate import InterpolationError, interpolate
from orchlab.notebook.magics import LLMCallError
from orchlab.render import format_latency
from orchlab.types import LLMResponse

CONFIG = """\
    # a test config: two providers on the same in-process model
    project: magic_tests
    env: dev
    providers:
      local: {type: llamacpp, options: {n_ctx: 2048}}
      local2: {type: llamacpp, options: {n_ctx: 2048}}
    roles:
      llm.inference:
        provider: local
        model: gemma-3-270m
        description: the main answer
        params: {temperature: 0, max_tokens: 12}
      llm.preprocess:
        provider: local
        model: gemma-3-270m
        params: {temperature: 0, max_tokens: 8}
    """


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "orchlab")
    return sh


@pytest.fixture
def session(write_config: Callable[..., Path]) -> Iterator[NotebookSession]:
    s = NotebookSession(write_config(CONFIG))
    s.live_mode = "display"
    s.live_interval_s = 0.0  # every delta updates the display: the test can count them
    set_session(s)
    yield s
    set_session(None)
    s.close()


def cell(shell: InteractiveShell, line: str, body: str) -> tuple[Any, Any]:
    with capture_output() as cap:
        shell.run_cell_magic("llm", line, body)
    return cap, shell.user_ns


def prompt_sent(response: LLMResponse) -> str:
    """The completion prompt the llama.cpp adapter built from the messages (it keeps it in ``raw``)."""
    return str(response.raw["prompt"])


# --- parsing and interpolation (no model) ----------------------------------------------------


def test_options_parse_into_the_args_model() -> None:
    args = parse_cell_args(
        "-r llm.preprocess -m local2:gemma-3-270m -f json -o out --system 'Be brief.' "
        "--temperature 0.5 --max-tokens 9 --param top_p=0.9 --param stop='[\"\\n\"]' "
        "--chat c1 --depth 2 --no-stream --config cfg.yaml"
    )
    assert args.role == "llm.preprocess"
    assert args.model == "local2:gemma-3-270m"
    assert (args.format, args.out, args.system) == ("json", "out", "Be brief.")
    assert (args.chat, args.depth, args.no_stream) == ("c1", 2, True)
    assert args.config == Path("cfg.yaml")
    assert args.params_override() == {"top_p": 0.9, "stop": ["\n"], "temperature": 0.5, "max_tokens": 9}
    assert parse_cell_args("--compare llm.inference, local2:gemma-3-270m").compare == [
        "llm.inference",
        "local2:gemma-3-270m",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-f yaml", "invalid choice: 'yaml'"),
        ("--bogus", "unrecognized arguments: --bogus"),
        ("-o 2x", "--out needs a Python variable name, got '2x'"),
        ("--depth 3", "--depth only applies to a named conversation"),
        ("-m gpt-4", "--model takes 'provider:model', got 'gpt-4'"),
        ("--temperature 3", "--temperature: Input should be less than or equal to 2"),
        ("--max-tokens 0", "--max-tokens: Input should be greater than 0"),
        ("--param novalue", "--param takes key=value"),
        ("--system 'unclosed", "No closing quotation"),
        ("--compare llm.inference", "--compare needs at least two"),
        ("--insert", "--insert puts the answer's code in a new cell: add -f code"),
    ],
)
def test_bad_options_are_usage_errors_with_the_usage_line(
    shell: InteractiveShell, session: NotebookSession, line: str, message: str
) -> None:
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("llm", line, "What is 2+2?")
    text = str(info.value)
    assert message in text
    assert "usage: %%llm [-r ROLE] [-m PROVIDER:MODEL]" in text
    with pytest.raises(ArgsError):
        parse_cell_args(line)


def test_interpolation_fills_double_braces_and_leaves_single_braces() -> None:
    ns = {"n": 3, "Out": {3: "forty-two"}, "rows": [1, 2]}
    code = 'd = {"a": {"b": 1}}\nprint(f"{d}")  # {# not a comment #}'
    assert interpolate(code, ns) == code
    assert interpolate('n={{ n * 2 }}, out={{ Out[3] }}, {"k": {{ rows }}}', ns) == (
        'n=6, out=forty-two, {"k": [1, 2]}'
    )
    assert interpolate("{% for r in rows %}<{{ r }}>{% endfor %}", ns) == "<1><2>"
    with pytest.raises(InterpolationError, match="'missing' is undefined in the notebook"):
        interpolate("{{ missing }}", ns)
    with pytest.raises(InterpolationError, match=r"raised ZeroDivisionError"):
        interpolate("{{ 1 / 0 }}", ns)


def test_interpolation_errors_and_empty_cells_are_usage_errors(
    shell: InteractiveShell, session: NotebookSession
) -> None:
    with pytest.raises(UsageError, match="'not_defined_here' is undefined"):
        shell.run_cell_magic("llm", "", "Tell me about {{ not_defined_here }}")
    with pytest.raises(UsageError, match="the cell is empty"):
        shell.run_cell_magic("llm", "", "  \n ")


def test_help_prints_the_options(shell: InteractiveShell, session: NotebookSession) -> None:
    with capture_output() as cap:
        shell.run_cell_magic("llm", "--help", "ignored")
    assert "--chat NAME" in cap.stdout and "--no-stream" in cap.stdout
    assert shell.run_line_magic("llm", "").text.startswith("usage: %llm {roles,models,config,use")


# --- generating with the local model ----------------------------------------------------------


@pytest.mark.slow
def test_cell_streams_then_renders_markdown_with_footer(
    shell: InteractiveShell, session: NotebookSession
) -> None:
    shell.user_ns["country"] = "France"
    cap, ns = cell(shell, "-o answer", "What is the capital of {{ country }}?")
    response = ns["answer"]
    assert isinstance(response, LLMResponse)
    assert "Q: What is the capital of France?\nA:" in prompt_sent(response)
    assert response.content.startswith("The capital of France is Paris")
    first, *updates, final = cap.outputs
    # the live display: shown empty, updated as deltas arrive, blanked when the answer is shown
    assert first.data == {"text/plain": ""} and not first.update
    assert len(updates) >= 3 and all(u.update for u in updates)
    texts = [u.data["text/plain"].removesuffix("▌") for u in updates[:-1]]
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(texts))
    assert texts[-1].strip() == response.content
    assert updates[-1].data == {"text/plain": ""}
    # the final answer: markdown + text + metadata, with the footer
    assert not final.update
    assert final.data["text/markdown"] == (
        f"{response.content}\n\n<sub>local · gemma-3-270m · {response.usage.input_tokens} → "
        f"{response.usage.output_tokens} tokens · {_cost(response)} · "
        f"{format_latency(response.latency_s)}</sub>"
    )
    assert final.metadata["orchlab"]["output_tokens"] == response.usage.output_tokens > 0
    assert final.metadata["orchlab"]["latency_s"] == round(response.latency_s, 4)
    assert session.last is response


def _cost(response: LLMResponse) -> str:
    from orchlab.render import format_cost

    return format_cost(response.cost_usd, response.cost_note)


@pytest.mark.slow
def test_no_stream_shows_only_the_final_answer(shell: InteractiveShell, session: NotebookSession) -> None:
    cap, ns = cell(shell, "--no-stream -f text -o r", "What is the capital of France?")
    assert len(cap.outputs) == 1
    assert cap.outputs[0].data["text/plain"].startswith(f"{ns['r'].content}\n── local · gemma-3-270m · ")
    assert list(cap.outputs[0].data) == ["text/plain"]


@pytest.mark.slow
def test_print_mode_streams_deltas_to_stdout(shell: InteractiveShell, session: NotebookSession) -> None:
    session.live_mode = "print"
    cap, ns = cell(shell, "-o r", "What is the capital of France?")
    assert cap.stdout.strip() == ns["r"].content
    assert len(cap.outputs) == 1


@pytest.mark.slow
def test_json_format_parses_the_answer(shell: InteractiveShell, session: NotebookSession) -> None:
    few_shot = 'Q: Bob is 25.\nA: {"name": "Bob", "age": 25}\nQ: Alice is 30.'
    cap, ns = cell(shell, "-f json --max-tokens 16 -o person", few_shot)
    assert ns["person"].content == '{"name": "Alice", "age": 30}'
    final = cap.outputs[-1]
    assert final.data["text/plain"].startswith('{\n  "name": "Alice",\n  "age": 30\n}\n── local')


@pytest.mark.slow
def test_json_format_on_text_is_a_clear_error(shell: InteractiveShell, session: NotebookSession) -> None:
    with capture_output() as cap, pytest.raises(LLMCallError) as info:
        shell.run_cell_magic("llm", "-f json -o r", "What is the capital of France?")
    assert str(info.value).startswith("the answer is not JSON (Expecting value at line 1): 'The capital")
    assert str(info.value).endswith("(the raw answer is shown above and bound to r)")
    raw = cap.outputs[-1].data
    assert raw["text/plain"].startswith(shell.user_ns["r"].content)
    assert "not JSON" in raw["text/html"]


CODE_PROMPT = (
    "Q: Write a Python function add(a, b).\nA: ```python\ndef add(a, b):\n    return a + b\n```\n"
    "Q: Write a Python function mul(a, b)."
)


@pytest.mark.slow
def test_code_format_strips_fences_and_adds_no_cell_unless_asked(
    shell: InteractiveShell, session: NotebookSession
) -> None:
    shell.rl_next_input = None
    cap, ns = cell(shell, "-f code --max-tokens 24 -o r", CODE_PROMPT)
    code = "def mul(a, b):\n    return a * b"
    assert ns["r"].content == f"```python\n{code}\n```"
    assert shell.rl_next_input is None  # a notebook run twice does not grow a cell per run
    assert cap.outputs[-1].data["text/plain"].startswith(f"{code}\n── local")
    assert cap.outputs[-1].data["text/markdown"].startswith(f"```python\n{code}\n```\n\n<sub>local")


@pytest.mark.slow
def test_insert_puts_code_that_compiles_in_a_new_cell(
    shell: InteractiveShell, session: NotebookSession
) -> None:
    shell.rl_next_input = None
    cell(shell, "-f code --insert --max-tokens 24", CODE_PROMPT)
    assert shell.rl_next_input == (
        "# code from an %%llm answer (-f code --insert): read it before running it\n"
        "def mul(a, b):\n    return a * b"
    )


@pytest.mark.slow
def test_insert_refuses_a_cut_off_answer(shell: InteractiveShell, session: NotebookSession) -> None:
    shell.rl_next_input = None
    cap, ns = cell(shell, "-f code --insert --max-tokens 8 -o r", CODE_PROMPT)
    assert ns["r"].content == "```python\ndef mul(a,"  # cut off by max_tokens
    assert shell.rl_next_input is None
    assert cap.outputs[-1].data["text/plain"] == (
        "not put in a new cell: the code does not compile as Python "
        "(SyntaxError: '(' was never closed, line 1)"
    )


@pytest.mark.slow
def test_system_and_params_reach_the_model(shell: InteractiveShell, session: NotebookSession) -> None:
    _, ns = cell(
        shell, "--no-stream --system 'You answer about geography.' --max-tokens 3 -o r", "Capital of Italy?"
    )
    r = ns["r"]
    assert prompt_sent(r).startswith("You answer about geography.\n\nQ: Capital of Italy?\nA:")
    assert r.usage.output_tokens == 3
    assert r.finish_reason == "length"


@pytest.mark.slow
def test_chat_keeps_only_its_last_depth_exchanges(shell: InteractiveShell, session: NotebookSession) -> None:
    questions = ["What is 2+2?", "What is 3+3?", "What is 4+4?"]
    responses = []
    for q in questions:
        _, ns = cell(shell, "--no-stream --chat maths --depth 1 --max-tokens 8 -o r", q)
        responses.append(ns["r"])
    last_prompt = prompt_sent(responses[-1])
    # depth 1: the third call sees the second exchange, not the first
    assert "What is 2+2?" not in last_prompt
    assert f"Q: What is 3+3?\nA: {responses[1].content}\n" in last_prompt
    assert last_prompt.endswith("Q: What is 4+4?\nA:")
    chats = shell.run_line_magic("llm", "chats")
    assert chats.records() == [
        {"chat": "maths", "depth": "1", "kept": "1", "turns": "3", "last question": "What is 4+4?"}
    ]
    assert shell.run_line_magic("llm", "reset maths").text == "forgot maths"
    with pytest.raises(UsageError, match="no conversation named 'maths'"):
        shell.run_line_magic("llm", "reset maths")


@pytest.mark.slow
def test_use_rebinds_a_role_for_the_session(shell: InteractiveShell, session: NotebookSession) -> None:
    msg = shell.run_line_magic("llm", "use llm.inference local2:gemma-3-270m")
    assert msg.text.startswith("llm.inference: local:gemma-3-270m → local2:gemma-3-270m (for this session")
    roles = {r["role"]: r for r in shell.run_line_magic("llm", "roles").records()}
    assert roles["llm.inference"]["provider"] == "local2"
    assert roles["llm.inference"]["bound by"] == "session"
    assert roles["llm.preprocess"]["bound by"] == "config"
    _, ns = cell(shell, "--no-stream -o r", "What is 2+2?")
    assert ns["r"].provider == "local2"
    with pytest.raises(UsageError, match=r"role 'llm\.infer' is not defined.*did you mean 'llm\.inference'"):
        shell.run_line_magic("llm", "use llm.infer local:gemma-3-270m")
    with pytest.raises(UsageError, match="provider 'nowhere' is not defined"):
        shell.run_line_magic("llm", "use llm.inference nowhere:m")


# --- errors from the library: one message naming role and target ----------------------------


def test_unknown_role_lists_the_roles(shell: InteractiveShell, session: NotebookSession) -> None:
    with pytest.raises(
        LLMCallError, match=r"UnknownRoleError: role 'llm.inferenc' is not defined.*did you mean"
    ):
        shell.run_cell_magic("llm", "-r llm.inferenc", "hi")


def test_missing_key_names_provider_env_var_and_role(
    shell: InteractiveShell, write_config: Callable[..., Path]
) -> None:
    path = write_config(
        """\
        project: p
        providers:
          openai: {api_base: "http://127.0.0.1:9/v1"}
        roles:
          llm.inference: {provider: openai, model: gpt-4.1-mini}
        """,
        name="cloud.yaml",
    )
    s = NotebookSession(path)
    set_session(s)
    try:
        with pytest.raises(LLMCallError) as info:
            shell.run_cell_magic("llm", "", "hi")
    finally:
        set_session(None)
        s.close()
    text = str(info.value)
    assert text.startswith("AuthError: ")
    assert "ORCH_AUTH_OPENAI_API_KEY" in text
    assert "[role 'llm.inference']" in text or "llm.inference" in text


def test_provider_failure_names_role_and_target(
    shell: InteractiveShell, write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_OPENAI_API_KEY", "sk-test-not-a-real-key")
    path = write_config(
        """\
        project: p
        providers:
          openai: {api_base: "http://127.0.0.1:9/v1", timeout_s: 5}
        roles:
          llm.inference: {provider: openai, model: gpt-4.1-mini}
        """,
        name="dead.yaml",
    )
    s = NotebookSession(path)
    set_session(s)
    try:
        with capture_output(), pytest.raises(LLMCallError) as info:
            shell.run_cell_magic("llm", "", "hi")
    finally:
        set_session(None)
        s.close()
    text = str(info.value)
    assert text.startswith("ProviderConnectionError: openai:gpt-4.1-mini")
    assert text.endswith("[role 'llm.inference']")
    assert "sk-test-not-a-real-key" not in text
    assert isinstance(info.value.__cause__, Exception)


def test_config_subcommand_shows_and_switches(
    shell: InteractiveShell, session: NotebookSession, write_config: Callable[..., Path]
) -> None:
    shown = {r["setting"]: r["value"] for r in shell.run_line_magic("llm", "config").records()}
    assert shown["project"] == "magic_tests"
    assert shown["roles"] == "llm.inference, llm.preprocess"
    other = write_config(CONFIG.replace("magic_tests", "other_project"), name="other.yaml")
    shown = {r["setting"]: r["value"] for r in shell.run_line_magic("llm", f"config {other}").records()}
    assert (shown["project"], shown["file"]) == ("other_project", str(other))
    assert session.client.config.project == "other_project"
    with pytest.raises(LLMCallError, match=r"ConfigFileError: config file not found: .*missing\.yaml"):
        shell.run_line_magic("llm", "config missing.yaml")
    assert session.client.config.project == "other_project"


# --- strategies, ensembles, models (issue 5's API) --------------------------------------------


@pytest.mark.slow
def test_model_option_overrides_the_role_model(shell: InteractiveShell, session: NotebookSession) -> None:
    _, ns = cell(shell, "-m local2:gemma-3-270m --max-tokens 8 -o r", "What is 2+2?")
    assert (ns["r"].provider, ns["r"].model, ns["r"].content) == ("local2", "gemma-3-270m", "2+2 = 4")


@pytest.mark.slow
def test_strategy_option_shows_the_strategy_in_the_footer(
    shell: InteractiveShell, session: NotebookSession
) -> None:
    cap, ns = cell(shell, "-r llm.inference -s local_first --max-tokens 8 -o r", "What is 2+2?")
    r = ns["r"]
    assert r.decision.strategy == "local_first"
    assert cap.outputs[-1].data["text/plain"].endswith(f"{format_latency(r.latency_s)} · local_first")


@pytest.mark.slow
def test_ensemble_option_votes(
    shell: InteractiveShell, session: NotebookSession, write_config: Callable[..., Path]
) -> None:
    with_candidates = CONFIG.replace(
        "description: the main answer\n",
        "description: the main answer\n        candidates: [local2:gemma-3-270m]\n",
    )
    path = write_config(with_candidates, name="ensemble.yaml")
    cap, ns = cell(shell, f"--config {path} --ensemble vote --max-tokens 8 -o r", "What is 2+2?")
    r = ns["r"]
    assert r.content == "2+2 = 4"
    assert r.decision.strategy == "ensemble"
    assert r.decision.rationale.startswith("vote: 2/2 answers agree")
    assert "· ensemble" in cap.outputs[-1].data["text/plain"]


# --- with tracking: feedback under the answer, compare runs, registered prompts ------------------


@pytest.fixture
def tracked_session(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[NotebookSession]:
    """Tracking on, into ``mlflow.db`` in the test's temp dir; flushed before the test ends."""
    import orchlab

    monkeypatch.setenv("ORCH_TRACKING", "1")  # the tests' default is off (conftest)
    s = NotebookSession(write_config(CONFIG))
    s.live_mode = "display"
    set_session(s)
    yield s
    set_session(None)
    s.close()
    assert orchlab.flush(timeout=120)


@pytest.mark.slow
def test_tracked_cell_is_a_trace_with_feedback_buttons_under_it(
    shell: InteractiveShell, tracked_session: NotebookSession
) -> None:
    import orchlab

    cap, ns = cell(shell, "--max-tokens 8 -o r", "What is 2+2?")
    r = ns["r"]
    assert r.trace_id and r.trace_id.startswith("tr-")
    answer, buttons = cap.outputs[-2], cap.outputs[-1]
    assert answer.data["text/plain"].startswith("2+2 = 4\n── local")
    assert buttons.data["text/plain"] == "rate this answer: 👍 👎 1★ 2★ 3★ 4★ 5★ + comment"
    assert "application/vnd.jupyter.widget-view+json" in buttons.data
    tracked_session.client.feedback(r, 5, comment="from the test")
    history = orchlab.history(client=tracked_session.client)
    row = history.set_index("trace_id").loc[r.trace_id]
    assert (row["role"], row["model"], row["answer"], row["rating"]) == (
        "llm.inference",
        "gemma-3-270m",
        "2+2 = 4",
        5,
    )
    frame = shell.run_line_magic("llm", "history --limit 5")
    assert list(frame["trace_id"]) == [r.trace_id]


@pytest.mark.slow
def test_compare_option_shows_targets_side_by_side(
    shell: InteractiveShell, tracked_session: NotebookSession
) -> None:
    cap, ns = cell(
        shell, "--compare llm.preprocess,local2:gemma-3-270m --max-tokens 8 -o results", "What is 2+2?"
    )
    results = ns["results"]
    assert [r.target for r in results] == ["llm.preprocess", "local2:gemma-3-270m"]
    text = cap.outputs[-1].data["text/plain"]
    assert text.startswith(
        "prompt: What is 2+2?\n── llm.preprocess\n2+2 = 4\nlocal · gemma-3-270m · 13 → 8 tokens"
    )
    assert "\n── local2:gemma-3-270m\n2+2 = 4\nlocal2 · gemma-3-270m · 13 → 8 tokens · $0 · " in text
    assert all(r.trace_id for r in results)
    assert {r.comparison.runs[r.target] is not None for r in results} == {True}


@pytest.mark.slow
def test_registered_prompt_fills_its_variable_from_the_cell(
    shell: InteractiveShell, tracked_session: NotebookSession
) -> None:
    import orchlab

    client = tracked_session.client
    orchlab.register_prompt("capital", "What is the capital of {{country}}?", client=client)
    _, ns = cell(shell, "--prompt capital@1 --max-tokens 10 -o r", "France")
    r = ns["r"]
    assert r.content.startswith("The capital of France is Paris")
    assert "Q: What is the capital of France?" in prompt_sent(r)
    shell.user_ns["country"] = "Italy"
    _, ns = cell(shell, "--prompt capital@1 --max-tokens 10 -o r2", "# the notebook's variable fills it")
    assert "Q: What is the capital of Italy?" in prompt_sent(ns["r2"])
    history = orchlab.history(client=client, prompt_name="capital")
    assert set(zip(history["prompt_name"], history["prompt_version"], strict=True)) == {("capital", "1")}
    with pytest.raises(LLMCallError, match="could not load prompt 'nosuch@1'"):
        shell.run_cell_magic("llm", "--prompt nosuch@1", "x")


@pytest.mark.slow
def test_no_log_leaves_no_trace_and_no_buttons(
    shell: InteractiveShell, tracked_session: NotebookSession
) -> None:
    import orchlab

    cap, ns = cell(shell, "--no-log --max-tokens 8 -o r", "What is 2+2?")
    assert ns["r"].content == "2+2 = 4"
    assert ns["r"].trace_id is None
    assert cap.outputs[-1].data["text/plain"].startswith("2+2 = 4\n── local")  # no feedback buttons
    _, ns = cell(shell, "--max-tokens 8 -o logged", "What is 3+3?")
    history = orchlab.history(client=tracked_session.client)
    assert list(history["trace_id"]) == [ns["logged"].trace_id]


# --- line subcommands backed by the catalog, the usage tracker and the budgets ------------------


def test_models_subcommand_filters_the_catalog(shell: InteractiveShell, session: NotebookSession) -> None:
    frame = shell.run_line_magic("llm", "models --local")
    assert list(frame["target"]) == ["local:gemma-3-270m"]  # the bound models (no discovery)
    assert set(frame["tier"]) == {"fast"} and set(frame["input_per_mtok"]) == {0.0}
    assert shell.run_line_magic("llm", "models --cloud").text == (
        "no model in this config's catalog matches those filters"
    )
    with pytest.raises(LLMCallError, match="unknown capability 'telepathy'"):
        shell.run_line_magic("llm", "models --capability telepathy")


@pytest.mark.slow
def test_usage_and_budget_subcommands(shell: InteractiveShell, session: NotebookSession) -> None:
    session.client.budgets.set(session_usd=0.5)
    cell(shell, "--no-stream --max-tokens 4", "What is 2+2?")
    usage = shell.run_line_magic("llm", "usage")
    row = usage.set_index("role").loc["llm.inference"]
    assert (row["calls"], row["output_tokens"], row["cost_usd"]) == (1, 4, 0.0)
    budget = shell.run_line_magic("llm", "budget").records()
    assert budget[0] == {
        "budget": "session",
        "limit": "$0.5",
        "spent": "$0",
        "reserved": "$0",
        "remaining": "$0.5",
    }


def test_budget_shows_whole_dollars_without_a_trailing_dot(
    shell: InteractiveShell, session: NotebookSession
) -> None:
    session.client.budgets.set(session_usd=1.0)
    assert shell.run_line_magic("llm", "budget").records()[0]["limit"] == "$1"


def test_mlflow_subcommand_names_the_store_in_use_and_a_command_for_it(
    shell: InteractiveShell,
    write_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setenv("ORCH_TRACKING", "1")
    monkeypatch.setenv("ORCH_TRACKING_URI", f"sqlite:///{tmp_path}/elsewhere/store.db")
    s = NotebookSession(write_config(CONFIG))
    set_session(s)
    try:
        hint = repr(shell.run_line_magic("llm", "mlflow --port 5077"))
    finally:
        set_session(None)
        s.close()
    store = f"sqlite:///{tmp_path}/elsewhere/store.db"
    assert hint.splitlines()[0] == f"MLflow store: {store}  (experiment 'magic_tests · dev')"
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    assert (
        f"  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {mlflow_cli} server --backend-store-uri {store} "
        "--workers 1 --host 127.0.0.1 --port 5077"
    ) in hint.splitlines()
    assert "then open http://127.0.0.1:5077" in hint
    monkeypatch.setenv("ORCH_TRACKING", "0")
    off = NotebookSession(write_config(CONFIG))
    set_session(off)
    try:
        assert repr(shell.run_line_magic("llm", "mlflow")).startswith("tracking is off for this client")
    finally:
        set_session(None)
        off.close()
