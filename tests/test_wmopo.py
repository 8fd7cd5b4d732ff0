"""WMOPO's D4RL algorithm (algos/wmopo.py, docs/wmopo.md): b, the model error and the penalised rewards (R′ for the
dataset's) on hand-computed cases, b from raw ratios and the default model-episode starts in a run, occupancy
sampling, the ensemble options and episode-mode rollouts it configures, killed-and-resumed runs (inside an M-step and
inside the weighted refit) against an uninterrupted one, and bad input. The authors' outputs are in
test_reference_wmopo.py."""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import train
from algos.mopo import MOPO
from algos.trainer import OfflineTrainer
from algos.wmopo import (
    BRANCH_SNAPSHOT,
    MAX_DROPPED_BATCHES,
    REFIT_PROGRESS,
    WMOPO,
    ModelEpisodes,
    ModelErrorFitConfig,
    ModelErrorNet,
    WMOPOConfig,
    WMOPOTrainer,
    occupancy_samples,
    penalty_coefficient,
    pointwise_loss,
    reward_bounds,
    weights_power,
)
from buffers.replay import ReplayBuffer
from config import DynamicsConfig, load_config
from models.density_ratio import DensityRatio
from models.dynamics import EnsembleDynamics
from models.dynamics_recipes import FitState, recipe_for
from utils.errors import UserError

TASK = "hopper-random-gen"  # conftest's tiny_dataset_dir holds 2000 transitions of it


# ---------------------------------------------------------------------------------------------------- equations
def test_b_by_hand() -> None:
    """b = ½ B′ (Σ r_i ℓ_i)^{−1/4}: r = (1, 2, 3), ℓ = (0, 1, 2), B′ = 1e-2 gives S = 8, b = 0.005 · 8^{−1/4}."""
    b, total = penalty_coefficient(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 2.0]), 1e-2)
    assert total == pytest.approx(8.0)
    assert b == pytest.approx(0.005 * 8**-0.25)


def test_dataset_rewards_are_penalised_and_clipped_to_the_smaller_bound() -> None:
    """Rewards (−0.5, 0.2, 3): R = max(|r_min|, |r_max|) = 3 bounds the model rewards, R′ = min = 0.5 the dataset's
    (`real_reward_bound: max` gives R). With factor 1, b = 5 and ℓ = (0, 2, 0) the trainer stores
    clip(r − bℓ, ±R′) = (−0.5, −0.5, 0.5), where ±R would keep −3 and 3."""
    rewards = torch.tensor([-0.5, 0.2, 3.0])
    assert reward_bounds(rewards, 1.0, "min") == (3.0, 0.5)
    assert reward_bounds(rewards, 10.0, "max") == (30.0, 30.0)
    storage = SimpleNamespace(rew=torch.zeros(3))
    trainer = SimpleNamespace(raw_rewards=rewards, wmopo=SimpleNamespace(b=torch.tensor(5.0)), real_bound=0.5,
                              real_buffer=SimpleNamespace(storage=storage))  # fmt: skip
    WMOPOTrainer.penalise_real_rewards(trainer, torch.tensor([0.0, 2.0, 0.0]))  # type: ignore[arg-type]
    assert storage.rew.tolist() == [-0.5, -0.5, 0.5]


def _model(members: int = 3, elites: int = 2, **changes: Any) -> EnsembleDynamics:
    cfg = dataclasses.replace(
        DynamicsConfig(), num_ensemble=members, num_elites=elites, hidden_dims=[8], weight_decay=[0.0, 0.0], **changes
    )
    torch.manual_seed(0)
    return EnsembleDynamics(2, 1, cfg)


