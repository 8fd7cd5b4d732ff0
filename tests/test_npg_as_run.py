"""The NPG family's defaults as mjrl v2 runs them (docs/npg.md, docs/pal_mal.md, docs/morel.md): the presets' γ,
CG start, HALT and BC settings, mjrl's hopper task file (reward, termination on s_t, observation mask) with the
model-state clamp in the masked space, and each paper or earlier reading one key away. The authors' own outputs on
fixed inputs are asserted in tests/test_reference_npg.py."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parameters_to_vector

from algos.game import pairwise_disagreement, valid_steps
from algos.morel import MOReL, MOReLConfig
from algos.npg import NPG, conjugate_gradient
from config import NPGConfig
from envs.rewards import MJRL_OBS_MASKS
from envs.task_config import load_task_config
from envs.termination import hopper_termination_mjrl
from models.npg import GaussianMLPPolicy, ValueBaseline
from utils.errors import UserError

SMALL_NPG = NPGConfig(policy_hidden_dims=[4], baseline_hidden_dims=[4])
HOPPER_MASK = MJRL_OBS_MASKS["hopper"].float()


def _healthy_hopper(rows: int) -> torch.Tensor:
    state = torch.zeros(rows, 11)
    state[:, 0] = 1.25
    return state


# ------------------------------------------------------------------------------------------------ presets


@pytest.mark.parametrize("algo", ["pal", "mal"])
def test_pal_mal_hopper_presets_run_what_mjrl_ran(algo: str) -> None:
    """run_model_based_npg.py never passes γ (train_step's 0.995, not the file's 0.999); CG starts from g; hopper
    reads mjrl's task file: its reward, its termination, its observation mask."""
    cfg = load_task_config(algo, "Hopper-v4")
    assert cfg.npg.gamma == 0.995 and cfg.npg.cg_init == "gradient"  # type: ignore[attr-defined]
    assert (cfg.reward_fn, cfg.termination_fn, cfg.obs_mask) == ("mjrl", "mjrl", "mjrl")  # type: ignore[attr-defined]
    walker = load_task_config(algo, "Walker2d-v4")  # mjrl has no walker file: the env's functions
    assert (walker.reward_fn, walker.termination_fn, walker.obs_mask) == ("env", "env", "none")  # type: ignore[attr-defined]
    env_mode = load_task_config(algo, "Hopper-v4", overrides=["reward_fn=env", "termination_fn=env", "obs_mask=none"])
    assert (env_mode.reward_fn, env_mode.obs_mask) == ("env", "none")  # type: ignore[attr-defined]


def test_morel_hopper_preset_runs_what_run_morel_ran() -> None:
    """run_morel.py passes its config's γ 0.999; its cut paths are not terminal; its BC keeps the input scaling."""
    cfg = load_task_config("morel", "hopper-medium-gen")
    assert isinstance(cfg, MOReLConfig)
    assert cfg.npg.gamma == 0.999 and cfg.npg.cg_init == "gradient"
    assert cfg.halt_terminates is False and cfg.bc_set_transforms is False
    assert (cfg.reward_fn, cfg.termination_fn, cfg.obs_mask) == ("mjrl", "mjrl", "mjrl")
    cheetah = load_task_config("morel", "halfcheetah-medium-gen")
    assert isinstance(cheetah, MOReLConfig)
    assert (cheetah.reward_fn, cheetah.termination_fn, cheetah.obs_mask) == ("env", "env", "none")
    # this project's halfcheetah preset (mjrl has none): buffer starts, pessimism 1.5, less exploration noise
    assert (cheetah.start_state, cheetah.pessimism_coef, cheetah.npg.init_log_std) == ("buffer", 1.5, -1.0)
    walker = load_task_config("morel", "walker2d-medium-gen")
    assert (walker.start_state, walker.pessimism_coef) == ("init", 3.0)  # type: ignore[attr-defined]


def test_mjrl_mask_on_a_family_without_one_is_one_clear_line() -> None:
    with pytest.raises(UserError, match=r"obs_mask 'mjrl' exists only for env family hopper.*--set obs_mask=none"):
        load_task_config("pal", "Walker2d-v4", overrides=["obs_mask=mjrl"])
    with pytest.raises(UserError, match=r"npg.cg_init.*one of gradient, zero"):
        load_task_config("pal", "Hopper-v4", overrides=["npg.cg_init=ones"])


# ------------------------------------------------------------------------------------------------ NPG core


