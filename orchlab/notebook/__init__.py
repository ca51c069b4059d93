"""orchlab in Jupyter: ``%load_ext orchlab`` registers the ``%%llm`` cell magic and the ``%llm``
line magic.

For example:

    %load_ext orchlab

    %%llm -r llm.inference -f markdown --max-tokens 64
    Explain {{ topic }} in two sentences.

    %llm roles
    %llm use llm.inference local:gemma-3-270m

Loading the extension imports only the magics' class: argument parsing, Jinja, widgets and the
client load when a magic first runs.
"""

from __future__ import annotations

from typing import Any

from orchlab.notebook.session import NotebookSession, get_session, set_session

__all__ = [
    "NotebookSession",
    "get_session",
    "load_ipython_extension",
    "set_session",
    "unload_ipython_extension",
]


def load_ipython_extension(ipython: Any) -> None:
    from orchlab.notebook.magics import OrchlabMagics

    ipython.register_magics(OrchlabMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    magics = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        magics[kind].pop("llm", None)
