"""Where orchlab keeps files between processes."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "ORCH_CACHE_DIR"


def cache_dir() -> Path:
    """``$ORCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/orchlab``, else ``~/.cache/orchlab``: the price
    cache and the YAML cache (`orchlab.yaml_cache`) are kept there."""
    given = os.environ.get(CACHE_DIR_ENV)
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orchlab"
