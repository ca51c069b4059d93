"""The ``%%llm`` options: an argparse front (for the usage line) feeding a pydantic model.

For example:

    >>> parse_cell_args("-r llm.inference -f json --param top_p=0.9 -o answer")
    CellArgs(role='llm.inference', format='json', out='answer', params={'top_p': 0.9}, ...)

Bad options raise `ArgsError` (the magic turns it into IPython's ``UsageError`` with the usage line).
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import shlex
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Format = Literal["markdown", "text", "json", "code", "html"]
FORMATS: tuple[str, ...] = ("markdown", "text", "json", "code", "html")
_PROMPT_REF = re.compile(r"^[A-Za-z0-9_.\-/]+(@[A-Za-z0-9_.\-]+)?$")


class ArgsError(ValueError):
    """Options that cannot be used; ``usage`` is the line to show with the message."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage

    def __str__(self) -> str:
        return f"{self.args[0]}\n{self.usage}".rstrip()


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting the kernel."""

    subcommands: dict[str, tuple[argparse.ArgumentParser, str]]

    def error(self, message: str) -> NoReturn:
        raise ArgsError(message, self.format_usage())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise ArgsError(message or "", self.format_usage())


def _is_target(value: str) -> bool:
    provider, sep, model = value.partition(":")
    return bool(sep and provider and model)


class CellArgs(BaseModel):
    """What the first line of a ``%%llm`` cell asks for."""

    model_config = ConfigDict(extra="forbid")

    role: str | None = None
    model: str | None = Field(default=None, description="'provider:model', overrides the role's model")
    strategy: str | None = None
    format: Format = "markdown"
    out: str | None = None
    output: str | None = Field(default=None, description="a pydantic model in the notebook's namespace")
    system: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)
    chat: str | None = None
    depth: int | None = Field(default=None, gt=0)
    compare: list[str] = Field(default_factory=list)
    ensemble: str | None = None
    prompt: str | None = None
    tools: list[str] = Field(default_factory=list)
    """Toolset names or notebook variables holding functions: the cell runs `delegate`."""
    config: Path | None = None
    no_log: bool = False
    no_stream: bool = False
    insert: bool = False
    help: bool = False

    @field_validator("model")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is not None and not _is_target(value):
            raise ValueError(f"--model takes 'provider:model', got {value!r}")
        return value

    @field_validator("out")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and (not value.isidentifier() or keyword.iskeyword(value)):
            raise ValueError(f"--out needs a Python variable name, got {value!r}")
        return value

    @field_validator("output")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value is not None and not all(part.isidentifier() for part in value.split(".")):
            raise ValueError(f"--output names a pydantic model in the notebook (e.g. City), got {value!r}")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_ref(cls, value: str | None) -> str | None:
        if value is not None and not _PROMPT_REF.match(value):
            raise ValueError(f"--prompt takes 'name@version' (or name@alias), got {value!r}")
        return value

    @model_validator(mode="after")
    def _combinations(self) -> CellArgs:
        if self.depth is not None and self.chat is None:
            raise ValueError("--depth only applies to a named conversation: add --chat NAME")
        if self.compare and (self.chat or self.ensemble or self.strategy or self.model):
            raise ValueError("--compare runs its own targets: drop --chat/--ensemble/--strategy/--model")
        if self.compare and len(self.compare) < 2:
            raise ValueError("--compare needs at least two comma-separated targets")
        if self.ensemble and (self.strategy or self.model):
            raise ValueError("--ensemble picks its own models: drop --strategy/--model")
        if self.tools and (self.compare or self.ensemble or self.strategy):
            raise ValueError(
                "--tools delegates to one role (or --model): drop --compare/--ensemble/--strategy"
            )
        if self.output and (self.compare or self.ensemble):
            raise ValueError("--output validates one answer: drop --compare/--ensemble")
        if self.output and self.tools:
            raise ValueError("--output validates one answer and --tools runs a tool loop: drop one")
        if self.insert and self.format != "code":
            raise ValueError("--insert puts the answer's code in a new cell: add -f code")
        return self

    def params_override(self) -> dict[str, Any]:
        """The generation params this cell sets (``--param`` first, named options on top)."""
        out = dict(self.params)
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.max_tokens is not None:
            out["max_tokens"] = self.max_tokens
        return out


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--param takes key=value, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def _targets(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def cell_parser() -> _Parser:
    p = _Parser(prog="%%llm", add_help=False, allow_abbrev=False)
    p.add_argument("-r", "--role", help="the role to run (default: llm.inference, or the only role)")
    p.add_argument("-m", "--model", metavar="PROVIDER:MODEL", help="run this model instead of the role's")
    p.add_argument("-s", "--strategy", help="a strategy: auto, local, cloud, local_first, cloud_first, ...")
    p.add_argument("-f", "--format", choices=FORMATS, default="markdown", help="how to show the answer")
    p.add_argument("-o", "--out", metavar="VAR", help="bind the response object to VAR")
    p.add_argument(
        "--output", metavar="MODEL", help="a pydantic model in the notebook: response.output is one"
    )
    p.add_argument("--system", metavar="TEXT", help="a system message")
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-tokens", type=int, dest="max_tokens")
    p.add_argument(
        "--param", type=_param, action="append", default=[], metavar="KEY=VALUE", help="any generation param"
    )
    p.add_argument("--chat", metavar="NAME", help="a named conversation (keeps its last --depth exchanges)")
    p.add_argument("--depth", type=int, metavar="N", help="exchanges a --chat keeps (default 5)")
    p.add_argument(
        "--compare", type=_targets, nargs="+", metavar="T1,T2", help="roles or provider:model, side by side"
    )
    p.add_argument("--ensemble", metavar="MODE", help="answer with an ensemble: vote, chain, judge, fuse")
    p.add_argument("--prompt", metavar="NAME@VERSION", help="a registered prompt; the cell holds variables")
    p.add_argument(
        "--tools",
        type=_targets,
        metavar="NAME",
        help="delegate with a toolset or a variable holding functions",
    )
    p.add_argument("--config", metavar="PATH", help="a config file for this cell")
    p.add_argument("--no-log", action="store_true", dest="no_log", help="do not record this call")
    p.add_argument("--no-stream", action="store_true", dest="no_stream", help="show only the final answer")
    p.add_argument(
        "--insert", action="store_true", help="-f code: also put the code in a new cell (if it compiles)"
    )
    p.add_argument("-h", "--help", action="store_true")
    return p


def split_line(line: str, usage: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:  # unbalanced quotes
        raise ArgsError(f"cannot split the options: {exc}", usage) from None


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "value_error" or not where:
            parts.append(msg)  # our own validators name the option themselves
        else:
            parts.append(f"--{where.replace('_', '-')}: {msg}")
    return "; ".join(parts)


def parse_cell_args(line: str) -> CellArgs:
    parser = cell_parser()
    usage = parser.format_usage()
    ns = parser.parse_args(split_line(line, usage))
    values = vars(ns)
    values["params"] = dict(values.pop("param"))
    values["compare"] = [t for group in values["compare"] or () for t in group]
    values["tools"] = values["tools"] or []
    try:
        return CellArgs.model_validate(values)
    except ValidationError as exc:
        raise ArgsError(validation_message(exc), usage) from None


def cell_help() -> str:
    return cell_parser().format_help()


# --- the %llm line magic ----------------------------------------------------------------------

Command = Literal[
    "roles", "models", "config", "use", "usage", "budget", "history", "mlflow", "chats", "reset", "help"
]
COMMANDS: tuple[str, ...] = (
    "roles",
    "models",
    "config",
    "use",
    "usage",
    "budget",
    "history",
    "mlflow",
    "chats",
    "reset",
    "help",
)


class LineArgs(BaseModel):
    """A ``%llm`` subcommand and its arguments."""

    model_config = ConfigDict(extra="forbid")

    command: Command = "help"
    path: Path | None = None
    role: str | None = None
    target: str | None = None
    name: str | None = None
    capability: str | None = None
    tier: str | None = None
    max_cost: float | None = Field(default=None, ge=0)
    local: bool | None = None
    limit: int = Field(default=20, gt=0)
    port: int | None = Field(default=None, gt=0, lt=65536)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is not None and not _is_target(value):
            raise ValueError(f"use ROLE takes 'provider:model', got {value!r}")
        return value


def line_parser() -> _Parser:
    p = _Parser(
        prog="%llm",
        add_help=False,
        allow_abbrev=False,
        # wide enough that the subcommands stay on the usage line in a notebook
        formatter_class=lambda prog: argparse.HelpFormatter(prog, width=110),
    )
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="{" + ",".join(COMMANDS) + "}")
    sub.add_parser("roles", add_help=False, help="the roles and what they are bound to now")
    models = sub.add_parser("models", add_help=False, help="the model catalog, filtered")
    models.add_argument("--capability", help="chat, code, reasoning, vision, tools, embedding")
    models.add_argument("--tier", help="fast, standard or advanced")
    models.add_argument(
        "--max-cost", type=float, dest="max_cost", metavar="USD", help="per call of 1000 in + 500 out tokens"
    )
    where = models.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", default=None, help="local models only")
    where.add_argument("--cloud", action="store_false", dest="local", default=None, help="cloud models only")
    config = sub.add_parser("config", add_help=False, help="show the config, or load PATH")
    config.add_argument("path", nargs="?")
    use = sub.add_parser("use", add_help=False, help="rebind ROLE to provider:model for this session")
    use.add_argument("role")
    use.add_argument("target", metavar="provider:model")
    sub.add_parser("usage", add_help=False, help="calls, tokens and cost so far")
    sub.add_parser("budget", add_help=False, help="budgets and what is left of them")
    history = sub.add_parser("history", add_help=False, help="recent calls from MLflow")
    history.add_argument("--limit", type=int, default=20)
    history.add_argument("--role")
    mlflow = sub.add_parser("mlflow", add_help=False, help="the MLflow store, and the command to open its UI")
    mlflow.add_argument("--port", type=int, help="the UI's port (default: ORCH_MLFLOW_PORT, else 5000)")
    sub.add_parser("chats", add_help=False, help="the named conversations")
    reset = sub.add_parser("reset", add_help=False, help="forget a conversation (all without NAME)")
    reset.add_argument("name", nargs="?")
    sub.add_parser("help", add_help=False, help="this help")
    p.subcommands = {a.dest: (sub.choices[a.dest], a.help or "") for a in sub._get_subactions()}
    return p


def parse_line_args(line: str) -> LineArgs:
    parser = line_parser()
    usage = parser.format_usage()
    words = split_line(line, usage)
    if words and words[0] in ("-h", "--help"):
        words = ["help"]
    ns = parser.parse_args(words)
    values = {k: v for k, v in vars(ns).items() if v is not None}
    try:
        return LineArgs.model_validate(values)
    except ValidationError as exc:
        raise ArgsError(validation_message(exc), usage) from None


def line_help() -> str:
    parser = line_parser()
    lines = [parser.format_usage().rstrip(), ""]
    for sub, text in parser.subcommands.values():
        usage = " ".join(sub.format_usage().removeprefix("usage: ").split())
        lines.append(f"  {usage}\n      {text}")
    return "\n".join(lines)
