"""Provider plugins: the example package installed for real and used from YAML by its entry-point
name, the ``"package.module:Class"`` form, `registry.register`, and a clear error for every way a
plugin can be wrong."""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import orchlab
from orchlab.errors import (
    MissingDependencyError,
    PluginError,
    ProviderConnectionError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    UnknownProviderError,
    UnsupportedCapabilityError,
)
from orchlab.orchestrator import Orchestrator
from orchlab.providers import registry
from orchlab.types import LLMResponse, ModelRequest, Usage
from tests.servers.loopback import LoopbackServer, Reply, closed_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin_provider"
Q = [{"role": "user", "content": "What is 2+2?"}]
PROMPT = "user: What is 2+2?\nassistant:"
NOWHERE = f"http://127.0.0.1:{closed_port()}"
PIP_FLAGS = ["--quiet", "--no-deps", "--no-build-isolation", "--no-index"]  # builds offline, in place


class LlamaServerWire(LoopbackServer):
    """llama.cpp's ``llama-server`` native API: ``POST /completion`` (a JSON body, or server-sent
    events with ``"stream": true``) and ``GET /health``."""

    pieces = (" 2+2", " =", " 4")

    def default_reply(self, method: str, path: str, body: Any) -> Reply:
        if method == "GET" and path == "/health":
            return Reply(body={"status": "ok"})
        if method != "POST" or path != "/completion" or not isinstance(body, dict):
            return Reply(status=404, body={"error": {"code": 404, "message": "File Not Found"}})
        final = {
            "model": "gemma-3-270m.gguf",
            "tokens_evaluated": len(body["prompt"].split()),
            "tokens_predicted": len(self.pieces),
            "stop": True,
            "stop_type": "limit" if body.get("n_predict") == len(self.pieces) else "eos",
        }
        if not body.get("stream"):
            return Reply(body={"content": "".join(self.pieces), **final})
        frames = [{"content": p, "stop": False} for p in self.pieces] + [{"content": "", **final}]
        return Reply(
            stream=[f"data: {json.dumps(f)}\n\n".encode() for f in frames], content_type="text/event-stream"
        )


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package installed by pip (built by its own backend) into a directory of its own:
    the venv is left as it was."""
    site = tmp_path_factory.mktemp("plugin_site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", *PIP_FLAGS, "--target", str(site), str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return site


@pytest.fixture
def installed(plugin_site: Path) -> Iterator[Path]:
    """The example plugin importable and its entry point visible in this process, until the test ends."""
    sys.path.insert(0, str(plugin_site))
    importlib.invalidate_caches()
    registry.installed_kinds(refresh=True)
    try:
        yield plugin_site
    finally:
        sys.path.remove(str(plugin_site))
        sys.modules.pop("orchlab_llama_native", None)
        importlib.invalidate_caches()
        registry.installed_kinds(refresh=True)


@pytest.fixture
def wire() -> Iterator[LlamaServerWire]:
    with LlamaServerWire() as server:
        yield server


def entry(type_: str, url: str, **more: str) -> str:
    extra = "".join(f", {k}: {v}" for k, v in more.items())
    return f"""\
        project: t
        providers:
          box: {{type: "{type_}", api_base: "{url}"{extra}}}
        roles:
          r: {{provider: box, model: gemma-3-270m, params: {{max_tokens: 3}}}}
        """


# --- the example, installed, used by its entry-point name ---------------------------------------

CHILD = textwrap.dedent(
    """\
    import importlib.metadata, json, sys

    reads = []
    real = importlib.metadata.entry_points

    def counting(**kwargs):
        if kwargs.get("group") == "orchlab.providers":
            reads.append(kwargs["group"])
        return real(**kwargs)

    importlib.metadata.entry_points = counting
    import orchlab

    at_import = (len(reads), "orchlab_llama_native" in sys.modules, "httpx" in sys.modules)
    client = orchlab.get_llm_client(sys.argv[1])
    r = client.run("r", [{"role": "user", "content": "What is 2+2?"}])
    stream = client.stream("r", [{"role": "user", "content": "What is 2+2?"}])
    pieces = list(stream)
    info = client.catalog.get_model_info("box:gemma-3-270m")
    again = orchlab.get_llm_client(sys.argv[1]).run("r", [{"role": "user", "content": "hi"}])
    print(json.dumps({
        "at_import": at_import,
        "reads": len(reads),
        "class": type(client.provider("box")).__module__ + ":" + type(client.provider("box")).__name__,
        "run": [r.content, r.provider, r.model, r.usage.input_tokens, r.usage.output_tokens,
                r.finish_reason, r.cost_usd],
        "stream": [pieces, stream.response.content, stream.response.usage.output_tokens],
        "catalog": [info.kind, info.local, info.price_source],
        "again": again.content,
    }))
    """
)


def test_the_installed_example_runs_from_yaml_by_its_entry_point_name(
    plugin_site: Path, wire: LlamaServerWire, write_config: Callable[[str], Path]
) -> None:
    metadata = next(plugin_site.glob("orchlab_llama_native-*.dist-info")) / "entry_points.txt"
    assert metadata.read_text().split() == [
        "[orchlab.providers]",
        "llama_native=orchlab_llama_native:LlamaNativeProvider",
    ]
    config = write_config(textwrap.dedent(entry("llama_native", wire.url)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugin_site)])}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(config)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    # `import orchlab` reads no entry point and imports no plugin; the group is read once, lazily
    assert out["at_import"] == [0, False, False]
    assert out["reads"] == 1
    assert out["class"] == "orchlab_llama_native:LlamaNativeProvider"
    assert out["run"] == [" 2+2 = 4", "box", "gemma-3-270m.gguf", 5, 3, "length", 0.0]
    assert out["stream"] == [[" 2+2", " =", " 4"], " 2+2 = 4", 3]
    assert out["catalog"] == ["llama_native", True, "local"]
    assert out["again"] == " 2+2 = 4"
    sent = [(r.route, r.body["prompt"], r.body["n_predict"], r.body["stream"]) for r in wire.requests]
    assert sent == [
        ("/completion", PROMPT, 3, False),
        ("/completion", PROMPT, 3, True),
        ("/completion", "user: hi\nassistant:", 3, False),
    ]


def test_the_example_is_under_fifty_lines() -> None:
    source = (EXAMPLE / "orchlab_llama_native" / "__init__.py").read_text()
    assert len(source.splitlines()) < 50
    assert [p.name for p in (EXAMPLE / "orchlab_llama_native").glob("*.py")] == ["__init__.py"]


# --- the same class by "module:Class", and what the boundary does for it -------------------------


def test_module_class_form_runs_and_streams(
    installed: Path, wire: LlamaServerWire, client_for: Callable[..., Orchestrator]
) -> None:
    client = client_for(entry("orchlab_llama_native:LlamaNativeProvider", wire.url))
    r = client.run("r", Q, params_override={"max_tokens": 9, "stop": ["\n"]})
    assert (r.content, r.finish_reason, r.usage.input_tokens, r.cost_usd) == (" 2+2 = 4", "stop", 5, 0.0)
    assert wire.last.body == {"prompt": PROMPT, "n_predict": 9, "stop": ["\n"], "stream": False}
    stream = client.stream("r", Q)
    assert "".join(stream) == " 2+2 = 4"
    assert stream.response is not None and stream.response.usage.output_tokens == 3
    info = client.catalog.get_model_info("box:gemma-3-270m")
    assert (info.kind, info.local) == ("orchlab_llama_native:LlamaNativeProvider", True)


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (Reply(status=503, body={"error": {"message": "Loading model"}}), ProviderUnavailableError, "503"),
        (Reply(status=429, body={"error": "busy"}, headers={"retry-after": "2"}), RateLimitError, "429"),
    ],
)
def test_the_boundary_translates_a_plugins_http_errors(
    installed: Path,
    wire: LlamaServerWire,
    client_for: Callable[..., Orchestrator],
    reply: Reply,
    error: type[Exception],
    words: str,
) -> None:
    client = client_for(entry("llama_native", wire.url))
    wire.push(reply)
    with pytest.raises(error) as caught:
        client.run("r", Q)
    assert caught.value.provider == "box"  # type: ignore[attr-defined]
    assert words in str(caught.value)
    if error is RateLimitError:
        assert caught.value.retry_after == 2.0  # type: ignore[attr-defined]


def test_the_boundary_bounds_a_plugins_call_and_reads_a_refused_connection(
    installed: Path, wire: LlamaServerWire, client_for: Callable[..., Orchestrator]
) -> None:
    client = client_for(entry("llama_native", wire.url, timeout_s="0.2"))
    wire.push(Reply(delay_s=1.0, body={}))
    with pytest.raises(ProviderTimeoutError, match=r"no answer within 0\.2s \(timeout_s\)"):
        client.run("r", Q)
    refused = client_for(entry("llama_native", f"http://127.0.0.1:{closed_port()}"))
    with pytest.raises(ProviderConnectionError):
        refused.run("r", Q)


# --- the kinds a YAML can name --------------------------------------------------------------------


def test_an_unknown_kind_lists_the_installed_ones_and_suggests(
    installed: Path, client_for: Callable[..., Orchestrator]
) -> None:
    with pytest.raises(UnknownProviderError) as caught:
        client_for(entry("llama_nativ", NOWHERE))
    message = str(caught.value)
    assert "providers.box: unknown adapter type 'llama_nativ'; known types: anthropic, deepseek," in message
    assert ", llama_native, " in message
    assert "or a class as 'package.module:Class'" in message
    assert "; did you mean 'llama_native'" in message


def test_kind_of_knows_every_source_of_kinds(installed: Path) -> None:
    assert registry.kind_of("openai", None) == "openai"
    assert registry.kind_of("box", "llama_native") == "llama_native"
    assert registry.kind_of("llama_native", None) == "llama_native"
    assert registry.kind_of("box", "some.module:Cls") == "some.module:Cls"
    assert registry.kind_of("box", "some.module:") is None
    assert registry.kind_of("box", "nothing_like_it") is None
    assert registry.installed_kinds()["llama_native"].target == "orchlab_llama_native:LlamaNativeProvider"
    assert registry.installed_kinds()["llama_native"].distribution == "orchlab-llama-native 0.1.0"
    assert "llama_native" in registry.known_kinds()
    # once the package is gone (and the entry points read again), so is the kind
    sys.path.remove(str(installed))
    importlib.invalidate_caches()
    try:
        registry.installed_kinds(refresh=True)
        assert registry.kind_of("box", "llama_native") is None
        assert "llama_native" not in registry.known_kinds()
    finally:
        sys.path.insert(0, str(installed))


# --- a plugin that cannot be had: a PluginError naming the entry, the type and why ---------------


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Callable[[str, str], None]]:
    """``write(name, source)``: an importable module for this test only."""
    where = tmp_path / "modules"
    where.mkdir()
    sys.path.insert(0, str(where))
    written: list[str] = []

    def write(name: str, source: str) -> None:
        (where / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        importlib.invalidate_caches()

    yield write
    sys.path.remove(str(where))
    for name in written:
        sys.modules.pop(name, None)


NOT_A_PROVIDER = "which is not a subclass of orchlab.Provider"
BAD_TYPES = [
    (
        "no_such_pkg.adapters:Thing",
        "no module named 'no_such_pkg' is installed (is the plugin's package installed here?)",
    ),
    (
        "needs_dep:Thing",
        "importing 'needs_dep' needs the 'not_installed_dep_xyz' module, which is not installed",
    ),
    ("raises_on_import:Thing", "importing 'raises_on_import' failed: RuntimeError: no GPU here"),
    ("has_adapters:Missing", "'has_adapters' has no attribute 'Missing'; its Provider classes: Good, Half"),
    ("has_adapters:helper", f"names a function, {NOT_A_PROVIDER}"),
    ("has_adapters:NotAProvider", f"names the class NotAProvider, {NOT_A_PROVIDER}"),
    ("has_adapters:Half", "Half does not implement complete()"),
]


@pytest.mark.parametrize(("type_", "why"), BAD_TYPES)
def test_a_class_that_cannot_be_had_is_a_clear_error_at_first_use(
    modules: Callable[[str, str], None], client_for: Callable[..., Orchestrator], type_: str, why: str
) -> None:
    modules("needs_dep", "import not_installed_dep_xyz\n")
    modules("raises_on_import", "raise RuntimeError('no GPU here')\n")
    modules(
        "has_adapters",
        """\
        from orchlab import LLMResponse, Provider

        class Half(Provider):
            pass

        class Good(Provider):
            requires_key = False

            async def complete(self, request):
                return LLMResponse("fine", self.name, request.model)

        class NotAProvider:
            pass

        def helper():
            pass
        """,
    )
    client = client_for(
        f"""\
        project: t
        providers:
          bad: {{type: "{type_}"}}
          good: {{type: "has_adapters:Good"}}
        roles:
          r: {{provider: bad, model: m}}
          ok: {{provider: good, model: m}}
        """
    )
    # the config loads, and the entries that can be used are used
    assert client.run("ok", Q).content == "fine"
    with pytest.raises(PluginError) as caught:
        client.run("r", Q)
    assert str(caught.value) == f"providers.bad: type {type_!r}: {why}"
    assert (caught.value.provider, caught.value.kind) == ("bad", type_)


@pytest.fixture
def fake_dists(tmp_path: Path) -> Iterator[Callable[[str, str], None]]:
    """``add(distribution, entry_point_line)``: a distribution's metadata (no code) on sys.path."""
    where = tmp_path / "dists"
    where.mkdir()
    sys.path.insert(0, str(where))

    def add(name: str, line: str) -> None:
        info = where / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[orchlab.providers]\n{line}\n")
        importlib.invalidate_caches()
        registry.installed_kinds(refresh=True)

    yield add
    sys.path.remove(str(where))
    importlib.invalidate_caches()
    registry.installed_kinds(refresh=True)


