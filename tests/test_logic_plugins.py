"""Logic plugins: a logic added with `register_logic` used from YAML, a URN and
``complete(strategy=...)``; the example package installed for real and named by its entry point
(group ``orchlab.logics``); and a clear error for every way a logic id can be wrong."""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from orchlab.errors import ConfigError, InvalidRequestError, PluginError
from orchlab.strategies import Logic, register_logic
from orchlab.strategies import registry as logics
from orchlab.strategies.base import Answering, Outcome
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin_logic"
PIP_FLAGS = ["--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
Q = [{"role": "user", "content": "What is 2+2?"}]


def reply(text: str) -> Reply:
    return Reply(body=completion_body(text, model="m", prompt_tokens=7, completion_tokens=1))


class Longest(Logic):
    """Asks the first ``n`` candidates (default: all) in turn, keeps the longest answer."""

    params: ClassVar[Mapping[str, Callable[[str], Any]]] = {"n": int}

    async def answer(self, answering: Answering) -> Outcome:
        n = self.plan.extra.get("n", len(self.plan.candidates))
        answers = [
            await answering.call(c, stage=f"longest {i + 1}") for i, c in enumerate(self.plan.candidates[:n])
        ]
        best = max(answers, key=lambda a: len(a.content))
        return Outcome(best, f"the longest of {len(answers)}")


@pytest.fixture
def longest() -> Iterator[None]:
    register_logic("longest", Longest)
    try:
        yield
    finally:
        logics.unregister_logic("longest")


def config(url: str, role: str) -> str:
    return f"""
project: t
tracking: {{enabled: false}}
providers:
  near: {{type: vllm, api_base: "{url}"}}
roles:
{textwrap.indent(textwrap.dedent(role), "  ")}"""


def test_a_registered_logic_answers_a_role_from_yaml(
    longest: None, client_for: Any, openai_server: OpenAIWireServer
) -> None:
    client = client_for(
        config(
            openai_server.base_url,
            """
            wordy:
              provider: near
              model: a
              strategy: longest
              candidates: ["near:b"]
            """,
        )
    )
    openai_server.push(reply("4"), reply("it is 4"))
    r = client.run("wordy", Q)
    assert r.content == "it is 4" and r.decision.strategy == "longest"
    assert [(a.stage, a.model) for a in r.decision.attempts] == [("longest 1", "a"), ("longest 2", "b")]


def test_a_registered_logic_as_a_nested_candidate_gets_its_options(
    longest: None, client_for: Any, openai_server: OpenAIWireServer
) -> None:
    client = client_for(
        config(
            openai_server.base_url,
            """
            chain:
              provider: near
              model: a
              strategy: fallback
              candidates:
                - {strategy: longest, candidates: ["near:b", "near:c", "near:d"], options: {n: 2}}
            """,
        )
    )
    openai_server.push(Reply(status=400, body={"error": {"message": "no"}}), reply("4"), reply("four"))
    r = client.run("chain", Q)
    assert r.content == "four"
    assert [q.body["model"] for q in openai_server.requests] == ["a", "b", "c"]  # n=2: d is not asked
    assert [a.stage.split(" / ")[-1] for a in r.decision.attempts][-2:] == ["longest 1", "longest 2"]


def test_a_registered_logic_from_a_urn_and_complete(
    longest: None, client_for: Any, openai_server: OpenAIWireServer
) -> None:
    client = client_for(config(openai_server.base_url, "r: {provider: near, model: a}"))
    openai_server.push(reply("4"), reply("it is 4"))
    r = client.complete("What is 2+2?", role="urn:orchlab:longest:candidates=near:a,near:b,near:c;n=2")
    assert r.content == "it is 4" and r.decision.strategy == "longest"
    assert [q.body["model"] for q in openai_server.requests] == ["a", "b"]
    openai_server.push(reply("four!"), reply("4"))
    r = client.complete("What is 2+2?", strategy="longest", candidates=["near:x", "near:y"])
    assert r.content == "four!" and r.decision.strategy == "longest"
    assert [q.body["model"] for q in openai_server.requests][2:] == ["x", "y"]


def test_a_logic_id_that_is_not_known_says_what_is(
    longest: None, client_for: Any, openai_server: OpenAIWireServer
) -> None:
    with pytest.raises(ConfigError) as info:
        client_for(config(openai_server.base_url, "r: {provider: near, model: a, strategy: longst}"))
    text = str(info.value)
    assert "unknown logic 'longst'; did you mean 'longest'?" in text
    assert "built-in: auto, local, cloud" in text and "installed: longest" in text
    client = client_for(config(openai_server.base_url, "r: {provider: near, model: a}"))
    with pytest.raises(
        InvalidRequestError,
        match="URN 'urn:orchlab:longst:candidates=near:a': unknown logic 'longst'; did you mean 'longest'",
    ):
        client.complete("hi", role="urn:orchlab:longst:candidates=near:a")
    with pytest.raises(InvalidRequestError, match="logic 'longest' has no param 'm'"):
        client.complete("hi", role="urn:orchlab:longest:candidates=near:a;m=2")


def test_compare_takes_an_added_logic_as_a_target(longest: None, client_for: Any) -> None:
    import orchlab

    client = client_for(
        """
        project: t
        tracking: {enabled: false}
        providers:
          near: {type: test, options: {models: {a: {reply: "4"}, b: {reply: "four, surely"}}}}
        roles:
          plain: {provider: near, model: a, candidates: ["near:b"]}
        """
    )
    result = orchlab.compare(
        ["What is 2+2?"], ["plain", "longest"], client=client, progress=False, warmup=False
    )
    by_target = {row["target"]: row for row in result.rows}
    assert (by_target["plain"]["answer"], by_target["plain"]["strategy"]) == ("4", "fallback")
    assert (by_target["longest"]["answer"], by_target["longest"]["strategy"]) == ("four, surely", "longest")
    with pytest.raises(
        InvalidRequestError, match="not a logic: unknown logic 'longst'; did you mean 'longest'"
    ):
        orchlab.compare(["hi"], ["longst"], client=client, progress=False, warmup=False)


def test_register_logic_refuses_a_built_in_id_and_a_class_that_is_not_a_logic() -> None:
    with pytest.raises(PluginError, match="'parallel' is a built-in logic and cannot be replaced"):
        register_logic("parallel", Longest)
    with pytest.raises(
        PluginError, match=r"names the class str, which is not a subclass of orchlab\.strategies\.Logic"
    ):
        register_logic("texty", str)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="a logic id is a lower-case name"):
        register_logic("Has Space", Longest)
    assert "texty" not in logics.known_logics()