def test_conjugate_gradient_from_the_gradient() -> None:
    """mjrl's start x₀ = b: zero iterations return b itself, and the residual starts at b − A b."""
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(conjugate_gradient(lambda v: a @ v, b, 0, x0=b), b)
    one = conjugate_gradient(lambda v: a @ v, b, 1, x0=b)
    r = b - a @ b  # exact line search from b along r
    torch.testing.assert_close(one, b + (r @ r) / (r @ (a @ r)) * r)
    torch.testing.assert_close(conjugate_gradient(lambda v: a @ v, b, 2, x0=b), torch.linalg.solve(a, b))


def test_baseline_fit_on_fewer_rows_than_a_minibatch_takes_one_step_on_all_of_them() -> None:
    """mjrl's max(⌊n/B⌋ − 1, 1) minibatches: 3 rows with B = 8 give one Adam step on the 3 rows (before the fix an
    empty minibatch moved every parameter by weight decay alone)."""
    torch.manual_seed(0)
    npg = NPG(2, 1, NPGConfig(baseline_hidden_dims=[4], baseline_batch_size=8, baseline_weight_decay=0.0))
    twin = NPG(2, 1, NPGConfig(baseline_hidden_dims=[4], baseline_batch_size=8, baseline_weight_decay=0.0))
    twin.load_state_dict(npg.state_dict())
    obs, steps, returns = torch.randn(3, 2), torch.tensor([0, 1, 2]), torch.tensor([1.0, -2.0, 0.5])
    npg.fit_baseline(obs, steps, returns, orders=[torch.tensor([2, 0, 1])])
    optim = torch.optim.Adam(twin.baseline.parameters(), lr=twin.npg_cfg.baseline_lr)
    loss = (twin.baseline(obs, steps) - returns).square().mean()
    loss.backward()
    optim.step()
    torch.testing.assert_close(
        parameters_to_vector(npg.baseline.parameters()), parameters_to_vector(twin.baseline.parameters())
    )


def test_policy_and_baseline_read_the_masked_observation() -> None:
    """mjrl's networks read s ⊙ mask: the policy's input is (s ⊙ mask − shift) / (scale + 1e-6), the baseline's
    features clip s ⊙ mask at ±10 (a raw velocity of 600 reads 12 → 10)."""
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(11, 3, (8,), obs_mask=HOPPER_MASK)
    obs = torch.randn(5, 11) * 100
    torch.testing.assert_close(policy.mean(obs), policy.mean_net(obs * HOPPER_MASK / (1 + 1e-6)))
    baseline = ValueBaseline(11, (8,), obs_mask=HOPPER_MASK)
    state = _healthy_hopper(1)
    state[0, 5], state[0, 2] = 600.0, 3.0
    features = baseline.features(state, torch.tensor([0]))
    assert float(features[0, 5]) == pytest.approx(1.0) and float(features[0, 2]) == pytest.approx(0.3)
    assert "obs_mask" not in policy.state_dict()  # the mask comes from the config, so older checkpoints load


# ------------------------------------------------------------------------------------------------ model paths


class VelocityRamp:
    """A fake ensemble whose member e adds (300 + e) to the x velocity (obs[5]) every step; the rest stays."""

    num_members, obs_dim = 2, 11

    def __call__(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, None]:
        step = torch.zeros(self.num_members, 1, 11)
        step[:, 0, 5] = torch.tensor([300.0, 301.0])
        return step, None