def test_a_kind_two_plugins_claim_is_refused_naming_both(
    installed: Path, fake_dists: Callable[[str, str], None], client_for: Callable[..., Orchestrator]
) -> None:
    fake_dists("first-plugin", "twin = orchlab_llama_native:LlamaNativeProvider")
    fake_dists("second-plugin", "twin = other_pkg:Twin")
    client = client_for(entry("twin", NOWHERE))  # the kind is known: the config loads
    with pytest.raises(PluginError) as caught:
        client.run("r", Q)
    assert str(caught.value) == (
        "providers.box: type 'twin': two installed plugins claim this kind (the entry point twin = "
        "orchlab_llama_native:LlamaNativeProvider of first-plugin 1.0 (group orchlab.providers); the entry "
        "point twin = other_pkg:Twin of second-plugin 1.0 (group orchlab.providers)): uninstall one of them"
    )


def test_a_plugin_cannot_take_a_built_in_kind(
    fake_dists: Callable[[str, str], None], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="orchlab.providers.registry"):
        fake_dists("evil-plugin", "openai = orchlab_llama_native:LlamaNativeProvider")
    assert "openai" not in registry.installed_kinds()
    assert registry.provider_class("openai").__module__ == "orchlab.providers.openai"
    assert caplog.messages == [
        "ignored the entry point openai = orchlab_llama_native:LlamaNativeProvider of evil-plugin 1.0 "
        "(group orchlab.providers): 'openai' is a built-in kind"
    ]