def test_pointwise_loss_by_hand() -> None:
    """With a zeroed output layer every member predicts μ = 0 and the same log σ² = clamp(0) (the soft clamp between
    −10 and 0.5), so ℓ = ½ Σ_d [y_d² e^{−v} + v] over y = (Δs, r), whatever the elites."""
    model = _model()
    with torch.no_grad():
        model.net.output.weight.zero_()
        model.net.output.bias.zero_()
    high = 0.5 - math.log1p(math.exp(0.5))  # max − softplus(max − 0)
    v = -10.0 + math.log1p(math.exp(high + 10.0))  # min + softplus(· − min)
    obs, act = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5]])
    next_obs, rew = torch.tensor([[2.0, 0.0]]), torch.tensor([3.0])
    y = torch.tensor([1.0, -2.0, 3.0])
    expected = 0.5 * float((y.square() * math.exp(-v) + v).sum())
    assert float(pointwise_loss(model, obs, act, next_obs, rew)) == pytest.approx(expected, rel=1e-5)


def test_model_reward_penalises_clips_and_replaces_nan() -> None:
    """r̃ = clip(r̂ − b·c(s, a), ±bound), a NaN reward becomes −bound."""
    cfg = load_config("wmopo", "hopper-medium-gen", config_file="quickstart")
    algo = WMOPO(2, 1, cfg)
    algo.b.fill_(0.5)
    algo.model_reward_bound.fill_(4.0)
    with torch.no_grad():
        for layer in algo.model_error.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        algo.model_error.net[-1].bias.fill_(math.log(2.0))  # c ≡ 2
    info = {"obs": torch.zeros(4, 2), "act": torch.zeros(4, 1)}
    reward = algo.model_reward(torch.tensor([1.0, 10.0, -10.0, float("nan")]), info)
    assert reward.tolist() == pytest.approx([0.0, 4.0, -4.0, -4.0])


def test_weights_are_powers_of_the_ratio_with_mean_one() -> None:
    ratio = DensityRatio(1, [4])
    x = torch.randn(50, 1)
    weights = weights_power(ratio, x, 0.2)
    with torch.no_grad():
        raw = ratio(x)
    assert float(weights.mean()) == pytest.approx(1.0)
    assert torch.allclose(weights, raw.pow(0.2) / raw.pow(0.2).mean())
    assert torch.allclose(weights_power(ratio, x, 0.0), torch.ones(50))


def test_model_error_net_fits_log_losses_and_drops_the_minimum() -> None:
    """The regression sees log ℓ of the points above min_loss (so the zero, the shifted minimum, is left out);
    c = exp(f) then tracks a smooth ℓ."""
    torch.manual_seed(0)
    x = torch.rand(2000, 2) * 2 - 1
    losses = torch.exp(x[:, 0])  # log ℓ = x_0: a linear target
    losses[0] = 0.0
    cfg = ModelErrorFitConfig(hidden_dims=[32], lr=1e-2, batch_size=128, patience=5, max_epochs=200)
    net = ModelErrorNet(2, cfg)
    metrics = net.fit(x, losses)
    assert metrics["model_error/holdout_mse"] < 0.01
    with torch.no_grad():
        assert torch.allclose(net(x[1:50]), losses[1:50], rtol=0.15)


