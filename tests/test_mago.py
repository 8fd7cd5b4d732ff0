"""MAGO (docs/mago.md#equations-as-implemented): its distinguishing equations on hand-computed cases, nature's move
on a model whose members are known exactly, a killed-and-resumed run against an uninterrupted one, eval.py on the
run, and bad input at the command line."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

import eval as evaluate_cli
import train
from algos.mago import (
    MAGO,
    MAGOConfig,
    continue_probability,
    denormalize_reward,
    kl_temperature,
    normalize_reward,
    order_statistic,
    soft_value,
    tanh_normal_around,
)
from config import DynamicsConfig
from models.actor_critic import TanhGaussianActor
from models.dynamics import EnsembleDynamics
from utils.errors import run_cli
from utils.logger import RunLogger

SIGMOID_6 = 1.0 / (1.0 + math.exp(-6.0))


# ---------------------------------------------------------------------------------------------------- equations
def test_order_statistic_counts_multiplicity() -> None:
    """Candidates with values (5, 1, 3) drawn (1, 1, 2) times: ascending 1 (×1), 3 (×2), 5 (×1). The 1st smallest
    is 1, the 2nd and 3rd are 3 (the same candidate twice), the 4th is 5. A second state orders them differently."""
    values = torch.tensor([[5.0, 0.0], [1.0, 2.0], [3.0, 9.0]])  # [U=3, B=2]
    counts = torch.tensor([1, 1, 2])
    expected = {1: ([1, 0], [1.0, 0.0]), 2: ([2, 1], [3.0, 2.0]), 3: ([2, 2], [3.0, 9.0]), 4: ([0, 2], [5.0, 9.0])}
    for k, (index, value) in expected.items():
        chosen, chosen_value = order_statistic(values, counts, k)
        assert chosen.tolist() == index, k
        assert chosen_value.tolist() == value, k


def test_continue_probability_at_and_between_its_bands() -> None:
    """Data next states in [0, 1] (midpoint 0.5, range 1): inner bands at −5 and 6, outer at −10 and 11. Inside the
    inner band c = 1; on it σ(6)/σ(6) = 1; halfway to the outer band σ(0)/σ(6); on the outer band σ(−6)/σ(6);
    dimensions multiply."""
    low, high = torch.zeros(1), torch.ones(1)

    def c(x: float) -> float:
        return float(continue_probability(torch.tensor([[x]]), low, high, 5.5, 10.5))

    assert c(0.5) == 1.0 and c(-3.0) == 1.0
    assert c(6.0) == pytest.approx(1.0, abs=1e-6) and c(-5.0) == pytest.approx(1.0, abs=1e-6)
    assert c(8.5) == pytest.approx(0.5 / SIGMOID_6, rel=1e-5)
    assert c(-7.5) == pytest.approx(0.5 / SIGMOID_6, rel=1e-5)
    assert c(11.0) == pytest.approx((1 - SIGMOID_6) / SIGMOID_6, rel=1e-4)
    two_dims = continue_probability(torch.tensor([[8.5, -7.5]]), torch.zeros(2), torch.ones(2), 5.5, 10.5)
    assert float(two_dims) == pytest.approx((0.5 / SIGMOID_6) ** 2, rel=1e-5)


def test_importance_sampled_soft_value_is_the_logsumexp_formula() -> None:
    """V = α log(Σ_i e^{ℓ_i} e^{Q_i/α} / Σ_i e^{ℓ_i}), written out with exp on small numbers; with ℓ = 0 and
    Q = (1, 2), α = 1: log((e + e²)/2)."""
    q = torch.tensor([[1.0], [2.0]])
    assert float(soft_value(q, torch.zeros_like(q), 1.0)) == pytest.approx(math.log((math.e + math.e**2) / 2))
    q = torch.tensor([[0.3, 1.0], [0.7, -0.5], [0.1, 0.2]])
    log_ratio = torch.tensor([[0.2, -1.0], [-0.4, 0.0], [0.0, 0.5]])
    alpha = torch.tensor([0.5, 2.0])
    expected = alpha * torch.log((log_ratio.exp() * (q / alpha).exp()).sum(0) / log_ratio.exp().sum(0))
    assert torch.allclose(soft_value(q, log_ratio, alpha), expected, atol=1e-6)


def test_kl_temperature_is_the_value_gap_over_the_target_kl() -> None:
    """α(s) = (max_i Q_i − E_{π_ref} Q) / ε: Q = (0, 1, 3), ℓ = 0, ε = 5 gives (3 − 4/3)/5; ℓ reweights the reference
    expectation; equal values give the floor 1e-3."""
    q = torch.tensor([[0.0], [1.0], [3.0]])
    assert float(kl_temperature(q, torch.zeros_like(q), 5.0)) == pytest.approx((3 - 4 / 3) / 5, rel=1e-5)
    log_ratio = torch.log(torch.tensor([[0.5], [0.25], [0.25]]))
    assert float(kl_temperature(q, log_ratio, 5.0)) == pytest.approx((3 - 1.0) / 5, rel=1e-5)
    assert float(kl_temperature(torch.ones(4, 1), torch.zeros(4, 1), 5.0)) == pytest.approx(1e-3)


def test_beta_nll_weights_each_element_by_its_relative_std() -> None:
    """One member, two rows, one output: σ = (1, 2), residual 1. −log N = ½(r²/σ² + log σ² + log 2π); weights
    σ^{2β} / mean with β = ½: (1, 2)/1.5. The loss is the weighted mean."""
    cfg = DynamicsConfig(num_ensemble=1, num_elites=1, hidden_dims=[4], weight_decay=[0.0, 0.0], loss="beta_nll")
    model = EnsembleDynamics(1, 1, cfg)
    model.cfg.predict_reward = False
    logvar = torch.log(torch.tensor([1.0, 4.0])).view(1, 2, 1)
    model._forward_normalized = lambda x, members=None: (torch.zeros(1, 2, 1), logvar)  # type: ignore[method-assign]
    losses = model._sample_losses(torch.zeros(2, 2), torch.ones(1, 2, 1))
    nll = [0.5 * (1 / s2 + math.log(s2) + math.log(2 * math.pi)) for s2 in (1.0, 4.0)]
    expected = [nll[0] * 1 / 1.5, nll[1] * 2 / 1.5]
    assert losses.flatten().tolist() == pytest.approx(expected, rel=1e-6)
    model.cfg.nll_beta = 0.0  # β = 0: the plain NLL
    assert model._sample_losses(torch.zeros(2, 2), torch.ones(1, 2, 1)).flatten().tolist() == pytest.approx(nll)


def _mago_dynamics(**changes: Any) -> DynamicsConfig:
    cfg = MAGOConfig().dynamics
    cfg.num_ensemble, cfg.num_elites, cfg.hidden_dims, cfg.max_epochs = 3, 3, [16], 2
    cfg.weight_decay = [0.0, 0.0]
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_reward_normalisation_round_trip() -> None:
    """Rewards in [−1, 3]: shift −1.2, scale 4.4, so they land in [0.2/4.4, 4.2/4.4]; back to raw exactly; the
    model's reward output is in raw units (its normalised prediction mapped back)."""
    torch.manual_seed(0)
    obs, act = torch.randn(300, 2), torch.rand(300, 1) * 2 - 1
    rewards = torch.linspace(-1.0, 3.0, 300)
    model = EnsembleDynamics(2, 1, _mago_dynamics(batch_size=64))
    model.fit(obs, act, obs + 0.1 * act, rewards, progress=False)
    assert float(model.reward_shift) == pytest.approx(-1.2) and float(model.reward_scale) == pytest.approx(4.4)
    normalized = normalize_reward(model, rewards)
    assert float(normalized.min()) == pytest.approx(0.2 / 4.4) and float(normalized.max()) == pytest.approx(4.2 / 4.4)
    assert torch.allclose(denormalize_reward(model, normalized), rewards, atol=1e-6)
    with torch.no_grad():
        mean, logvar = model(obs[:5], act[:5])
        net_mean, net_logvar = model._forward_normalized(model.input_scaler(torch.cat([obs[:5], act[:5]], -1)))
    reward_std = model.target_scaler.scale[-1]
    assert torch.allclose(mean[..., -1], denormalize_reward(model, net_mean[..., -1] * reward_std), atol=1e-5)
    scale_log = 2 * torch.log(reward_std * model.reward_scale)
    assert torch.allclose(logvar[..., -1], net_logvar[..., -1] + scale_log, atol=1e-5)


