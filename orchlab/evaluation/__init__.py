"""Evaluate targets on a labelled set, on MLflow's GenAI evaluation: `evaluate`, the scorers
(`orchlab.evaluation.scorers`), replay of a cascade's or a vote's policy on recorded answers
(`orchlab.evaluation.replay`) and the interval and Pareto computations (`orchlab.evaluation.stats`).
"""

from __future__ import annotations

from orchlab.evaluation.result import Evaluation
from orchlab.evaluation.run import evaluate
from orchlab.evaluation.targets import EvalTarget

__all__ = ["EvalTarget", "Evaluation", "evaluate"]
