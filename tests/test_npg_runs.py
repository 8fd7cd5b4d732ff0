"""The NPG family end to end at toy scale: PAL (online, Hopper-v4) and MOReL (a tiny generated dataset) through
train.py, a run killed after a checkpoint and resumed matching an uninterrupted one bit for bit, eval.py on both,
and bad input at the command line."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import eval_run

import eval as evaluate_cli
import train
from utils.logger import RunLogger

REPO = Path(__file__).resolve().parents[1]
MOREL_TASK = "hopper-random-gen"  # conftest's tiny_dataset_dir holds 2000 transitions of it
ITERATIONS = 3
COMMON_TINY = [
    f"num_iter={ITERATIONS}",
    "save_every=1",
    "fit_epochs=1",
    "inner_steps=1",
    "update_paths=4",
    "horizon=10",
    "eval_episodes=1",
    "dynamics.hidden_dims=[32,32]",
    "npg.policy_hidden_dims=[8,8]",
    "npg.baseline_hidden_dims=[8,8]",
]
TINY = {
    "pal": [*COMMON_TINY, "init_samples=300", "iter_samples=200", "buffer_size=1000"],
    "morel": [*COMMON_TINY, "bc_epochs=1"],
}
TASK = {"pal": "Hopper-v4", "morel": MOREL_TASK}


class Killed(Exception):
    """Stands for a kill between an iteration's evaluation (logged) and its checkpoint."""


def train_args(algo: str, log_dir: Path) -> list[str]:
    return ["--task", TASK[algo], "--algo", algo, "--seed", "2", "--log-dir", str(log_dir), "--no-progress",
            "--set", *TINY[algo]]  # fmt: skip


def only_run_dir(log_dir: Path, algo: str) -> Path:
    (run_dir,) = (log_dir / TASK[algo] / algo).iterdir()
    return run_dir


def progress_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "progress.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def checkpoint(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / "checkpoints" / "checkpoint.pt", weights_only=False)


def train_killed_then_resumed(algo: str, log_dir: Path) -> Path:
    """Train, die right after the last iteration's evaluation is logged (its checkpoint never written, so the run
    resumes from the previous iteration's), then `--resume` to the end; returns the run directory."""
    original = RunLogger.evaluation

    def evaluation_then_die(self: RunLogger, epoch: int, *rest: Any, **named: Any) -> None:
        original(self, epoch, *rest, **named)
        if epoch == ITERATIONS:
            raise Killed

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        patch.setattr(RunLogger, "evaluation", evaluation_then_die)
        train.main(train_args(algo, log_dir))
    run_dir = only_run_dir(log_dir, algo)
    assert checkpoint(run_dir)["epoch"] == ITERATIONS - 1
    assert len(progress_rows(run_dir)) == ITERATIONS  # the last row is past the checkpoint
    train.main(["--resume", str(run_dir), "--no-progress"])
    return run_dir