def test_log_std_soft_bounds_and_member_subsets() -> None:
    """variance_bounds=logstd soft-clamps log σ (log σ² = 2 · clamp); a member subset gives those members' rows of
    the full ensemble's output."""
    model = EnsembleDynamics(2, 1, _mago_dynamics())
    obs, act = torch.randn(4, 2), torch.rand(4, 1)
    with torch.no_grad():
        mean, logvar = model(obs, act)
        sub_mean, sub_logvar = model(obs, act, members=torch.tensor([2, 0]))
        raw = model.net(model.input_scaler(torch.cat([obs, act], -1)))[..., model.target_dim :]
    assert torch.allclose(sub_mean, mean[[2, 0]]) and torch.allclose(sub_logvar, logvar[[2, 0]])
    high, low = model.max_logvar, model.min_logvar  # log σ bounds 1 and −5
    expected = 2 * (low + torch.nn.functional.softplus(high - torch.nn.functional.softplus(high - raw) - low))
    scale = 2 * torch.log(model.target_scaler.scale)
    scale[-1] += 2 * torch.log(model.reward_scale)
    assert torch.allclose(logvar, expected + scale, atol=1e-5)


def test_beta_weighted_policy_log_likelihood() -> None:
    """log π_β(a|s) = Σ_d w_d [log N(atanh a_d; μ_d, σ_d) − log(1 − a_d²)], w_d = σ_d^{2β} / its batch mean, and the
    exact tanh Jacobian equals log(1 − tanh²) where that is accurate."""
    actor = TanhGaussianActor(3, 2, (8,), log_std_clamp="soft", init="xavier_uniform", log_std_min=-4.0)
    obs = torch.randn(5, 3)
    actions = torch.rand(7, 5, 2) * 1.6 - 0.8
    with torch.no_grad():
        mean, log_std = actor.distribution_params(obs)
        pre = torch.atanh(actions)
        gaussian = torch.distributions.Normal(mean, log_std.exp()).log_prob(pre)
        per_dim = gaussian - torch.log(1 - actions.square())
        assert torch.allclose(actor.log_prob(obs, actions), per_dim.sum(-1), atol=1e-4)
        weight = log_std.exp()  # σ^{2β} with β = ½
        weighted = (per_dim * weight / weight.mean(0, keepdim=True)).sum(-1)
        assert torch.allclose(actor.log_prob(obs, actions, beta=0.5), weighted, atol=1e-4)
        sampled, sampled_log_prob = actor.sample_n(obs, 4)
        assert torch.allclose(actor.log_prob(obs, sampled), sampled_log_prob, atol=1e-3)
    near, near_log_prob = tanh_normal_around(actions[0], 0.1, 3)
    centre = torch.atanh(actions[0])
    density = torch.distributions.Normal(centre, 0.1).log_prob(torch.atanh(near)) - torch.log(1 - near.square())
    assert torch.allclose(near_log_prob, density.sum(-1), atol=1e-3)