def dist(site: Path, name: str, entry: str) -> None:
    """A distribution in ``site`` (its metadata only) declaring one ``orchlab.logics`` entry point."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[orchlab.logics]\n{entry}\n")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("not_a_logic", None)
        importlib.invalidate_caches()
        logics.installed_logics(refresh=True)


def test_two_plugins_claiming_one_id_and_a_plugin_that_is_not_a_logic(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dist(site, "pkg_zero", "parallel = pkg_zero:Race")
    dist(site, "pkg_one", "twice = pkg_one:Twice")
    dist(site, "pkg_two", "twice = pkg_two:Twice")
    dist(site, "pkg_three", "plain = not_a_logic:Plain")
    (site / "not_a_logic.py").write_text("class Plain:\n    pass\n")
    with caplog.at_level(logging.WARNING, logger="orchlab.strategies.registry"):
        assert sorted(logics.installed_logics(refresh=True)) == ["plain"]
    assert "ignored the entry point parallel = pkg_zero:Race of pkg_zero 1.0" in caplog.text
    assert logics.logic_class("parallel") is logics.LOGICS["parallel"]
    assert "twice" in logics.known_logics()
    with pytest.raises(PluginError) as info:
        logics.logic_class("twice")
    text = str(info.value)
    assert "two installed plugins claim this id" in text
    assert "twice = pkg_one:Twice of pkg_one 1.0" in text and "twice = pkg_two:Twice of pkg_two 1.0" in text
    with pytest.raises(
        PluginError, match=r"names the class Plain, which is not a subclass of orchlab.strategies.Logic"
    ):
        logics.logic_class("plain")


# --- the example, installed, used by its entry-point name ---------------------------------------

CHILD = textwrap.dedent(
    """\
    import importlib.metadata, json, sys

    reads = []
    real = importlib.metadata.entry_points

    def counting(**kwargs):
        if kwargs.get("group") == "orchlab.logics":
            reads.append(kwargs["group"])
        return real(**kwargs)

    importlib.metadata.entry_points = counting
    import orchlab

    at_import = (len(reads), "orchlab_shortest" in sys.modules)
    client = orchlab.get_llm_client(sys.argv[1])
    r = client.run("brief", [{"role": "user", "content": "What is 2+2?"}])
    u = client.complete("What is 2+2?", role="urn:orchlab:shortest:candidates=near:c,near:d")
    print(json.dumps({"at_import": at_import, "reads": len(reads), "content": r.content,
                      "strategy": r.decision.strategy, "urn": u.content}))
    client.close()
    """
)


def test_the_installed_example_runs_by_its_entry_point_name(
    tmp_path_factory: pytest.TempPathFactory, openai_server: OpenAIWireServer
) -> None:
    site = tmp_path_factory.mktemp("logic_site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", *PIP_FLAGS, "--target", str(site), str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    yaml = site.parent / "shortest.yaml"
    yaml.write_text(
        config(
            openai_server.base_url,
            'brief: {provider: near, model: a, strategy: shortest, candidates: ["near:b"]}',
        )
    )
    openai_server.push(reply("it is 4"), reply("4"), reply("4"), reply("four"))
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(yaml)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": f"{site}:{ROOT}"},
    )
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out == {"at_import": [0, False], "reads": 1, "content": "4", "strategy": "shortest", "urn": "4"}


def test_the_example_is_under_fifty_lines() -> None:
    assert len((EXAMPLE / "orchlab_shortest" / "__init__.py").read_text().splitlines()) < 50


def test_a_role_gives_its_logic_options(
    longest: None, client_for: Any, openai_server: OpenAIWireServer
) -> None:
    role = 'wordy: {provider: near, model: a, strategy: longest, options: {n: 1}, candidates: ["near:b"]}'
    client = client_for(config(openai_server.base_url, role))
    openai_server.push(reply("4"))
    assert client.run("wordy", Q).content == "4"
    assert [q.body["model"] for q in openai_server.requests] == ["a"]  # n=1: b is not asked
    with pytest.raises(ConfigError, match="options: is for a logic you wrote"):
        client_for(config(openai_server.base_url, role.replace("longest", "fallback")))
