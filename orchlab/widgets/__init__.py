"""ipywidgets for the notebook: rate an answer, pick a role's model, compare targets side by side.

For example:

    from orchlab import widgets
    widgets.feedback(response)            # 👍 👎, 1-5 stars, a comment -> MLflow feedback
    widgets.model_picker()                # role -> provider -> model; Apply / Save to the YAML
    widgets.compare_view()                # a prompt, several targets, run them side by side

Each returns an object that displays itself and exposes its controls (``.up``, ``.apply``,
``.run``, ...) so it can also be driven from code. ipywidgets loads when one is first built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchlab.widgets.compare import CompareView
    from orchlab.widgets.picker import ModelPicker
    from orchlab.widgets.rating import FeedbackWidget

__all__ = ["CompareView", "FeedbackWidget", "ModelPicker", "compare_view", "feedback", "model_picker"]


def feedback(response: Any, *, client: Any = None, user: str | None = None) -> FeedbackWidget:
    """Thumbs, stars and a comment for ``response``; a click stores the rating on its MLflow trace."""
    from orchlab.widgets.rating import FeedbackWidget

    return FeedbackWidget(response, client=client, user=user)


def model_picker(client: Any = None, *, role: str | None = None, config_path: Any = None) -> ModelPicker:
    """Role → provider → model from the catalog; Apply rebinds for the session, Save writes the YAML."""
    from orchlab.widgets.picker import ModelPicker

    return ModelPicker(client, role=role, config_path=config_path)


def compare_view(
    client: Any = None, *, prompt: str = "", targets: Any = None, max_tokens: int | None = None
) -> CompareView:
    """A prompt box and a multi-select of targets; Run answers with each, side by side."""
    from orchlab.widgets.compare import CompareView

    return CompareView(client, prompt=prompt, targets=targets, max_tokens=max_tokens)


def __getattr__(name: str) -> Any:
    if name == "FeedbackWidget":
        from orchlab.widgets.rating import FeedbackWidget

        return FeedbackWidget
    if name == "ModelPicker":
        from orchlab.widgets.picker import ModelPicker

        return ModelPicker
    if name == "CompareView":
        from orchlab.widgets.compare import CompareView

        return CompareView
    raise AttributeError(f"module 'orchlab.widgets' has no attribute {name!r}")
