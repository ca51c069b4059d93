"""API keys: ``ORCH_AUTH_<PROFILE>_API_KEY``, then a key file; held in a `Secret` that never prints.

For example:

    export ORCH_AUTH_OPENAI_DEFAULT_API_KEY=sk-...     # for auth_profile: openai_default
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from orchlab.errors import AuthError
from orchlab.redaction import remember


class Secret:
    """A string that shows as ``'**********'`` in every repr, str and format, and is masked in
    every log record from the moment it is made (`orchlab.redaction`)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        remember(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def env_var_for(profile: str) -> str:
    """``openai_default`` -> ``ORCH_AUTH_OPENAI_DEFAULT_API_KEY``."""
    return f"ORCH_AUTH_{re.sub(r'[^A-Za-z0-9]+', '_', profile).strip('_').upper()}_API_KEY"


def _key_text(raw: bytes, *, provider: str, env_var: str, key_file: str) -> str:
    """The key in a key file: UTF-8 text holding one key of printable ASCII (what an HTTP header
    carries), surrounding whitespace ignored. The error says where it is wrong, never what is there."""
    try:
        value = raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        problem = f"is not UTF-8 text (byte {exc.start} of the file)"
    else:
        bad = next((i for i, c in enumerate(value) if not "!" <= c <= "~"), None)
        if bad is None:
            return value
        problem = f"holds a character no key has (character {bad + 1} of the key), or more than one key"
    raise AuthError(
        f"provider {provider!r}: key file {key_file} {problem}; put the key alone in the file as "
        f"plain text, or set {env_var}",
        provider=provider,
        env_var=env_var,
        key_file=key_file,
    )


def resolve_api_key(
    *,
    provider: str,
    profile: str,
    key_file: str | None,
    base_dir: Path | None = None,
    required: bool = True,
) -> Secret | None:
    """The key for ``profile``: its env var, else ``key_file``; else an `AuthError` (if required)."""
    env_var = env_var_for(profile)
    value = os.environ.get(env_var, "").strip()
    if value:
        return Secret(value)
    tried_file: str | None = None
    if key_file:
        path = Path(key_file).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        tried_file = str(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            value = ""
        except OSError as exc:
            raise AuthError(
                f"provider {provider!r}: cannot read key file {tried_file} ({exc.strerror}); "
                f"fix its permissions or set {env_var}",
                provider=provider,
                env_var=env_var,
                key_file=tried_file,
            ) from None
        else:
            value = _key_text(raw, provider=provider, env_var=env_var, key_file=tried_file)
        if value:
            return Secret(value)
    if not required:
        return None
    file_hint = (
        f", or put the key in {tried_file} (key_file)"
        if tried_file
        else f", or set key_file under providers.{provider}"
    )
    raise AuthError(
        f"provider {provider!r} needs an API key (auth profile {profile!r}): "
        f"set the environment variable {env_var}{file_hint}",
        provider=provider,
        env_var=env_var,
        key_file=tried_file,
    )