# --- register(), and what a plugin lacks ----------------------------------------------------------


class Bare(orchlab.Provider):
    """Only ``complete``: everything else is the base class's honest default."""

    requires_key = False

    async def complete(self, request: ModelRequest) -> LLMResponse:
        return LLMResponse(f"bare {request.model}", self.name, request.model, usage=Usage(2, 1))


class Needy(Bare):
    async def complete(self, request: ModelRequest) -> LLMResponse:
        import not_installed_sdk_xyz  # noqa: F401  (an SDK imported lazily, as adapters do)

        raise AssertionError("unreachable")


@pytest.fixture
def registered() -> Iterator[None]:
    registry.register("bare", Bare)
    registry.register("needy", "tests.test_plugins:Needy")
    yield
    registry.unregister("bare")
    registry.unregister("needy")


def bare_config(kind: str) -> str:
    return f"""\
        project: t
        providers:
          p: {{type: {kind}}}
        roles:
          r: {{provider: p, model: m}}
        """


def test_a_registered_kind_runs_and_refuses_what_it_cannot_do(
    registered: None, client_for: Callable[..., Orchestrator]
) -> None:
    client = client_for(bare_config("bare"))
    r = client.run("r", Q)
    assert (r.content, r.usage.total_tokens) == ("bare m", 3)
    assert registry.kind_of("p", "bare") == "bare" and "bare" in registry.known_kinds()
    with pytest.raises(UnsupportedCapabilityError, match=r"^p:m: bare adapter cannot stream$"):
        client.stream("r", Q).text()
    with pytest.raises(UnsupportedCapabilityError, match=r"bare adapter cannot list models$"):
        client.provider("p").list_models_sync()
    assert Bare.kind == "tests.test_plugins:Bare"  # a plugin need not name itself


