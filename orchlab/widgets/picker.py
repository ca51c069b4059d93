"""Pick the model a role runs on: role → provider → model, filled from the client's catalog.

The info line shows what the catalog knows of the chosen model (context window, tier, price,
local or cloud). **Apply** rebinds the role for this session (``client.rebind``); **Save** also
writes the binding into the YAML, keeping its comments and every other key
(`orchlab.config.edit.save_role_binding`).
"""

from __future__ import annotations

import html
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchlab.errors import OrchlabError

if TYPE_CHECKING:
    from orchlab.catalog.model_info import ModelInfo
    from orchlab.orchestrator import Orchestrator


def _price(value: float | None) -> str:
    if value is None:
        return "?"
    return "$0" if value == 0 else f"${value:g}"


def describe_model(info: ModelInfo) -> str:
    """``Gemma 3 270M · local · fast · 2,048-token context · $0 in / $0 out per 1M tokens``."""
    where = "local" if info.local else "cloud"
    context = f"{info.context_window:,}-token context" if info.context_window else "context unknown"
    if info.priced:
        price = (
            f"{_price(info.input_price_per_mtok)} in / {_price(info.output_price_per_mtok)} out per 1M tokens"
        )
    else:
        price = f"price unknown ({info.price_note})" if info.price_note else "price unknown"
    caps = ", ".join(sorted(info.capabilities))
    return f"{info.display_name} · {where} · {info.tier.value} · {context} · {price} · {caps}"


class ModelPicker:
    """Dropdowns for role, provider and model, with Apply and Save buttons and a status line."""

    def __init__(
        self, client: Orchestrator | None = None, *, role: str | None = None, config_path: Any = None
    ) -> None:
        import ipywidgets as w

        if client is None:
            from orchlab.notebook.session import get_session

            client = get_session().client
        self.client = client
        self.config_path = Path(config_path) if config_path is not None else client.config_path
        roles = client.roles()
        wide = w.Layout(width="22em")
        self.role = w.Dropdown(description="role", options=roles, layout=wide)
        self.provider = w.Dropdown(
            description="provider", options=sorted(client.config.providers), layout=wide
        )
        self.model = w.Dropdown(description="model", options=[], layout=wide)
        self.info = w.HTML(value="")
        self.apply = w.Button(description="Apply", tooltip="rebind the role for this session")
        self.save = w.Button(description="Save to YAML", tooltip="rebind and write it into the config file")
        self.status = w.HTML(value="")
        self._selecting = False
        self._asked: set[str] = set()
        self.role.observe(lambda _c: self._show_role(), names="value")
        self.provider.observe(lambda _c: self._fill_models(), names="value")
        self.model.observe(lambda _c: self._show_info(), names="value")
        self.apply.on_click(lambda _b: self.do_apply())
        self.save.on_click(lambda _b: self.do_save())
        self.widget = w.VBox(
            [self.role, self.provider, self.model, self.info, w.HBox([self.apply, self.save]), self.status]
        )
        if role is not None:
            self.role.value = role
        self._show_role()

    # --- what the dropdowns show ---------------------------------------------------------------

    @property
    def target(self) -> str:
        return f"{self.provider.value}:{self.model.value}"

    def models_of(self, provider: str) -> list[str]:
        """The catalog's models for ``provider`` (its bound models included). A local provider the
        catalog knows no model of is asked for its models once (llama.cpp, Ollama, ...)."""
        catalog = self.client.catalog
        found = {info.model for info in catalog.list_models() if info.provider == provider}
        if not found and provider not in self._asked and self._is_local(provider):
            self._asked.add(provider)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                catalog.discover([provider])
            if caught:
                self._say(f"✗ {caught[0].message}", ok=False)
            found = {info.model for info in catalog.list_models() if info.provider == provider}
        return sorted(found)

    def _is_local(self, provider: str) -> bool:
        from orchlab.providers.registry import kind_of, provider_class

        spec = self.client.config.providers.get(provider)
        kind = kind_of(provider, spec.type) if spec is not None else None
        return kind is not None and provider_class(kind, provider=provider).is_local

    def _show_role(self) -> None:
        if self.role.value is None:
            return
        current = self.client.resolve(self.role.value)
        self._select(current.provider, current.model)

    def _select(self, provider: str, model: str) -> None:
        self._selecting = True  # the provider observer must not pick a model of its own meanwhile
        try:
            self.provider.value = provider
        finally:
            self._selecting = False
        self._fill_models(keep=model)

    def _fill_models(self, keep: str | None = None) -> None:
        provider = self.provider.value
        if provider is None or self._selecting:
            return
        options = self.models_of(provider)
        if keep is not None and keep not in options:
            options = sorted([*options, keep])
        self.model.options = options
        if keep is not None:
            self.model.value = keep
        elif options and self.model.value not in options:
            self.model.value = options[0]
        self._show_info()

    def _show_info(self) -> None:
        if self.provider.value is None or self.model.value is None:
            self.info.value = ""
            return
        try:
            info = self.client.catalog.get_model_info(self.target)
        except OrchlabError as exc:
            self.info.value = f"<span style='color:#b00'>{html.escape(str(exc), quote=False)}</span>"
            return
        self.info.value = f"<span style='opacity:.8'>{html.escape(describe_model(info), quote=False)}</span>"

    # --- actions -------------------------------------------------------------------------------

    def _chosen(self) -> bool:
        if self.role.value is None or self.provider.value is None or self.model.value is None:
            self._say("✗ choose a role, a provider and a model first", ok=False)
            return False
        return True

    def do_apply(self) -> bool:
        """Rebind the role for this session; True when it worked (the status line says what happened)."""
        if not self._chosen():
            return False
        role, target = self.role.value, self.target
        try:
            before = self.client.resolve(role).target
            self.client.rebind(role, target)
        except OrchlabError as exc:
            self._say(f"✗ {exc}", ok=False)
            return False
        self._say(f"✓ {role}: {before} → {target} for this session")
        return True

    def do_save(self) -> bool:
        """Apply, then write the binding into the YAML (comments and other keys kept)."""
        from orchlab.config.edit import save_role_binding

        if not self._chosen():
            return False
        role, target = self.role.value, self.target
        if self.config_path is None:
            self._say("✗ this client was built without a config file: nothing to save to", ok=False)
            return False
        try:
            key = save_role_binding(self.config_path, role, target, env=self.client.config.env)
        except OrchlabError as exc:
            self._say(f"✗ not saved: {exc}", ok=False)
            return False
        if not self.do_apply():
            return False
        self._say(f"✓ saved {key} = {target} in {self.config_path.name} (and applied)")
        return True

    def _say(self, text: str, *, ok: bool = True) -> None:
        color = "#080" if ok else "#b00"
        self.status.value = f"<span style='color:{color}'>{html.escape(text, quote=False)}</span>"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = self.widget._repr_mimebundle_(**kwargs)
        data["text/plain"] = f"model picker: role {self.role.value} → {self.target}"
        return data

    def __repr__(self) -> str:
        return f"ModelPicker(role={self.role.value!r}, target={self.target!r})"