def _no_reward(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(obs.shape[:-1])


def test_model_states_are_clamped_in_the_masked_space_so_mjrl_velocity_bound_fires() -> None:
    """With hopper's mask the clamp ±100 applies to 0.02·v, i.e. ±5000 raw: the velocity climbs 0, 300, 600 and
    mjrl's termination (|0.02 v| < 10) ends the path on s_2, kept, terminated. A raw ±100 clamp (before the fix)
    capped v at 100 and the bound never fired."""
    algo = MOReL(11, 3, MOReLConfig(npg=SMALL_NPG, horizon=8, task="hopper-medium-gen", obs_mask="mjrl"))
    torch.testing.assert_close(algo.state_bounds, 100.0 / HOPPER_MASK)
    paths, disagreement = algo.model_paths(VelocityRamp(), _healthy_hopper(2), _no_reward, hopper_termination_mjrl)  # type: ignore[arg-type]
    assert paths.lengths.tolist() == [3] * 4 and paths.terminated.all()
    assert paths.obs[0, 2, 5] == 600.0 and paths.obs[2, 2, 5] == 602.0
    # δ on masked states: the members' velocity predictions differ by 1 raw = 0.02 masked (at every step, padding
    # included, as the rollout measures it before masking the paths)
    assert disagreement is not None
    torch.testing.assert_close(disagreement[:, :2], torch.full((4, 2), 0.02))


def test_termination_on_the_starting_state_keeps_that_step() -> None:
    """mjrl's path-level check: the first s_t that is done ends the path at length t + 1, terminated."""
    states = _healthy_hopper(6).unsqueeze(0).repeat(2, 1, 1)
    states[0, 4:, 1] = 0.17  # tilted past 0.15 from step 4
    done = hopper_termination_mjrl(states, torch.zeros(2, 6, 3), torch.zeros_like(states))
    mask, terminated = valid_steps(done)
    assert mask.sum(1).tolist() == [5, 6] and terminated.tolist() == [True, False]


# ------------------------------------------------------------------------------------------------ MOReL


def test_morel_bc_keeps_the_input_scaling_unless_asked() -> None:
    """run_morel.py's BC does not install the data's mean/std; bc_set_transforms=true does (of s ⊙ mask)."""
    torch.manual_seed(2)
    obs, act = torch.randn(64, 3) * 5 + 2, torch.rand(64, 1) * 2 - 1
    kept = MOReL(3, 1, MOReLConfig(npg=SMALL_NPG, bc_epochs=1))
    kept.behaviour_cloning(obs, act)
    assert torch.equal(kept.actor.obs_shift, torch.zeros(3)) and torch.equal(kept.actor.obs_scale, torch.ones(3))
    scaled = MOReL(3, 1, MOReLConfig(npg=SMALL_NPG, bc_epochs=1, bc_set_transforms=True))
    scaled.behaviour_cloning(obs, act)
    torch.testing.assert_close(scaled.actor.obs_shift, obs.mean(0))
    torch.testing.assert_close(scaled.actor.obs_scale, obs.std(0, unbiased=False))


def test_morel_default_cut_paths_are_not_terminal() -> None:
    assert MOReLConfig().halt_terminates is False and MOReLConfig().bc_set_transforms is False


def test_disagreement_is_the_largest_pairwise_distance_with_members_differing_per_row() -> None:
    """Three members whose predictions differ per row and per member: δ is the largest of the three pairwise
    Euclidean distances, a different pair on each row (rows: pair (0, 2) with 5; pair (1, 2) with √2; pair (0, 1)
    with 4), and on masked states the velocity entry counts × 0.02."""
    predictions = torch.tensor(
        [
            [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]],
            [[3.0, 0.0], [1.0, 0.0], [4.0, 0.0]],
            [[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]],
        ]
    )
    torch.testing.assert_close(pairwise_disagreement(predictions), torch.tensor([5.0, 2.0**0.5, 4.0]))
    mask = torch.tensor([1.0, 0.02])
    masked = torch.tensor([(9.0 + 0.08**2) ** 0.5, (1.0 + 0.02**2) ** 0.5, 4.0])
    torch.testing.assert_close(pairwise_disagreement(predictions * mask), masked)


def test_npg_step_size_is_exactly_alpha_from_g_and_x() -> None:
    """α = sqrt(δ / gᵀx) with the g and x the step used, and θ moves by exactly αx (before the log σ clamp, which
    the wide bounds here leave idle); g is ∇ mean(log π · Â) at θ_old."""
    torch.manual_seed(4)
    npg = NPG(3, 2, NPGConfig(policy_hidden_dims=[6], baseline_hidden_dims=[4], min_log_std=-20, max_log_std=20))
    npg.double()
    obs, act = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 2, dtype=torch.float64)
    adv = torch.randn(40, dtype=torch.float64)
    params = list(npg.actor.parameters())
    expected_g = parameters_to_vector(torch.autograd.grad((npg.actor.log_prob(obs, act) * adv).mean(), params))
    before = parameters_to_vector(params).detach().clone()
    out = npg.policy_step(obs, act, adv)
    torch.testing.assert_close(out["vpg"], expected_g)
    alpha = (npg.npg_cfg.step_size / float(out["vpg"] @ out["direction"] + 1e-20)) ** 0.5
    assert float(out["alpha"]) == pytest.approx(alpha, rel=1e-14)
    torch.testing.assert_close(parameters_to_vector(params).detach(), before + out["alpha"] * out["direction"])
