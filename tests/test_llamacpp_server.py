"""Integration: orchlab's ``llamacpp_server`` kind (the ``openai`` SDK) against a real llama.cpp server.

The server is llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``)
serving the shipped Gemma 3 270M GGUF on loopback: code no one here wrote, real tokens.

Two launch details, both about this model and this machine, not about orchlab:

- the GGUF is a base model without a chat template, so the server's fallback format (llama-2)
  makes it answer with an immediate end-of-sequence (empty content, 0 tokens). The server is
  started with ``--chat_format alpaca`` ("### Instruction: ... ### Response:"), which a base
  model continues sensibly ("What is 2+2?" -> "2+2 = 4 ...").
- the server reuses the KV cache of the previous prompt's common prefix, and that changes the
  floating-point path: at temperature 0 the first "What is 2+2?" gives "2+2 = 4 ...", the same
  request again "The 2+2 is a very common ...". Tests that compare two answers first send the
  request once, so that every compared call starts from the same cache state.
- ggml's AMX kernels crash (SIGSEGV) in VMs whose CPU advertises AMX without enabling it, and
  the server has no switch for that: the launcher turns off ggml's extra buffer types (the same
  thing orchlab's in-process adapter does) and then runs ``llama_cpp.server`` as ``__main__``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import orchlab
from orchlab.errors import ContextLengthExceededError
from orchlab.orchestrator import Orchestrator

pytestmark = [pytest.mark.slow, pytest.mark.server]

MODEL_ALIAS = "gemma-3-270m"
ROLE = "llm.local"
QUESTION = [{"role": "user", "content": "What is 2+2?"}]
START_TIMEOUT_S = 90.0

_LAUNCHER = """
import runpy, sys
import llama_cpp.llama_cpp as lowlevel

_default = lowlevel.llama_model_default_params

def _params():
    params = _default()
    params.use_extra_bufts = False   # no AMX / repacked weights (see the module docstring)
    return params

lowlevel.llama_model_default_params = _params
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "<no output>"
    return "\n".join(lines[-n:])