def test_a_plugins_missing_sdk_is_a_missing_dependency_error(
    registered: None, client_for: Callable[..., Orchestrator]
) -> None:
    with pytest.raises(MissingDependencyError) as caught:
        client_for(bare_config("needy")).run("r", Q)
    assert str(caught.value) == (
        "provider 'p' (type needy) needs the 'not_installed_sdk_xyz' module, which is not installed: "
        "install the package that provides 'not_installed_sdk_xyz'"
    )
    assert (caught.value.kind, caught.value.extra) == ("needy", None)


@pytest.mark.parametrize(
    ("kind", "adapter", "why"),
    [
        ("openai", Bare, "'openai' is a built-in kind and cannot be replaced"),
        ("x", dict, "expected a Provider subclass or 'package.module:Class'"),
        ("x", "not a path", "expected a Provider subclass or 'package.module:Class'"),
        ("a:b", Bare, "a kind is a name such as 'echo'"),
    ],
)
def test_register_refuses_what_it_cannot_add(kind: str, adapter: Any, why: str) -> None:
    with pytest.raises(PluginError, match=f"^register\\({kind!r}, .*{why}"):
        registry.register(kind, adapter)
    if kind == "openai":
        assert registry.provider_class(kind).__module__ == "orchlab.providers.openai"
    else:
        assert kind not in registry.known_kinds()


def test_an_unknown_kind_at_first_use_says_so() -> None:
    with pytest.raises(PluginError) as caught:
        registry.provider_class("nothing_like_it", provider="p")
    message = str(caught.value)
    assert message.startswith(
        "providers.p: type 'nothing_like_it': no such kind; known: anthropic, deepseek,"
    )
    assert message.endswith(", test, test_local, vllm, or 'package.module:Class'")