# ---------------------------------------------------------------------------------------------------- nature
class KnownMembers:
    """An ensemble whose member i predicts next state s + i (every dimension), reward i / 10 (already normalised),
    and a negligible std: every candidate value is known in closed form."""

    num_members = 4

    def __init__(self) -> None:
        self.cfg = DynamicsConfig(reward_normalization=False)  # rewards already normalised
        self.termination_fn = lambda obs, act, next_obs: torch.zeros(next_obs.shape[:-1], dtype=torch.bool)

    def __call__(self, obs: torch.Tensor, act: torch.Tensor, members: torch.Tensor) -> tuple[torch.Tensor, ...]:
        offset = members.float().view(-1, 1, 1)
        mean = torch.cat([offset.expand(-1, len(obs), obs.shape[1]), offset.expand(-1, len(obs), 1) / 10], -1)
        return mean, torch.full_like(mean, -40.0)


def _agent(**changes: Any) -> MAGO:
    cfg = MAGOConfig(hidden_dims=[8], adv_batch_size=3, num_models=4, num_state_samples=2, num_action_samples=4)
    for key, value in changes.items():
        setattr(cfg, key, value)
    agent = MAGO(2, 1, cfg)
    agent.dynamics = [KnownMembers()]  # type: ignore[list-item]
    agent.next_obs_low, agent.next_obs_high = torch.zeros(2), torch.ones(2)
    return agent