@pytest.fixture(scope="module")
def llama_server(gguf_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``llama_cpp.server`` once for this module; yield its base URL; always stop it."""
    logs = tmp_path_factory.mktemp("llama_server")
    port = _free_port()
    cmd = [
        sys.executable,
        "-c",
        _LAUNCHER,
        "--model",
        str(gguf_path),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "1024",
        "--chat_format",
        "alpaca",
        # one thread: ggml's threads spin while they wait, and on a small machine shared with other
        # test processes two spinning threads per server made each call several times slower
        "--n_threads",
        "1",
        "--n_threads_batch",
        str(min(os.cpu_count() or 1, 2)),
    ]
    base_url = f"http://127.0.0.1:{port}/v1"
    with open(logs / "stdout.log", "wb") as out, open(logs / "stderr.log", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(
                        f"llama_cpp.server exited with code {proc.returncode} before answering; "
                        f"its stderr ends with:\n{_tail(logs / 'stderr.log')}"
                    )
                try:
                    with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"llama_cpp.server did not answer {base_url}/models within {START_TIMEOUT_S:g}s; "
                        f"its stderr ends with:\n{_tail(logs / 'stderr.log')}"
                    )
                time.sleep(0.25)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def client(llama_server: str, write_config, monkeypatch: pytest.MonkeyPatch) -> Iterator[Orchestrator]:
    monkeypatch.setenv("ORCH_TRACKING", "0")  # MLflow tracking is tested in its own module
    path = write_config(
        f"""\
        project: llama_server_it
        providers:
          llama:
            type: llamacpp_server
            api_base: "{llama_server}"
            timeout_s: 60
        roles:
          {ROLE}:
            provider: llama
            model: {MODEL_ALIAS}
            params: {{temperature: 0, max_tokens: 8, seed: 1}}
        """
    )
    with orchlab.get_llm_client(path) as c:
        yield c


def _prime(client: Orchestrator, messages: list[dict[str, str]] = QUESTION) -> None:
    """Send ``messages`` once so the next identical prompts all start from the same KV cache."""
    client.run(ROLE, messages)


def test_real_completion_with_usage(client: Orchestrator) -> None:
    r = client.run(ROLE, QUESTION)
    assert r.content.strip(), "the model produced no text"
    assert r.usage.input_tokens > 0
    assert 0 < r.usage.output_tokens <= 8
    assert r.finish_reason in ("stop", "length")
    assert (r.provider, r.role) == ("llama", ROLE)
    assert r.model == MODEL_ALIAS
    assert r.latency_s > 0
    assert r.raw.id.startswith("chatcmpl-")


def test_greedy_decoding_is_repeatable_through_run_and_arun(client: Orchestrator) -> None:
    _prime(client)
    sync = client.run(ROLE, QUESTION)
    asyn = asyncio.run(client.arun(ROLE, QUESTION))
    assert sync.content == asyn.content
    assert (sync.usage.input_tokens, sync.usage.output_tokens) == (
        asyn.usage.input_tokens,
        asyn.usage.output_tokens,
    )


def test_max_tokens_is_honoured(client: Orchestrator) -> None:
    _prime(client)
    r = client.run(ROLE, QUESTION, params_override={"max_tokens": 3})
    # the base model runs on well past 6 tokens here, so 3 tokens end it by length
    assert (r.usage.output_tokens, r.finish_reason) == (3, "length")
    longer = client.run(ROLE, QUESTION, params_override={"max_tokens": 6})
    assert longer.usage.output_tokens == 6
    assert longer.content.startswith(r.content)


def test_stop_sequence_is_honoured(client: Orchestrator) -> None:
    _prime(client)
    full = client.run(ROLE, QUESTION)
    words = full.content.split()
    assert len(words) >= 3, f"too short an answer to cut: {full.content!r}"
    stop = words[2]
    cut = client.run(ROLE, QUESTION, params_override={"stop": [stop]})
    assert cut.finish_reason == "stop"
    assert cut.content == full.content[: full.content.index(stop)]
    assert cut.usage.output_tokens < full.usage.output_tokens


def test_stream_delivers_the_same_text(client: Orchestrator) -> None:
    _prime(client)
    full = client.run(ROLE, QUESTION)
    stream = client.stream(ROLE, QUESTION)
    deltas = list(stream)
    assert len(deltas) > 1, "the server sent the answer in one piece"
    assert "".join(deltas) == full.content
    final = stream.response
    assert final is not None
    assert final.content == full.content
    assert final.finish_reason == full.finish_reason
    # llama-cpp-python's server ignores stream_options.include_usage (0.3.x): a streamed answer
    # carries no usage. If a later version sends it, it must match the non-streamed count.
    assert final.usage.output_tokens in (0, full.usage.output_tokens)


async def test_async_stream(client: Orchestrator) -> None:
    stream = client.stream(ROLE, QUESTION, params_override={"max_tokens": 5})
    deltas = [d async for d in stream]
    assert stream.response is not None
    assert "".join(deltas) == stream.response.content != ""


def test_list_models_and_is_available(client: Orchestrator) -> None:
    provider = client.provider("llama")
    models = provider.list_models_sync()
    assert [m.id for m in models] == [MODEL_ALIAS]
    assert models[0].provider == "llama"
    assert provider.is_available_sync() is True


def test_prompt_longer_than_the_context_window(client: Orchestrator) -> None:
    long_prompt = [{"role": "user", "content": "word " * 1500}]
    with pytest.raises(ContextLengthExceededError) as info:
        client.run(ROLE, long_prompt)
    assert info.value.status_code == 400
    assert "1024" in str(info.value)


def test_minimal_config_with_the_kind_as_provider_key(
    llama_server: str, write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `type:` (the key names the kind), no key, a model name the server does not know."""
    monkeypatch.setenv("ORCH_TRACKING", "0")
    path = write_config(
        textwrap.dedent(
            f"""\
            project: minimal
            providers:
              llamacpp_server: {{api_base: "{llama_server}"}}
            roles:
              chat: {{provider: llamacpp_server, model: anything, params: {{max_tokens: 4, temperature: 0}}}}
            """
        ),
        name="minimal.yaml",
    )
    with orchlab.get_llm_client(path) as c:
        r = c.run("chat", QUESTION)
    assert r.usage.output_tokens > 0
    assert c.resolve("chat").kind == "llamacpp_server"
