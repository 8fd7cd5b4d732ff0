"""bench/learning_check.py: one command trains an algorithm next to MOPO and BC, publishes the runs and prints the
table; a re-run trains nothing; bad input is one line; --dry-run prints train.py commands that train.py accepts."""

from __future__ import annotations

import csv
import importlib.util
import shlex
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

import collect
import train
from algos import ALGORITHMS
from config import config_classes
from envs import get_task, load_dataset, normalized_score
from envs.datasets import write_d4rl_hdf5
from envs.generate import generate_dataset
from envs.task_config import load_task_config

REPO = Path(__file__).resolve().parents[1]
TASK = "hopper-random-gen"  # conftest's tiny_dataset_dir holds 2000 transitions of it


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("learning_check", REPO / "bench" / "learning_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["learning_check"] = module
    spec.loader.exec_module(module)
    return module


LC = _load_script()


@pytest.fixture
def data_env(tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
    return tiny_dataset_dir


def _files(root: Path) -> dict[Path, float]:
    return {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}


def _last5(run_dir: Path) -> float:
    with open(run_dir / "progress.csv", newline="") as handle:
        values = [float(row["normalized_score_mean"]) for row in csv.DictReader(handle)]
    assert len(values) == 5  # the tiny budget evaluates 5 times, so last-5 is the full-budget computation
    return float(np.mean(values[-5:]))


def _row(out: str, name: str) -> list[str]:
    (line,) = [line for line in out.splitlines() if line.startswith(f"| {name} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_tiny_check_trains_publishes_and_prints_the_table_then_reruns_nothing(
    data_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cli_error: Any
) -> None:
    log, results = tmp_path / "log", tmp_path / "results"
    argv = ["--algo", "bcq", "--task", TASK, "--seeds", "0", "1", "--budget", "tiny", "--log-dir", str(log)]
    argv += ["--results", str(results)]
    assert LC.main(argv) == 0
    out = capsys.readouterr().out
    assert "6 runs; 0 already finished, 0 to resume, 6 to start (2 at once, 1 thread each)" in out

    # Each seed of each method is its own run with its own model (MOPO's dynamics.pt in every MOPO run dir).
    runs = {algo: sorted((log / TASK / algo).iterdir()) for algo in ("bcq", "mopo", "bc")}
    assert {algo: [path.name.split("-")[0] for path in paths] for algo, paths in runs.items()} == {
        algo: ["seed0", "seed1"] for algo in runs
    }
    assert all((path / "dynamics.pt").is_file() for path in runs["mopo"])

    # The registry holds every run under its label, with the published files only.
    for algo, paths in runs.items():
        published = results / TASK / f"{algo}-check-tiny"
        assert sorted(p.name for p in published.iterdir()) == [path.name for path in paths]
        for path in paths:
            assert {f.name for f in (published / path.name).iterdir()} == {
                "config.yaml",
                "progress.csv",
                "provenance.json",
            }
            assert (published / path.name / "progress.csv").read_bytes() == (path / "progress.csv").read_bytes()

    # The table: mean ± std over seeds of each seed's last-5 mean, the behaviour policy, the data's episodes and hash.
    dataset = load_dataset(get_task(TASK))
    assert f"data sha256 {dataset.content_hash}" in out
    for name, algo in (("BCQ", "bcq"), ("MOPO", "mopo"), ("BC", "bc")):
        values = [_last5(path) for path in runs[algo]]
        score, per_seed, budget = _row(out, name)[1:]
        assert score == f"{np.mean(values):.1f} ± {np.std(values):.1f}"
        assert per_seed == f"0: {values[0]:.1f}, 1: {values[1]:.1f}"
        assert budget.startswith("100 steps: `--set epochs=5")
    assert _row(out, "behaviour policy")[1] == "–"  # uniform random data: no policy score recorded
    episodes = float(normalized_score(get_task(TASK), float(dataset.episode_returns().mean())))
    assert _row(out, "dataset episodes")[1] == f"{episodes:.1f}"
    assert f"{len(dataset.episode_returns())} episodes, 2000 transitions" in _row(out, "dataset episodes")[3]

    # Running the same command again trains nothing, rewrites nothing and prints the same table.
    before = {**_files(log), **_files(results)}
    assert LC.main(argv) == 0
    again = capsys.readouterr().out
    assert "6 runs; 6 already finished, 0 to resume, 0 to start" in again
    assert {**_files(log), **_files(results)} == before
    assert again[again.index("Learning check:") :] == out[out.index("Learning check:") :]

    # Data regenerated under the runs: refused before any training, naming another --log-dir.
    other = tmp_path / "other_data"
    other.mkdir()
    spec = get_task(TASK)
    write_d4rl_hdf5(other / spec.dataset_file, generate_dataset(spec, 500, seed=1, max_episode_steps=100))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(other))
    message = cli_error(lambda: LC.main(argv))
    assert "was trained on data sha256" in message and "run the check with another --log-dir" in message
    assert _files(log) == {path: stamp for path, stamp in before.items() if log in path.parents}
    fresh = message[message.index("--log-dir (e.g. ") + len("--log-dir (e.g. ") : message.index(") to train")]
    argv[argv.index(str(log))] = fresh
    assert LC.main([*argv, "--dry-run"]) == 0  # the suggested root starts every run afresh on the new data
    assert "6 runs; 0 already finished, 0 to resume, 6 to start" in capsys.readouterr().out


def _suggested(message: str, start: str, end: str) -> list[str]:
    """The command a message suggests, from `start` up to (not including) `end`."""
    return shlex.split(message[message.index(start) : message.index(end, message.index(start))])


@pytest.mark.parametrize("algo", ["pal", "mal"])
def test_online_algorithms_are_refused_with_a_train_command_that_is_accepted(
    data_env: Path, algo: str, cli_error: Any
) -> None:
    message = cli_error(lambda: LC.main(["--algo", algo, "--task", TASK]))
    assert f"{algo} learns online" in message
    command = _suggested(message, "python train.py", " and score")
    args = train.parse_args(command[2:])
    assert (args.algo, args.seeds, args.workers) == (algo, [0, 1, 2], 2)
    assert get_task(args.task).online
    load_task_config(args.algo, args.task, args.config, args.overrides)
    assert f"python score.py log/{args.task} --algo {algo} --last 5" in message


def test_study_algorithms_are_refused_with_the_study_command(data_env: Path, cli_error: Any) -> None:
    message = cli_error(lambda: LC.main(["--algo", "wmopo-alg2", "--task", TASK]))
    assert "WMOPO Pendulum study" in message
    command = _suggested(message, "python train.py", " and score")
    args = train.parse_args(command[2:])
    assert (args.algo, args.seeds) == ("wmopo-alg2", [0, 1, 2, 3, 4])
    load_task_config(args.algo, args.task, args.config, args.overrides)


def test_missing_dataset_names_the_collect_command(
    dataset_dirs: SimpleNamespace, tmp_path: Path, cli_error: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = cli_error(lambda: LC.main(["--algo", "mopo", "--task", "hopper-medium-gen", "--log-dir", str(tmp_path)]))
    assert "no dataset for hopper-medium-gen" in message
    command = _suggested(message, "python collect.py", ",")
    calls = []
    monkeypatch.setattr(collect.generate, "write_dataset", lambda *args: calls.append(args) or Path("x"))
    collect.main(command[2:])  # collect.py accepts it and writes that task at the documented checks' size
    assert calls == [("hopper-medium-gen", 200_000, 0, None, None, False)]
    assert not (tmp_path / "hopper-medium-gen").exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--algo", "sac"],
            "unknown algorithm 'sac'; a learning check takes one of: bc, bcq, combo, cql, mago, micro, mopo",
        ),
        (["--algo", "mopo", "--task", "Hopper-v4"], "Hopper-v4 is an online environment task without a dataset"),
        (["--algo", "mopo", "--budget", "huge"], "--budget huge: neither a budget name (cpu, tiny, first)"),
        (["--algo", "mopo", "--budget", "bcq:epochs=3"], "bcq is not in this check"),
        (["--algo", "mago", "--budget", "dynamics_path=m.pt"], "every seed of a learning check fits its own model"),
        (["--algo", "bc", "--budget", "tiny", "rollout_length=5"], "bc on hopper-random-gen: unknown config key"),
        (["--algo", "bc", "--seeds", "0", "0"], "--seeds lists 0 twice"),
        (["--algo", "bc", "--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_bad_input_is_one_line(data_env: Path, tmp_path: Path, argv: list[str], expected: str, cli_error: Any) -> None:
    full = [*argv, "--log-dir", str(tmp_path)] + ([] if "--task" in argv else ["--task", TASK])
    assert expected in cli_error(lambda: LC.main(full))
    assert not any(tmp_path.iterdir())


def test_every_offline_algorithm_has_a_preset_and_a_tiny_budget() -> None:
    offline = {name for name in ALGORITHMS if not config_classes()[name].online}
    assert set(LC.PRESETS) == offline
    assert set(LC.TINY) == offline


@pytest.mark.parametrize("family", ["hopper", "walker2d", "halfcheetah"])
def test_presets_resolve_on_every_family(family: str) -> None:
    """Every preset's settings (family-specific ones included) are accepted by train.py's config layers."""
    spec = get_task(f"{family}-medium-gen")
    for algo in LC.PRESETS:
        for method, budget in LC.budgets(algo, spec, [])[1].items():
            load_task_config(method, spec.name, budget.config, budget.sets)
    morel = LC.budgets("morel", spec, [])[1]["morel"].sets
    assert ("num_iter=50" in morel) == (family == "halfcheetah")  # docs/morel.md: 50 iterations on halfcheetah


@pytest.mark.parametrize("budget", [["cpu"], ["tiny"], ["tiny", "eval_episodes=2", "mopo:eval_episodes=3"]])
@pytest.mark.parametrize("algo", sorted(LC.PRESETS))
def test_dry_run_prints_train_commands_that_train_accepts(
    data_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], algo: str, budget: list[str]
) -> None:
    argv = ["--algo", algo, "--task", TASK, "--budget", *budget, "--log-dir", str(tmp_path / "log"), "--dry-run"]
    assert LC.main([*argv, "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    commands = [shlex.split(line) for line in out.splitlines() if line.startswith("python train.py ")]
    methods = list(dict.fromkeys([algo, "mopo", "bc"]))
    assert sorted((c[c.index("--algo") + 1], c[c.index("--seed") + 1]) for c in commands) == sorted(
        (method, seed) for method in methods for seed in "012"
    )
    for command in commands:
        args = train.parse_args(command[2:])
        assert (args.task, args.threads, args.log_dir) == (TASK, 1, str(tmp_path / "log"))
        cfg = load_task_config(args.algo, args.task, args.config, args.overrides, {"seed": args.seed})
        if budget[1:]:  # unprefixed items go to the algorithm's runs, `mopo:` ones to MOPO's (the last one wins)
            assert cfg.eval_episodes == {"mopo": 3}.get(args.algo, 2 if args.algo == algo else 1)
    if budget[1:]:  # custom items: their runs go under a label of their own, never the preset's
        assert f"{algo}-check-tiny-" in out and "mopo-check-tiny-" in out
        assert ("bc-check-tiny}" in out) == (algo != "bc")
    assert not (tmp_path / "log").exists() and not (tmp_path / "results").exists()
