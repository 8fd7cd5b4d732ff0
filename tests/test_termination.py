"""Termination functions on hand-made states, including hopper's published missing-lower-bound quirk."""

from __future__ import annotations

import pytest
import torch

from envs.termination import get_termination_fn
from utils.errors import UserError


def _states(obs_dim: int, height: float, *overrides: tuple[int, float]) -> torch.Tensor:
    state = torch.zeros(obs_dim)
    state[0] = height
    for index, value in overrides:
        state[index] = value
    return state


def _done(family: str, next_obs: torch.Tensor, strict: bool = False) -> list[bool]:
    fn = get_termination_fn(family, strict=strict)
    act_dim = 3 if family == "hopper" else 6
    obs = torch.zeros_like(next_obs)
    act = torch.zeros(*next_obs.shape[:-1], act_dim)
    done = fn(obs, act, next_obs)
    assert done.dtype == torch.bool and done.shape == next_obs.shape[:-1]
    return done.tolist()


HOPPER_CASES = [
    ("healthy", _states(11, 1.25), False),
    ("too low", _states(11, 0.6), True),
    ("tilted", _states(11, 1.25, (1, 0.25)), True),
    ("tilted back", _states(11, 1.25, (1, -0.25)), True),
    ("huge velocity", _states(11, 1.25, (6, 150.0)), True),
    ("nan", _states(11, 1.25, (4, float("nan"))), True),
    ("inf", _states(11, 1.25, (9, float("-inf"))), True),
]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(("case", "state", "expected"), HOPPER_CASES, ids=[c[0] for c in HOPPER_CASES])
def test_hopper(case: str, state: torch.Tensor, expected: bool, strict: bool) -> None:
    assert _done("hopper", state[None], strict=strict) == [expected]


def test_hopper_quirk_has_no_lower_bound_unless_strict() -> None:
    state = _states(11, 1.25, (3, -200.0))[None]
    assert _done("hopper", state, strict=False) == [False]  # MOPO/KIT: abs(obs < 100) only bounds from above
    assert _done("hopper", state, strict=True) == [True]


WALKER_CASES = [
    ("healthy", _states(17, 1.25), False),
    ("too low", _states(17, 0.7), True),
    ("too high", _states(17, 2.1), True),
    ("tilted", _states(17, 1.25, (1, 1.2)), True),
    ("tilted back", _states(17, 1.25, (1, -1.2)), True),
    ("huge positive", _states(17, 1.25, (10, 150.0)), True),
    ("huge negative", _states(17, 1.25, (10, -150.0)), True),
    ("nan", _states(17, 1.25, (16, float("nan"))), True),
]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(("case", "state", "expected"), WALKER_CASES, ids=[c[0] for c in WALKER_CASES])
def test_walker2d(case: str, state: torch.Tensor, expected: bool, strict: bool) -> None:
    assert _done("walker2d", state[None], strict=strict) == [expected]


HALFCHEETAH_CASES = [
    ("upside down is fine", _states(17, -0.3, (1, 3.0)), False),
    ("huge positive", _states(17, 0.0, (8, 150.0)), True),
    ("huge negative", _states(17, 0.0, (8, -150.0)), True),
    ("nan", _states(17, 0.0, (2, float("nan"))), True),
]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(("case", "state", "expected"), HALFCHEETAH_CASES, ids=[c[0] for c in HALFCHEETAH_CASES])
def test_halfcheetah(case: str, state: torch.Tensor, expected: bool, strict: bool) -> None:
    assert _done("halfcheetah", state[None], strict=strict) == [expected]


@pytest.mark.parametrize(
    ("family", "cases"), [("hopper", HOPPER_CASES), ("walker2d", WALKER_CASES), ("halfcheetah", HALFCHEETAH_CASES)]
)
def test_batched_shapes_match_row_by_row(family: str, cases: list) -> None:
    states = torch.stack([state for _, state, _ in cases])
    expected = [done for _, _, done in cases]
    assert _done(family, states) == expected  # [B]
    ensemble = torch.stack([states, states.flip(0), states])  # [E, B]
    assert _done(family, ensemble) == [expected, expected[::-1], expected]


def test_unknown_family_is_a_user_error() -> None:
    with pytest.raises(UserError, match="no termination function for env family 'ant'; known families: hopper"):
        get_termination_fn("ant")