def test_nature_plays_the_kth_candidate_with_the_penalty() -> None:
    """With zero critics V = 0, so candidate i is worth r_i − φ = i/10 − φ, φ = factor · sqrt(Σ_columns Var(draws))
    over the predicted means' columns: two state dimensions that vary like the member ids and the reward i/10.
    The target value is the k-th smallest over the draws (with multiplicity); the state moves to s + that member."""
    agent = _agent(factor=0.5, order_statistic=2)
    for critics in (agent.critics, agent.target_critics):
        for layer in critics.net.layers:
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    obs, act = torch.tensor([[0.0, 0.0], [0.1, 0.2], [0.3, 0.1]]), torch.zeros(3, 1)
    torch.manual_seed(3)
    drawn = torch.randint(4, (4,))
    torch.manual_seed(3)
    step = agent.play_nature(obs, act, explore=False, penalize=True)
    ordered = sorted(drawn.tolist())
    std = math.sqrt((2 + 0.01) * statistics.variance(ordered))  # two dimensions like the ids, the reward like id/10
    penalty = 0.5 * std
    assert step.ensemble_std.tolist() == pytest.approx([std] * 3, abs=1e-5)
    assert step.target_value.tolist() == pytest.approx([ordered[1] / 10 - penalty] * 3, abs=1e-5)
    assert step.online_value.tolist() == pytest.approx([ordered[1] / 10 - penalty] * 3, abs=1e-5)
    assert torch.allclose(step.next_obs, obs + ordered[1], atol=1e-4)
    assert step.reward.tolist() == pytest.approx([ordered[1] / 10] * 3)
    torch.manual_seed(3)
    unpenalised = agent.play_nature(obs, act, explore=False, penalize=False)
    assert unpenalised.target_value.tolist() == pytest.approx([ordered[1] / 10] * 3, abs=1e-5)


def test_far_out_of_distribution_states_end_the_game() -> None:
    """Member 3's next states lie 3 data ranges past the data's [0, 1]: inside the inner band, they continue; with
    bands at 0.5 and 1 range they end (p_done = 1 − c ≈ 1) and restart from the state pool."""
    agent = _agent(order_statistic=1, ood_inner=0.5, ood_outer=1.0, num_models=1)
    agent.state_pool = torch.full((5, 2), 0.25)
    obs = torch.zeros(3, 2)
    torch.manual_seed(0)
    while True:  # a draw of member 3 alone
        state = torch.get_rng_state()
        if int(torch.randint(4, (1,))) == 3:
            break
    torch.set_rng_state(state)
    step = agent.play_nature(obs, torch.zeros(3, 1), explore=False, penalize=False)
    assert step.done_prob.tolist() == pytest.approx([1.0] * 3, abs=1e-4)
    agent.advance_game(step)
    assert torch.equal(agent.game_obs, torch.full((3, 2), 0.25))
    assert agent.game_steps.tolist() == [0, 0, 0]


# ---------------------------------------------------------------------------------------------------- runs
TASK = "hopper-random-gen"  # conftest's tiny_dataset_dir holds 2000 transitions of it
EPOCHS = 3
TINY = [
    f"epochs={EPOCHS}", "steps_per_epoch=4", "batch_size=16", "adv_batch_size=8", "eval_episodes=1", "save_every=1",
    "hidden_dims=[16,16]", "num_models=3", "num_state_samples=2", "num_action_samples=4", "monitor_rollouts=2",
    "monitor_horizon=5", "dynamics.num_ensemble=4", "dynamics.num_elites=4", "dynamics.hidden_dims=[16,16]",
    "dynamics.weight_decay=[0,0,0]", "dynamics.max_epochs=1",
]  # fmt: skip


class Killed(Exception):
    """Stands for a kill between an epoch's evaluation (logged) and its checkpoint."""


def _train_args(log_dir: Path, *extra: str) -> list[str]:
    return ["--task", TASK, "--algo", "mago", "--seed", "1", "--log-dir", str(log_dir), "--no-progress",
            "--set", *TINY, *extra]  # fmt: skip


