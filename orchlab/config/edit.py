"""Changing a config file in place without losing its comments, order, quoting or other keys.

Round-trips through ruamel.yaml (imported on use), checks the result against the schema before
anything is written, then replaces the file atomically. ``${VAR}`` values are written back as the
file has them, never expanded.

For example:

    save_role_binding("llm_orchestrator.yaml", "llm.inference", "openai:gpt-4.1-mini")
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from orchlab.config.loader import default_config_path, parse_config, read_config_text
from orchlab.errors import ConfigError, UnknownRoleError
from orchlab.resolution import parse_target


def save_role_binding(path: str | Path, role: str, target: str, *, env: str | None = None) -> str:
    """Bind ``role`` to ``'provider:model'`` in the YAML at ``path``; returns the key path written.

    The role's entry under ``envs.<env>.roles`` is changed when that overlay defines the role,
    else the one under ``roles``. Only ``provider`` and ``model`` change.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.util import load_yaml_guess_indent

    file = Path(path).expanduser().resolve()
    if file == default_config_path().resolve():
        raise ConfigError(
            "the built-in default config is part of the installed package and is not edited: copy it "
            "to a file of your own and load that (%llm config PATH, or get_llm_client(PATH))"
        )
    text = read_config_text(file)
    # the file as it is must load: ruamel.yaml would meet duplicate keys, alias bombs or deep
    # nesting with its own exceptions (or take as long as they ask)
    parse_config(text, source=str(file))
    provider, model = parse_target(target)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    mapping = _mapping_indent(text)
    _, seq_indent, seq_offset = load_yaml_guess_indent(text)
    if seq_indent is None:  # no block sequence to learn from
        seq_indent, seq_offset = mapping + 2, mapping
    yaml.indent(mapping=mapping, sequence=seq_indent, offset=seq_offset or 0)
    data = yaml.load(text)
    spec, key = _role_node(data, role, env, source=str(file))
    spec["provider"] = provider
    spec["model"] = model
    out = io.StringIO()
    yaml.dump(data, out)
    new_text = out.getvalue()
    parse_config(new_text, source=str(file))  # never write a file orchlab cannot load
    _replace(file, new_text)
    return key


def _mapping_indent(text: str) -> int:
    """The file's mapping indent: the smallest indent of a key line (2 when nothing is nested)."""
    widths = []
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith(("#", "- ", "-\t")) or stripped == "-":
            continue
        width = len(line) - len(stripped)
        if width:
            widths.append(width)
    return min(widths, default=2)


def _role_node(data: Any, role: str, env: str | None, *, source: str) -> tuple[Any, str]:
    overlay = ((data.get("envs") or {}).get(env) or {}) if env else {}
    if role in (overlay.get("roles") or {}):
        return overlay["roles"][role], f"envs.{env}.roles.{role}"
    roles = data.get("roles") or {}
    if role not in roles:
        raise UnknownRoleError(
            f"{source}: role {role!r} is not defined under roles: (defined: {', '.join(roles) or 'none'})",
            role=role,
        )
    return roles[role], f"roles.{role}"


def _replace(file: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if file.exists():
            os.chmod(tmp, file.stat().st_mode & 0o777)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