def test_occupancy_samples_follow_episodes_and_drop_broken_batches() -> None:
    """A counter chain s → s + 1 that terminates on reaching 3, with γ = 1: every episode yields the rows s = 0, 1, 2
    (actions = s / 10); a batch whose policy returns NaN is dropped whole and sampling goes on."""
    calls = {"policy": 0}

    def transition(states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return states + 1, (states + 1).squeeze(-1) >= 3

    def policy(states: torch.Tensor) -> torch.Tensor:
        calls["policy"] += 1
        return torch.full_like(states, float("nan")) if calls["policy"] == 2 else states / 10

    samples = occupancy_samples(transition, policy, lambda n: torch.zeros(n, 1), 1.0, 9, batch=4)
    assert samples.shape == (9, 2)
    assert set(samples[:, 0].tolist()) <= {0.0, 1.0, 2.0}
    assert torch.allclose(samples[:, 1], samples[:, 0] / 10)
    assert calls["policy"] == 2 + 3  # batch 1: NaN at its 2nd step (dropped); batch 2: 3 steps x 4 episodes = 12 rows


def test_occupancy_samples_give_up_on_a_diverged_model() -> None:
    """A model whose every episode goes non-finite ends sampling with one line after MAX_DROPPED_BATCHES batches,
    instead of sampling forever."""
    calls = {"transition": 0}

    def transition(states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls["transition"] += 1
        return torch.full_like(states, float("inf")), torch.zeros(len(states), dtype=torch.bool)

    with pytest.raises(UserError, match=f"each of {MAX_DROPPED_BATCHES} batches of episodes in a row: it has diverged"):
        occupancy_samples(transition, lambda states: states, lambda n: torch.zeros(n, 1), 1.0, 9, batch=4)
    assert calls["transition"] == MAX_DROPPED_BATCHES


# ---------------------------------------------------------------------------------------------------- the ensemble
def test_member_mean_loss_is_the_sum_over_members() -> None:
    x, y = torch.randn(3, 5, 3), torch.randn(3, 5, 3)
    summed, averaged = _model(), _model(member_loss="mean")
    averaged.load_state_dict(summed.state_dict())
    total = summed.training_loss(x, y, include_decay=False) - summed.cfg.logvar_bound_coef * (
        summed.max_logvar.sum() - summed.min_logvar.sum()
    )
    mean = averaged.training_loss(x, y, include_decay=False) - averaged.cfg.logvar_bound_coef * (
        averaged.max_logvar.sum() - averaged.min_logvar.sum()
    )
    assert mean.item() == pytest.approx(total.item() / 3, rel=1e-6)


def test_nll_holdout_is_the_weighted_likelihood_term() -> None:
    model = _model(holdout_metric="nll")
    x, y, w = torch.randn(6, 3), torch.randn(6, 3), torch.rand(6)
    expected = (model._sample_losses(x, y) * w).mean(-1)
    assert torch.allclose(model.holdout_loss(x, y, w), expected)


def _data(n: int = 600) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(1)
    obs, act = torch.randn(n, 2, generator=generator), torch.randn(n, 1, generator=generator)
    next_obs = obs + 0.1 * act + 0.01 * torch.randn(n, 2, generator=generator)
    return obs, act, next_obs, obs[:, 0] * act[:, 0]


def test_patience_counts_only_after_its_epoch_and_last_weights_are_kept() -> None:
    """lr 0: the holdout never improves after epoch 1. Counting from epoch 7 on, five stale epochs end the fit at
    epoch 11 (at 6 without the delay); "last" keeps the final weights and ranks elites by the last holdout loss."""
    obs, act, next_obs, rew = _data()
    delayed = _model(holdout_metric="nll", keep_weights="last", patience_after_epoch=6, lr=0.0, bootstrap=False)
    assert delayed.fit(obs, act, next_obs, rew, progress=False)["dynamics/epochs"] == 11
    plain = _model(holdout_metric="nll", lr=0.0, bootstrap=False)
    assert plain.fit(obs, act, next_obs, rew, progress=False)["dynamics/epochs"] == 6
    trained = _model(holdout_metric="nll", keep_weights="last", max_epochs=4, bootstrap=False, lr=0.01)
    trained.fit(obs, act, next_obs, rew, progress=False)
    assert trained.holdout_losses.argsort()[:2].tolist() == trained.elites.tolist()


def test_shared_batches_give_identical_members_identical_updates() -> None:
    """Members that start equal stay equal when they see the same batches, and drift apart otherwise."""
    obs, act, next_obs, rew = _data()
    results = {}
    for shared in (True, False):
        model = _model(bootstrap=False, shared_batches=shared, max_epochs=2, holdout_ratio=0.0)
        with torch.no_grad():
            for value in model.net.state_dict().values():
                value.copy_(value[:1].expand_as(value))
        model.fit(obs, act, next_obs, rew, progress=False)
        weight = model.net.output.weight
        results[shared] = bool(torch.equal(weight[0], weight[1]) and torch.equal(weight[1], weight[2]))
    assert results == {True: True, False: False}


# ---------------------------------------------------------------------------------------------------- episodes
def test_episode_rollouts_run_on_restart_and_treat_the_time_limit_as_no_termination() -> None:
    """Two model episodes of at most 3 steps advanced 7 steps (WMOPO's rollout strategy in a plain trainer's model
    and buffer): 14 stored transitions, none terminal (the model never terminates), each episode's 1st, 4th and 7th
    state a start state; the first 4 model steps act uniformly; updates wait until more than 13 model steps exist."""
    torch.manual_seed(0)
    cfg = load_config("mopo", "hopper-medium-gen", overrides=["model_buffer_size=100", "sac.hidden_dims=[8]"])
    model = EnsembleDynamics(2, 1, dataclasses.replace(cfg.dynamics, hidden_dims=[8], weight_decay=[0.0, 0.0]))
    algo = MOPO(2, 1, cfg)
    real = ReplayBuffer(10, 2, 1)
    starts = torch.tensor([[5.0, 5.0], [6.0, 6.0], [7.0, 7.0]])
    trainer = OfflineTrainer(cfg, algo, real, None, None, "/tmp/unused", model, False)  # type: ignore[arg-type]
    episodes = ModelEpisodes(starts, num=2, length=7, episode_length=3, random_steps=4, update_after=13)
    assert not episodes.may_update()
    assert episodes.collect(trainer) == {}  # their statistics are logged per epoch
    fake = trainer.fake_buffer
    assert fake is not None and len(fake) == 14 and episodes.model_steps == 14 and episodes.may_update()
    assert float(fake.storage.done[:14].sum()) == 0.0
    obs = fake.storage.obs[:14].view(7, 2, 2)  # [step, episode, dim]
    is_start = (obs.unsqueeze(-2) == starts).all(-1).any(-1)
    assert bool(is_start[[0, 3, 6]].all())
    assert episodes.steps is not None and episodes.steps.tolist() == [1, 1]
    assert episodes.epoch_metrics()["rollout_info/episodes_ended"] == 4.0 and episodes.epoch_metrics() == {}


def test_episode_rollouts_need_start_states() -> None:
    with pytest.raises(UserError, match="needs episode start states; the dataset marks no episode starts"):
        ModelEpisodes(torch.zeros(0, 2), num=1, length=1, episode_length=3, random_steps=0, update_after=0)


# ---------------------------------------------------------------------------------------------------- runs
TINY = [
    "epochs=2", "steps_per_epoch=60", "update_after=30", "rollout_random_steps=20", "model_episode_length=40",
    "eval_episodes=1", "model_eval_episodes=1", "sim_samples=300", "sim_batch=20", "model_buffer_size=500",
    "batch_size=32", "dynamics.hidden_dims=[16]", "dynamics.weight_decay=[1e-5,1e-5]", "dynamics.max_epochs=4",
    "dynamics.batch_size=64", "ratio.hidden_dims=[16]", "ratio.max_epochs=3", "ratio.batch_size=64",
    "model_error.hidden_dims=[16]", "model_error.max_epochs=3", "model_error.batch_size=64", "sac.hidden_dims=[16]",
]  # fmt: skip


class Killed(Exception):
    pass


def _train_args(log_dir: Path, *extra: str) -> list[str]:
    return ["--task", TASK, "--algo", "wmopo", "--seed", "2", "--log-dir", str(log_dir), "--no-progress",
            "--set", *TINY, *extra]  # fmt: skip


def _run_dir(log_dir: Path) -> Path:
    (run_dir,) = (log_dir / TASK / "wmopo").iterdir()
    return run_dir


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "progress.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def runs(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    log_dir = tmp_path_factory.mktemp("wmopo_runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
        train.main(_train_args(log_dir / "straight"))

        # Killed in M-step 1 (after its first evaluation, epoch 3), resumed.
        from utils.logger import RunLogger

        original = RunLogger.evaluation

        def evaluation_then_die(self: RunLogger, epoch: int, *rest: Any, **named: Any) -> None:
            original(self, epoch, *rest, **named)
            if epoch == 3:
                raise Killed

        with pytest.MonkeyPatch.context() as kill, pytest.raises(Killed):
            kill.setattr(RunLogger, "evaluation", evaluation_then_die)
            train.main(_train_args(log_dir / "m_step"))
        m_step = _run_dir(log_dir / "m_step")
        train.main(["--resume", str(m_step), "--no-progress"])

        # Killed inside the weighted refit (its progress saved every epoch), resumed.
        import models.dynamics as dynamics_module

        original_fit = EnsembleDynamics.fit

        @dataclasses.dataclass(frozen=True)
        class DieAtEpoch3:
            """The refit's stopping rule, killed when asked after epoch 3 (before that epoch's progress is saved)."""

            rule: Any

            def done(self, state: FitState) -> bool:
                if state.epoch == 3:
                    raise Killed
                return self.rule.done(state)

        def fit_and_die_in_the_refit(self: EnsembleDynamics, *args: Any, **named: Any) -> dict[str, float]:
            if named.get("weights") is None:
                return original_fit(self, *args, **named)
            recipe = recipe_for(self.cfg)
            return original_fit(self, *args, **named, recipe=dataclasses.replace(recipe, stop=DieAtEpoch3(recipe.stop)))

        with pytest.MonkeyPatch.context() as kill, pytest.raises(Killed):
            kill.setattr(dynamics_module, "FIT_SAVE_SECONDS", 0.0)
            kill.setattr(EnsembleDynamics, "fit", fit_and_die_in_the_refit)
            train.main(_train_args(log_dir / "refit"))
        refit = _run_dir(log_dir / "refit")
        assert (refit / REFIT_PROGRESS).is_file()
        train.main(["--resume", str(refit), "--no-progress"])
    return {"straight": _run_dir(log_dir / "straight"), "m_step": m_step, "refit": refit}


def test_e_step_b_takes_raw_ratios_and_model_episodes_start_at_dataset_episode_starts(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E-step 0 of a run: b = ½ B′ (Σ r ℓ)^{−1/4} with the ratio network's raw outputs on the data (not divided by
    their mean, not raised to α), and by default every model episode (occupancy samples, M-step, model evaluation)
    starts at a dataset episode's first state."""
    from envs.datasets import load_dataset
    from envs.tasks import get_task

    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
    seen: dict[str, Any] = {}
    original = WMOPOTrainer.e_step

    def e_step_and_stop(self: WMOPOTrainer) -> None:
        original(self)
        data = self.real_buffer.storage
        losses = pointwise_loss(self.model, data.obs, data.act, data.next_obs, self.raw_rewards)
        with torch.no_grad():
            ratios = self.wmopo.ratio(self.data_x)
        tempered = ratios.pow(self.wmopo_cfg.weight_exponent)
        seen["b"] = float(self.wmopo.b)
        seen["candidates"] = [
            penalty_coefficient(r, losses - losses.min(), self.wmopo_cfg.b_scale)[0]
            for r in (ratios, ratios / ratios.mean(), tempered / tempered.mean())
        ]
        seen["starts"] = [self.episodes.start_states, self.wmopo.start_states, self.episodes.starts(300)]
        raise Killed

    monkeypatch.setattr(WMOPOTrainer, "e_step", e_step_and_stop)
    with pytest.raises(Killed):
        train.main(_train_args(tmp_path))
    raw, normalised, tempered = seen["candidates"]
    assert seen["b"] == pytest.approx(raw, rel=1e-5)
    assert abs(normalised - raw) > 1e-3 * raw and abs(tempered - raw) > 1e-3 * raw
    dataset_starts = torch.as_tensor(load_dataset(get_task(TASK)).start_observations())
    trainer_starts, agent_starts, drawn = seen["starts"]
    assert torch.equal(trainer_starts, dataset_starts) and torch.equal(agent_starts, dataset_starts)
    assert bool((drawn.unsqueeze(1) == dataset_starts).all(-1).any(-1).all())


@pytest.mark.parametrize("killed", ["m_step", "refit"])
def test_resumed_run_matches_the_uninterrupted_run(
    runs: dict[str, Path], killed: str, same_tensors: Any, checkpoint_of: Any
) -> None:
    """Killed in M-step 1 or inside E-step 1's weighted refit, resumed: the final checkpoint (policy, critics,
    optimisers, ratio and model-error networks, b, the refitted model, the model buffer and episodes, RNG states) and
    progress.csv equal the uninterrupted run's."""
    same_tensors(checkpoint_of(runs["straight"]), checkpoint_of(runs[killed]))
    assert _rows(runs["straight"]) == _rows(runs[killed])
    assert not (runs[killed] / REFIT_PROGRESS).exists()


def test_run_does_both_em_iterations_and_logs_them(runs: dict[str, Path], checkpoint_of: Any) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    state = checkpoint_of(runs["straight"])
    assert state["extra"]["phase"] == "done" and state["extra"]["iteration"] == 2
    assert [int(row["epoch"]) for row in _rows(runs["straight"])] == [1, 2, 3, 4]
    assert float(state["algo_state"]["modules"]["b"]) > 0
    accumulator = EventAccumulator(str(runs["straight"]), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"e_step/b", "ratio/train_loss", "refit/train_loss", "model_error/holdout_mse", "eval/sim_return"} <= tags
    assert len(accumulator.Scalars("e_step/b")) == 2


def test_plot_draws_the_real_and_model_returns(runs: dict[str, Path], tmp_path: Path) -> None:
    import plot

    written = plot.main([str(runs["straight"]), "--figures", "wmopo-em", "--out", str(tmp_path), "--smooth", "1"])
    assert sorted(path.name for path in written) == [f"{TASK}_real-return.png", f"{TASK}_sim-return.png"]


def test_alpha_zero_keeps_the_erm_model(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint_of: Any
) -> None:
    """α = 0: iteration 1 refits only the ratio (b changes); the model is the ERM model throughout."""
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
    train.main(_train_args(tmp_path, "weight_exponent=0", "epochs=1"))
    run_dir = _run_dir(tmp_path)
    erm = torch.load(run_dir / "dynamics.pt", weights_only=False)["state_dict"]
    final = checkpoint_of(run_dir)["extra"]["dynamics"]
    for key, value in erm.items():
        assert torch.equal(value, final[key]), key
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert "ratio_before_refit/train_loss" not in tags and "refit/train_loss" not in tags
    assert len(accumulator.Scalars("ratio/train_loss")) == 2  # one ratio fit per E-step


def test_branch_off_iteration_0_is_the_run_it_would_have_been(
    runs: dict[str, Path], tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    same_tensors: Any, checkpoint_of: Any,
) -> None:  # fmt: skip
    """An α = 0 run that takes over the α = 0.2 run's iteration 0 (`branch_from`, with `{seed}` and a wildcard) ends
    exactly as an α = 0 run from scratch: final checkpoint, progress.csv and every TensorBoard scalar; its iteration
    0 is not repeated (one dynamics fit's logs), and a branch resumes as any run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
    parent = runs["straight"]
    assert (parent / "checkpoints" / BRANCH_SNAPSHOT).is_file()
    train.main(_train_args(tmp_path / "fresh", "weight_exponent=0"))
    pattern = str(parent.parent / "seed{seed}-*")
    train.main(_train_args(tmp_path / "branch", "weight_exponent=0", f"branch_from={pattern}"))
    fresh, branch = _run_dir(tmp_path / "fresh"), _run_dir(tmp_path / "branch")
    same_tensors(checkpoint_of(fresh), checkpoint_of(branch))
    assert _rows(fresh) == _rows(branch) and len(_rows(branch)) == 4

    def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
        accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}

    assert scalars(fresh) == scalars(branch)
    assert not (branch / "checkpoints" / BRANCH_SNAPSHOT).exists()  # a branch starts at iteration 1
    train.main(["--resume", str(branch), "--no-progress"])  # finished: resumes to the same end
    same_tensors(checkpoint_of(fresh), checkpoint_of(branch))


def test_branch_refusals_are_one_line(
    runs: dict[str, Path], tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_error: Any
) -> None:
    """A branch must name one run that finished iteration 0 with the same settings but α and em_iterations; nothing
    is written when it does not."""
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
    parent = runs["straight"]
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_bytes((parent / "config.yaml").read_bytes())
    cases = [
        (["epochs=3", f"branch_from={parent}"], ["ran with other settings", "epochs: 2 there, 3 here"]),
        (["sac.hidden_dims=[8]", f"branch_from={parent}"], ["sac.hidden_dims"]),
        ([f"branch_from={parent.parent}/seed7-*"], ["matches nothing for seed 2", "exactly one WMOPO run dir"]),
        ([f"branch_from={unfinished}"], ["has not finished iteration 0"]),
        ([f"branch_from={tmp_path}"], ["is not a run directory"]),
        (["em_iterations=1", f"branch_from={parent}"], ["em_iterations >= 2"]),
    ]
    log_dir = tmp_path / "log"
    for extra, expected in cases:
        args = _train_args(log_dir, *extra)
        err = cli_error(functools.partial(train.main, args))
        for text in expected:
            assert text in err, (text, err)
        assert not log_dir.exists(), extra


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["weight_exponent=-1"], ["weight_exponent=-1", ">= 0"]),
        (["rollout_mode=branch"], ["rollout_mode='branch'", "episodes"]),
        (["model_starts=simulator"], ["model_starts='simulator'", "dataset"]),
        (["dynamics.predict_reward=false"], ["predicts rewards"]),
        (["real_reward_bound=mean"], ["real_reward_bound='mean'"]),
    ],
    ids=["alpha", "rollout-mode", "starts", "no-reward", "bound"],
)
def test_bad_input_is_one_line(extra: list[str], expected: list[str], tmp_path: Path, cli_error: Any) -> None:
    err = cli_error(
        lambda: train.main(["--task", TASK, "--algo", "wmopo", "--log-dir", str(tmp_path / "log"), "--set", *extra])
    )
    for text in expected:
        assert text in err, (text, err)
    assert not (tmp_path / "log").exists()


def test_config_defaults_are_the_papers() -> None:
    """The published settings, as docs/wmopo.md lists them."""
    cfg = load_config("wmopo", "hopper-medium-v2")
    assert isinstance(cfg, WMOPOConfig)
    assert (cfg.sac.gamma, cfg.sac.actor_lr, cfg.sac.critic_lr, cfg.sac.auto_alpha, cfg.sac.alpha) == (
        0.995, 1e-3, 1e-3, False, 0.2,
    )  # fmt: skip
    assert (cfg.batch_size, cfg.real_ratio, cfg.epochs * cfg.steps_per_epoch, cfg.update_after) == (
        512, 0.5, 500_000, 10_000,
    )  # fmt: skip
    d = cfg.dynamics
    assert (d.num_ensemble, d.num_elites, d.hidden_dims, d.bootstrap, d.keep_weights) == (
        7,
        5,
        [256] * 6,
        False,
        "last",
    )
    assert (cfg.ratio.hidden_dims, cfg.ratio.lr, cfg.model_error.lr, cfg.b_scale) == ([256] * 4, 1e-4, 5e-3, 1e-2)
    assert cfg.planned_epochs() == 100  # two M-steps of 50 epochs: what sweeps and score.py expect of a finished run
    with pytest.raises(UserError):
        load_config("wmopo", "hopper-medium-v2", overrides=["em_iterations=0"])