@pytest.fixture(scope="module")
def runs(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """For PAL and MOReL: an uninterrupted run ("straight") and the same run killed and resumed ("resumed")."""
    log_dir = tmp_path_factory.mktemp("npg_runs")
    out: dict[str, dict[str, Path]] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
        for algo in ("pal", "morel"):
            train.main(train_args(algo, log_dir / "straight"))
            out[algo] = {
                "straight": only_run_dir(log_dir / "straight", algo),
                "resumed": train_killed_then_resumed(algo, log_dir / "resumed"),
            }
    return out


@pytest.mark.parametrize("algo", ["pal", "morel"])
def test_resumed_run_matches_the_uninterrupted_run_bit_for_bit(
    runs: dict[str, dict[str, Path]], algo: str, same_tensors: Any
) -> None:
    """Killed after iteration 3's evaluation (checkpoint at 2) and resumed: the final checkpoint (policy, baseline,
    dynamics and their optimisers, path buffer, best policy, RNG states; all but wall time) and every progress.csv
    value (but wall time) equal the uninterrupted run's exactly (episodes are reset by per-episode seeds, and the
    checkpoint holds every RNG)."""
    straight, resumed = checkpoint(runs[algo]["straight"]), checkpoint(runs[algo]["resumed"])
    assert straight["epoch"] == resumed["epoch"] == ITERATIONS
    del straight["wall_time"], resumed["wall_time"]
    same_tensors(straight, resumed, "checkpoint")  # weights, optimisers, buffer, best policy, RNG states...
    straight_rows, resumed_rows = progress_rows(runs[algo]["straight"]), progress_rows(runs[algo]["resumed"])
    assert [int(row["epoch"]) for row in resumed_rows] == list(range(1, ITERATIONS + 1))
    for row in straight_rows + resumed_rows:
        del row["wall_time"]
    assert resumed_rows == straight_rows


def scalar_tags(run_dir: Path) -> dict[str, list[float]]:
    """Every TensorBoard scalar of a run by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [event.value for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_runs_went_through_every_phase(runs: dict[str, dict[str, Path]]) -> None:
    """The toy runs really ran every phase. PAL logs at environment steps: with act_repeat 2 each decision is two
    steps, except a path's last one when the episode ends after its first; it collected at least 300 + 2 x 200
    decisions, and keeps whole paths within buffer_size. MOReL logs at iterations and set a finite threshold. Both
    took NPG steps (npg/kl_dist logged, positive)."""
    pal = checkpoint(runs["pal"]["straight"])
    tags = scalar_tags(runs["pal"]["straight"])
    decisions, num_paths = int(sum(tags["train/iter_samples"])), int(sum(tags["train/num_paths"]))
    assert decisions >= 300 + 2 * 200
    assert 2 * decisions - num_paths <= pal["env_steps"] <= 2 * decisions
    assert int(progress_rows(runs["pal"]["straight"])[-1]["step"]) == pal["env_steps"]
    buffer = pal["path_buffer"]
    assert sum(buffer["path_lengths"]) == len(buffer["data"][0]) <= 1000
    assert [int(row["step"]) for row in progress_rows(runs["morel"]["straight"])] == [1, 2, 3]
    threshold = checkpoint(runs["morel"]["straight"])["algo_state"]["modules"]["threshold"]
    assert 0 < float(threshold) < float("inf")
    for algo in ("pal", "morel"):
        kl = scalar_tags(runs[algo]["straight"]).get("npg/kl_dist")
        assert kl and all(value > 0 for value in kl), algo
    morel_tags = scalar_tags(runs["morel"]["straight"])
    assert len(morel_tags["morel/bc_loss"]) == 1 and morel_tags["morel/bc_loss"][0] > 0  # BC ran, once


def test_learned_reward_model_is_fitted_and_scores_the_model_paths(data_env: None, tmp_path: Path) -> None:
    """reward_fn=learned (mjrl's learn_reward): the reward models are fitted with the dynamics (reward/loss_i
    logged, the reward model and its optimiser in the checkpoint, its weights moved from their initialisation) and
    the trainer's reward function is the reward model, evaluated on each member's own predictions."""
    from algos import build_algorithm
    from algos.npg_trainer import NPGTrainer
    from envs.task_config import load_task_config
    from envs.tasks import get_task

    train.main([*train_args("morel", tmp_path), "reward_fn=learned"])
    run_dir = only_run_dir(tmp_path, "morel")
    tags = scalar_tags(run_dir)
    assert {f"reward/loss_{i}" for i in range(4)} <= set(tags)
    state = checkpoint(run_dir)
    assert state["reward_model"] is not None and state["reward_optim"]["state"]
    cfg = load_task_config("morel", MOREL_TASK, overrides=[*TINY["morel"], "reward_fn=learned"])
    spec = get_task(MOREL_TASK)
    trainer = NPGTrainer(cfg, build_algorithm(cfg, spec.obs_dim, spec.act_dim, "cpu"), spec, None, None, tmp_path)  # type: ignore[arg-type]
    fresh = {name: value.clone() for name, value in trainer.reward_model.state_dict().items()}
    assert any(not torch.equal(fresh[name], value) for name, value in state["reward_model"].items())
    trainer.reward_model.load_state_dict(state["reward_model"])
    obs, act = torch.randn(4, 6, spec.obs_dim), torch.rand(4, 6, spec.act_dim) * 2 - 1
    next_obs = torch.randn(4, 6, spec.obs_dim)
    torch.testing.assert_close(trainer.reward_fn(obs, act, next_obs), trainer.reward_model(obs, act, next_obs))
    trainer.close()


@pytest.mark.parametrize("algo", ["pal", "morel"])
def test_clean_eval_reproduces_the_last_training_evaluation(
    runs: dict[str, dict[str, Path]], algo: str, data_env: None
) -> None:
    """eval.py --choice clean with the run's seed and one episode replays training's last evaluation: the same
    return and the same episode length in decisions, so the PAL run is evaluated with its act_repeat (2)."""
    run_dir = runs[algo]["straight"]
    (row,) = eval_run(run_dir, "--choice", "clean", "--episodes", "1")
    last = progress_rows(run_dir)[-1]
    assert row["return_mean"] == pytest.approx(float(last["return_mean"]), rel=1e-5)
    assert row["length_mean"] == float(last["length_mean"])
    assert (run_dir / "eval" / "clean_ep1.csv").is_file()


@pytest.mark.parametrize("algo", ["pal", "morel"])
def test_min_q_attack_is_refused_without_a_critic(
    runs: dict[str, dict[str, Path]], algo: str, data_env: None, cli_error: Any
) -> None:
    """The NPG policies have no critic: min_Q is refused in one line, as for BC, before any file is written."""
    run_dir = runs[algo]["straight"]
    argv = ["--run", str(run_dir), "--no-progress", "--choice", "attack", "--attack-mode", "min_Q", "--episodes", "1"]
    err = cli_error(lambda: evaluate_cli.main(argv))
    assert "min_Q" in err and "critic" in err
    assert not list((run_dir / "eval").glob("attack-min_Q*")) if (run_dir / "eval").exists() else True


@pytest.mark.parametrize("algo", ["pal", "morel"])
def test_action_diff_attack_runs_on_the_gaussian_policy(
    runs: dict[str, dict[str, Path]], algo: str, data_env: None
) -> None:
    """action_diff needs distribution_params, which the Gaussian MLP policy has: it runs, writes its CSV, and its
    zero budget plays exactly the clean episode."""
    run_dir = runs[algo]["straight"]
    rows = eval_run(
        run_dir, "--choice", "attack", "--attack-mode", "action_diff", "--epsilons", "0,0.1", "--num-candidates", "5",
        "--episodes", "1",
    )  # fmt: skip
    assert [row["epsilon"] for row in rows] == [0.0, 0.1]
    (clean,) = eval_run(run_dir, "--choice", "clean", "--episodes", "1")
    assert rows[0]["return_mean"] == clean["return_mean"]
    assert (run_dir / "eval" / "attack-action_diff_eps=0,0.1_cand5_ep1.csv").is_file()


PAL_BASE = ["--task", "Hopper-v4", "--algo", "pal"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--task", "Hopper-v4", "--algo", "mopo"], ["Hopper-v4", "online task", "hopper-medium-gen"]),
        (["--task", "hopper-medium-gen", "--algo", "pal"], ["pal", "Hopper-v4", "--algo morel"]),
        (["--task", "Hoper-v4", "--algo", "pal"], ["'Hoper-v4'", "did you mean", "Hopper-v4"]),
        ([*PAL_BASE, "--set", "act_repeat=0"], ["act_repeat=0", "> 0"]),
        ([*PAL_BASE, "--set", "horizon=3"], ["horizon=3", ">= 5"]),
        ([*PAL_BASE, "--set", "buffer_size=100"], ["buffer_size=100", "act_repeat=2", "buffer_size=500"]),
        ([*PAL_BASE, "--set", "reward_fn=bogus"], ["reward_fn='bogus'", "env, mjrl"]),
        (["--task", "pendulum-medium-gen", "--algo", "morel"], ["'pendulum'", "reward_fn=learned"]),
        (
            ["--task", "pendulum-medium-gen", "--algo", "morel", "--set", "reward_fn=learned"],
            ["'pendulum'", "termination_fn=mopo"],
        ),
    ],
    ids=[
        "online-task-offline-algo",
        "offline-task-online-algo",
        "unknown-gym-id",
        "act-repeat-0",
        "horizon-3",
        "buffer-below-one-episode",
        "unknown-reward-fn",
        "no-known-reward",
        "no-env-termination",
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run_dir(
    argv: list[str], expected: list[str], tmp_path: Path, cli_error: Any
) -> None:
    """Each mistake is one clear stderr line naming the bad value and the fix, exit code 2, and no run directory."""
    log_dir = tmp_path / "log"
    err = cli_error(lambda: train.main([*argv, "--log-dir", str(log_dir), "--no-progress"]))
    for text in expected:
        assert text in err, (text, err)
    assert not log_dir.exists()


def test_list_tasks_names_the_online_tasks() -> None:
    """python train.py --list-tasks lists the gymnasium ids PAL and MAL train on."""
    result = subprocess.run(
        [sys.executable, "train.py", "--list-tasks"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = set(result.stdout.split())
    assert {"Hopper-v4", "Walker2d-v4", "HalfCheetah-v4"} <= names
    assert MOREL_TASK in names