def _run_dir(log_dir: Path) -> Path:
    (run_dir,) = (log_dir / TASK / "mago").iterdir()
    return run_dir


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "progress.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def runs(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory, checkpoint_of: Any) -> dict[str, Path]:
    log_dir = tmp_path_factory.mktemp("mago_runs")
    original = RunLogger.evaluation

    def evaluation_then_die(self: RunLogger, epoch: int, *rest: Any, **named: Any) -> None:
        original(self, epoch, *rest, **named)
        if epoch == EPOCHS:
            raise Killed

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
        train.main(_train_args(log_dir / "straight"))
        with pytest.MonkeyPatch.context() as kill, pytest.raises(Killed):
            kill.setattr(RunLogger, "evaluation", evaluation_then_die)
            train.main(_train_args(log_dir / "resumed"))
        resumed = _run_dir(log_dir / "resumed")
        assert checkpoint_of(resumed)["epoch"] == EPOCHS - 1
        train.main(["--resume", str(resumed), "--no-progress"])
    return {"straight": _run_dir(log_dir / "straight"), "resumed": resumed}


def test_resumed_run_matches_the_uninterrupted_run(
    runs: dict[str, Path], same_tensors: Any, checkpoint_of: Any
) -> None:
    """Killed after epoch 3's evaluation (checkpoint at 2), resumed: the final checkpoint (π, π_ref, critics, targets,
    optimisers, the game's states and step counts, RNG states) and progress.csv equal the uninterrupted run's."""
    same_tensors(checkpoint_of(runs["straight"]), checkpoint_of(runs["resumed"]), "checkpoint")
    assert _rows(runs["straight"]) == _rows(runs["resumed"])
    assert [int(row["epoch"]) for row in _rows(runs["resumed"])] == list(range(1, EPOCHS + 1))


def test_run_logs_the_game_and_the_monitor(runs: dict[str, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(runs["straight"]), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    for name in ("adv_q", "adv_q_target", "ensemble_std"):
        assert {f"monitor/{name}/{part}" for part in ("mean", "upper", "lower")} <= tags
    assert {"loss/critic", "loss/policy", "game/adv_q_target", "test/reward", "test/reward_penalized"} <= tags
    reward = [event.value for event in accumulator.Scalars("test/reward")]
    assert reward == pytest.approx([float(row["return_mean"]) for row in _rows(runs["straight"])], rel=1e-6)


def test_clean_and_attack_eval_on_a_mago_run(
    runs: dict[str, Path], tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval.py replays training's last evaluation with π_ref's mean, and the min_Q attack uses MAGO's critics."""
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))  # the attack's radius is in dataset obs std
    (row,) = evaluate_cli.main(
        ["--run", str(runs["straight"]), "--no-progress", "--choice", "clean", "--episodes", "1"]
    )
    assert row["return_mean"] == pytest.approx(float(_rows(runs["straight"])[-1]["return_mean"]), rel=1e-5)
    rows = evaluate_cli.main(
        ["--run", str(runs["straight"]), "--no-progress", "--choice", "attack", "--attack-mode", "min_Q",
         "--epsilons", "0,0.05", "--episodes", "1", "--num-candidates", "3"]
    )  # fmt: skip
    assert len(rows) == 2


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("order_statistic=11", "order_statistic=11"),
        ("num_action_samples=1", ">= 2"),
        ("ood_outer=1", "> ood_inner"),
        ("dynamics.weight_decay=[1e-4,0,0,0,0]", "all zeros with dynamics.optimizer=adamw"),
        ("dynamics.predict_reward=false", "nature needs the rewards"),
        ("dynamics.loss=mse", "a Gaussian model"),
    ],
)
def test_bad_input_is_one_line(item: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--task", TASK, "--algo", "mago", "--log-dir", str(tmp_path), "--set", item]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and fragment in err, err
    assert not (tmp_path / TASK).exists()


def test_plot_draws_magos_three_figures_and_score_reads_the_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    import plot
    import score

    both = [str(runs["straight"]), str(runs["resumed"]), "--group-by", "log_dir"]  # one seed, two runs
    written = plot.main([*both, "--figures", "mago", "--out", str(tmp_path)])
    assert sorted(path.name for path in written) == [
        f"{TASK}_{name}.png" for name in ("adv-q", "ensemble-std", "reward")
    ]
    assert all(path.stat().st_size > 0 for path in written)
    rows = score.main([*both, "--out", str(tmp_path / "scores.md")])
    assert [row.algo for row in rows] == ["mago", "mago"]
    assert rows[0].values == rows[1].values  # the resumed run scores as the uninterrupted one
