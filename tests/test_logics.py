"""Orchestration logics as objects: one `Logic` per `Strategy`, registered in one place."""

from __future__ import annotations

import pytest

from orchlab.errors import InvalidRequestError
from orchlab.strategies import Strategy
from orchlab.strategies.logic import Logic
from orchlab.strategies.registry import LOGICS, logic_class


def test_every_strategy_has_exactly_one_logic() -> None:
    assert set(LOGICS) == set(Strategy)
    for strategy in Strategy:
        cls = logic_class(strategy.value)
        assert issubclass(cls, Logic) and cls.strategy is strategy
    assert len(set(LOGICS.values())) == len(Strategy)


def test_a_logic_parses_its_own_params_from_strings() -> None:
    race = logic_class("parallel")
    assert race.from_params({"threshold": "0.8", "scorer": "json"}) == {"threshold": 0.8, "scorer": "json"}
    assert logic_class("ensemble").from_params({"mode": "judge", "judge": "llm.big"}) == {
        "mode": "judge",
        "judge": "llm.big",
    }
    assert logic_class("fallback").from_params({}) == {}


@pytest.mark.parametrize(
    ("strategy", "params", "message"),
    [
        (
            "parallel",
            {"treshold": "0.8"},
            "logic 'parallel' has no param 'treshold' (its params: scorer, threshold)",
        ),
        ("cascade", {"threshold": "1.5"}, "param threshold='1.5' is not valid: must be between 0 and 1"),
        ("cascade", {"threshold": "high"}, "param threshold='high' is not valid"),
        (
            "ensemble",
            {"mode": "poll"},
            "param mode='poll' is not valid: must be one of vote, chain, judge, fuse",
        ),
        ("auto", {"task_type": "poetry"}, "logic 'auto': param task_type='poetry' is not valid"),
        ("single", {"x": "1"}, "logic 'single' has no param 'x' (its params: none)"),
    ],
)
def test_a_bad_param_names_itself(strategy: str, params: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        logic_class(strategy).from_params(params)
    assert message in str(info.value)
