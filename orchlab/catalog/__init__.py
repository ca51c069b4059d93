"""Models, their facts and prices: `ModelInfo`, `Tier`, and the per-orchestrator `Catalog`.

Nothing heavy is imported here: genai-prices loads on the first cloud price looked up, tiktoken
on the first exact count needed.
"""

from __future__ import annotations

from orchlab.catalog.catalog import Catalog, Choice
from orchlab.catalog.model_info import CAPABILITIES, ModelInfo, Tier

__all__ = ["CAPABILITIES", "Catalog", "Choice", "ModelInfo", "Tier"]
