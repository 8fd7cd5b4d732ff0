"""eval.py end to end on tiny MOPO and MICRO runs: clean, sim2real and attack outputs, file naming by settings,
settings in every CSV, shared heatmap colour ranges, and bad input."""

from __future__ import annotations

import csv
import os
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_DYNAMICS, eval_run

import eval as evaluate_cli
import train
from utils import plotting
from utils.errors import run_cli

TASK = "hopper-random-gen"
TINY = [
    "epochs=2",
    "steps_per_epoch=40",
    "batch_size=32",
    "rollout_freq=40",
    "rollout_batch_size=100",
    "rollout_length=2",
    "eval_every=1",
    "eval_episodes=2",
    "save_every=1",
    *TINY_DYNAMICS,
    "sac.hidden_dims=[32,32]",
]
EXTRA = {"mopo": [], "micro": ["num_samples=3"]}


@pytest.fixture(scope="module")
def runs(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    log_dir = tmp_path_factory.mktemp("log")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
        for algo in ("mopo", "micro"):
            args = ["--task", TASK, "--algo", algo, "--log-dir", str(log_dir), "--no-progress"]
            train.main([*args, "--set", *TINY, *EXTRA[algo]])
    return {algo: next((log_dir / TASK / algo).iterdir()) for algo in ("mopo", "micro")}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("algo", ["mopo", "micro"])
def test_clean_reproduces_the_last_training_evaluation(runs: dict[str, Path], algo: str) -> None:
    (row,) = eval_run(runs[algo], "--choice", "clean", "--episodes", "2")
    last = read_rows(runs[algo] / "progress.csv")[-1]
    assert row["normalized_mean"] == pytest.approx(float(last["normalized_score_mean"]))
    assert (runs[algo] / "eval" / "clean_ep2.csv").is_file()


@pytest.mark.parametrize("algo", ["mopo", "micro"])
def test_sim2real_grid_writes_csv_png_and_events(runs: dict[str, Path], algo: str) -> None:
    rows = eval_run(
        runs[algo], "--choice", "sim2real", "--episodes", "1", "--physics", "friction=0.5,1.5", "gravity=1:3:3"
    )
    out = runs[algo] / "eval"
    stem = "sim2real_friction=0.5,1.5_gravity=1-3x3_ep1"
    written = read_rows(out / f"{stem}.csv")
    assert len(rows) == len(written) == 6
    settings = {"choice": "sim2real", "task": TASK, "algo": algo, "run": runs[algo].name, "episodes": "1"}
    assert all(r.items() >= settings.items() and r["micro_gravity_quirk"] == "False" for r in written)
    assert [r["applied_gravity"] for r in written] == [r["gravity"] for r in written]
    assert {r["applied_mass"] for r in written} == {"1.0"}
    assert {(float(r["friction"]), float(r["gravity"])) for r in written} == {
        (f, g) for f in (0.5, 1.5) for g in (1.0, 2.0, 3.0)
    }
    assert (out / f"{stem}.png").stat().st_size > 0
    assert len(list((out / "tensorboard" / stem).glob("events.out.tfevents.*"))) == 1
    nominal = eval_run(runs[algo], "--choice", "clean", "--episodes", "1")[0]
    shifted = {(r["friction"], r["gravity"]): r["return_mean"] for r in rows}
    assert shifted[(0.5, 3.0)] != nominal["return_mean"]


def test_sim2real_single_axis_is_a_curve(runs: dict[str, Path]) -> None:
    rows = eval_run(runs["mopo"], "--choice", "sim2real", "--episodes", "1", "--physics", "mass=0.5:1.5:3")
    assert [r["mass"] for r in rows] == [0.5, 1.0, 1.5]
    assert (runs["mopo"] / "eval" / "sim2real_mass=0.5-1.5x3_ep1.png").is_file()


@pytest.mark.parametrize("algo", ["mopo", "micro"])
def test_min_q_attack_outputs_and_zero_budget_is_clean(runs: dict[str, Path], algo: str, data_env: None) -> None:
    rows = eval_run(
        runs[algo], "--choice", "attack", "--attack-mode", "min_Q", "--epsilons", "0,0.2", "--episodes", "2"
    )
    clean = eval_run(runs[algo], "--choice", "clean", "--episodes", "2")[0]
    assert [r["epsilon"] for r in rows] == [0.0, 0.2]
    assert rows[0]["return_mean"] == clean["return_mean"]
    out = runs[algo] / "eval"
    written = read_rows(out / "attack-min_Q_eps=0,0.2_cand50_ep2.csv")
    settings = {"choice": "attack", "attack_mode": "min_Q", "num_candidates": "50", "attack_steps": "0"}
    assert [r["epsilon"] for r in written] == ["0.0", "0.2"]
    assert all(r.items() >= {**settings, "episodes": "2", "algo": algo}.items() for r in written)
    assert (out / "attack-min_Q_eps=0,0.2_cand50_ep2.png").stat().st_size > 0


def test_gradient_attack_has_its_own_files(runs: dict[str, Path], data_env: None) -> None:
    eval_run(
        runs["micro"], "--choice", "attack", "--attack-mode", "action_diff", "--attack-steps", "2",
        "--epsilons", "0.1", "--episodes", "1", "--num-candidates", "5",
    )  # fmt: skip
    assert (runs["micro"] / "eval" / "attack-action_diff_eps=0.1_cand5_pgd2_ep1.csv").is_file()


# ------------------------------------------------------------------------------------------- names and settings
def test_compact_values_name_exact_values_readably() -> None:
    compact = evaluate_cli.compact_values
    assert compact([1.0]) == "1"
    assert compact(list(np.linspace(0.5, 1.5, 10))) == "0.5-1.5x10"
    assert compact([0.5, 1.0, 1.5]) == "0.5-1.5x3"  # a typed list that is exactly a linspace names the same
    assert compact([0.5, 1.5]) == "0.5,1.5"
    assert compact([0.00001, 1.0]) == "0.00001,1"  # no exponent, so no stray `-`
    irregular = [0.1, 0.15, 0.2, 0.35, 0.8, 1.3, 2.0, 3.0]
    token = compact(irregular)
    assert token.startswith("0.1-3x8~") and len(token) == len("0.1-3x8~") + 8
    assert compact(irregular) == token
    assert compact([0.1, 0.15000001, *irregular[2:]]) != token
    assert evaluate_cli.parse_values("1.5,0.5,1.5", "--epsilons") == [0.5, 1.5]
    assert list(evaluate_cli.parse_physics(["mass=1,2", "friction=0.5"])) == ["friction", "mass"]


def test_stems_encode_every_setting() -> None:
    base = {"task": TASK, "algo": "micro", "run": "seed0", "episodes": 10, "seed": 0, "run_seed": 0}
    axes = evaluate_cli.parse_physics([])
    sim2real = evaluate_cli.Evaluation("sim2real", **base, axes=axes)
    assert sim2real.stem == "sim2real_friction=0.5-1.5x10_gravity=0.5-5x10_ep10"
    quirk = evaluate_cli.Evaluation("sim2real", **base, axes=axes, micro_gravity_quirk=True)
    assert quirk.stem == "sim2real_friction=0.5-1.5x10_gravity=0.5-5x10_ep10_quirk-micro-gravity"
    assert "quirk" in quirk.caption.lower()
    epsilons = evaluate_cli.parse_values(evaluate_cli.DEFAULT_EPSILONS, "--epsilons")
    attack = {"attack_mode": "min_Q", "epsilons": epsilons, "num_candidates": 50}
    assert evaluate_cli.Evaluation("attack", **base, **attack).stem == "attack-min_Q_eps=0-0.2x10_cand50_ep10"
    pgd = evaluate_cli.Evaluation("attack", **{**base, "seed": 3}, **attack, attack_steps=5)
    assert pgd.stem == "attack-min_Q_eps=0-0.2x10_cand50_pgd5_ep10_seed3"
    random = evaluate_cli.Evaluation("attack", **base, **{**attack, "attack_mode": "random"})
    assert random.stem == "attack-random_eps=0-0.2x10_ep10"  # the candidate count plays no part in random
    assert evaluate_cli.Evaluation("clean", **base, micro_gravity_quirk=True).stem == "clean_ep10"


def test_help_states_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    parser = evaluate_cli.build_parser()
    for action in parser._actions:
        if action.dest not in ("help", "run"):
            assert "default" in (action.help or ""), action.dest
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: clean)", "(default: 10,", "friction=0.5:1.5:10 gravity=0.5:5:10", "(default: 0:0.2:10)"):
        assert default in text
    assert "eval/clean_ep10.csv" in text and "quirk-micro-gravity" in text


def isolated_run(runs: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the tiny MOPO run without the shared eval/ folder other tests write to."""
    return Path(shutil.copytree(runs["mopo"], tmp_path / runs["mopo"].name, ignore=shutil.ignore_patterns("eval")))


def snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()
    }


def test_settings_name_the_files_and_a_rerun_replaces_only_its_own(runs: dict[str, Path], tmp_path: Path) -> None:
    run = isolated_run(runs, tmp_path)
    out = run / "eval"
    grid_a = ["--choice", "sim2real", "--episodes", "1", "--physics", "friction=0.5,1.5"]
    grid_b = ["--choice", "sim2real", "--episodes", "1", "--physics", "friction=0.5:1.5:3"]
    run_seed = eval_run(run, *grid_a)[0]["seed"]
    eval_run(run, *grid_b)
    eval_run(run, "--choice", "clean", "--episodes", "1")
    eval_run(run, "--choice", "clean", "--episodes", "1", "--seed", str(run_seed + 7))
    stem_a, stem_b = "sim2real_friction=0.5,1.5_ep1", "sim2real_friction=0.5-1.5x3_ep1"
    clean_stems = ["clean_ep1", f"clean_ep1_seed{run_seed + 7}"]
    expected = {f"{stem}.{ext}" for stem in (stem_a, stem_b) for ext in ("csv", "png")}
    expected |= {f"{stem}.csv" for stem in clean_stems}
    assert {p.name for p in out.iterdir() if p.is_file()} == expected
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == sorted([stem_a, stem_b, *clean_stems])

    for path in out.rglob("*"):  # age every file, so any rewrite shows in its mtime
        if path.is_file():
            os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = snapshot(out)
    (out / f"{stem_a}.csv").write_text("stale\n")
    eval_run(run, *grid_a, "--seed", str(run_seed))  # the run's own seed is the default: same settings, same stem
    after = snapshot(out)

    def own(key: str) -> bool:
        return key.startswith((f"{stem_a}.", f"tensorboard/{stem_a}/"))

    others = {key: value for key, value in before.items() if not own(key)}
    assert {key: value for key, value in after.items() if not own(key)} == others  # untouched, bit for bit
    assert after[f"{stem_a}.csv"][1] == before[f"{stem_a}.csv"][1]  # the stale file is replaced, deterministically
    assert all(after[key][0] != before.get(key, (None,))[0] for key in after if own(key))
    assert len([key for key in after if own(key) and key.startswith("tensorboard/")]) == 1  # replaced, not piled up


def keep_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record every figure utils.plotting saves, for inspecting its titles, labels and colour limits."""
    figures, save = [], plotting._save

    def recording_save(fig, path) -> None:  # noqa: ANN001 - matplotlib Figure and a path, as _save takes
        figures.append(fig)
        save(fig, path)

    monkeypatch.setattr(plotting, "_save", recording_save)
    return figures


def test_quirk_flag_shows_in_the_name_the_csv_and_the_figure(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = isolated_run(runs, tmp_path)
    figures = keep_figures(monkeypatch)
    grid = ["--choice", "sim2real", "--episodes", "1", "--physics", "gravity=0.5,2"]
    quirk = eval_run(run, *grid, "--micro-gravity-quirk")
    plain = eval_run(run, *grid)
    out = run / "eval"
    written = read_rows(out / "sim2real_gravity=0.5,2_ep1_quirk-micro-gravity.csv")
    assert (out / "sim2real_gravity=0.5,2_ep1_quirk-micro-gravity.png").is_file()
    assert (out / "sim2real_gravity=0.5,2_ep1.csv").is_file()
    assert [r["micro_gravity_quirk"] for r in written] == ["True", "True"]
    assert [r["gravity"] for r in written] == ["0.5", "2.0"] and {r["applied_gravity"] for r in written} == {"1.0"}
    assert quirk[0]["return_mean"] == quirk[1]["return_mean"] != plain[1]["return_mean"]  # hopper: gravity kept
    assert "quirk" in figures[0].axes[0].get_title().lower()
    assert "quirk" not in figures[1].axes[0].get_title().lower()


def colour_limits(fig) -> set[tuple[float, float]]:  # noqa: ANN001 - a matplotlib Figure
    return {tuple(ax.images[0].get_clim()) for ax in fig.axes if ax.images}


def colour_bar_label(fig) -> str:  # noqa: ANN001 - a matplotlib Figure
    (label,) = [ax.get_ylabel() for ax in fig.axes if "colour range" in ax.get_ylabel()]
    return label


def test_heatmap_panels_share_one_stated_colour_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = keep_figures(monkeypatch)
    grids = [np.array([[0.0, 10.0], [20.0, 30.0]]), np.array([[40.0, 50.0], [60.0, 100.0]]), np.full((2, 2), 55.0)]
    args = (grids, [1, 2], [1, 2], "friction", "gravity", ["a", "b", "c"], "t", "normalized score")
    assert plotting.heatmaps(tmp_path / "data.png", *args) == (0.0, 100.0)
    assert colour_limits(figures[-1]) == {(0.0, 100.0)}
    assert "colour range 0 to 100\nshared by all panels" in colour_bar_label(figures[-1])
    assert plotting.heatmaps(tmp_path / "fixed.png", *args, vmin=-10.0, vmax=50.0) == (-10.0, 50.0)
    assert colour_limits(figures[-1]) == {(-10.0, 50.0)}
    assert "colour range -10 to 50" in colour_bar_label(figures[-1])
    assert plotting.heatmaps(tmp_path / "low.png", *args, vmin=5.0) == (5.0, 100.0)


def test_three_axes_draw_one_panel_per_mass_on_a_shared_range(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = isolated_run(runs, tmp_path)
    figures = keep_figures(monkeypatch)
    physics = ["mass=0.5,1.5", "gravity=1,2", "friction=0.5,1.5"]  # any order: friction rows, gravity columns
    rows = eval_run(run, "--choice", "sim2real", "--episodes", "1", "--physics", *physics)
    assert (run / "eval" / "sim2real_friction=0.5,1.5_gravity=1,2_mass=0.5,1.5_ep1.png").is_file()
    scores = [r["normalized_mean"] for r in rows]
    panels = [ax for ax in figures[0].axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["mass ×0.5", "mass ×1.5"]
    assert colour_limits(figures[0]) == {(min(scores), max(scores))}
    assert "shared by all panels" in colour_bar_label(figures[0])
    eval_run(run, "--choice", "sim2real", "--episodes", "1", "--physics", *physics, "--vmin", "0", "--vmax", "100")
    assert colour_limits(figures[1]) == {(0.0, 100.0)}
    assert "colour range 0 to 100" in colour_bar_label(figures[1])


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: evaluate_cli.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_input(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = str(runs["mopo"])
    err = cli_error(["--run", run, "--task", "walker2d-medium-v2"], capsys)
    assert "hopper-random-gen" in err and "walker2d-medium-v2" in err
    err = cli_error(["--run", run, "--choice", "sim2real", "--physics", "wind=1,2"], capsys)
    assert "unknown physics axis wind" in err
    err = cli_error(["--run", run, "--choice", "sim2real", "--physics", "friction=a:b"], capsys)
    assert "friction" in err
    err = cli_error(["--run", run, "--choice", "sim2real", "--physics", "friction=1", "friction=2"], capsys)
    assert "friction twice" in err
    err = cli_error(["--run", run, "--choice", "sim2real", "--physics", "friction=nan"], capsys)
    assert "finite, non-negative" in err
    err = cli_error(["--run", run, "--choice", "sim2real", "--physics", "gravity=1:2:0"], capsys)
    assert "gravity" in err
    err = cli_error(["--run", run, "--choice", "attack", "--epsilons=-0.1,0.2"], capsys)
    assert "--epsilons" in err and "non-negative" in err
    err = cli_error(["--run", run, "--choice", "sim2real", "--vmin", "5", "--vmax", "1"], capsys)
    assert "--vmin 5 must be below --vmax 1" in err
    err = cli_error(["--run", str(tmp_path)], capsys)
    assert "not a run directory" in err

    no_checkpoint = tmp_path / "fresh"
    no_checkpoint.mkdir()
    shutil.copy(runs["mopo"] / "config.yaml", no_checkpoint / "config.yaml")
    err = cli_error(["--run", str(no_checkpoint)], capsys)
    assert "no checkpoint" in err

    mixed = tmp_path / "mixed"
    shutil.copytree(runs["mopo"], mixed)
    state = torch.load(mixed / "checkpoints" / "checkpoint.pt", weights_only=False)
    state["task"] = "walker2d-random-gen"
    torch.save(state, mixed / "checkpoints" / "checkpoint.pt")
    err = cli_error(["--run", str(mixed)], capsys)
    assert "walker2d-random-gen" in err and "hopper-random-gen" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["--choice", "clean", "--physics", "friction=2"],
            "--physics belongs to --choice sim2real, not --choice clean",
        ),  # noqa: E501
        (["--physics", "friction=2"], "--physics belongs to --choice sim2real, not --choice clean; drop it or pass"),
        (["--choice", "clean", "--micro-gravity-quirk"], "--micro-gravity-quirk belongs to --choice sim2real"),
        (["--choice", "attack", "--vmax", "90"], "--vmax belongs to --choice sim2real, not --choice attack"),
        (
            ["--choice", "sim2real", "--attack-mode", "min_Q", "--epsilons", "0.3"],
            "--attack-mode and --epsilons belong to --choice attack, not --choice sim2real; drop them or pass "
            "--choice attack",
        ),
        (["--choice", "clean", "--attack-steps", "3"], "--attack-steps belongs to --choice attack, not --choice clean"),
        (["--choice", "attack", "--num-candidates", "5"], "--num-candidates applies to --attack-mode action_diff"),
        (["--num-candidates", "5"], "--num-candidates belongs to --choice attack, not --choice clean"),
    ],
)
def test_flags_of_another_choice_are_refused_before_any_work(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    """A choice's own flags under another choice used to be ignored in silence; now one line names the flag and the
    choice it belongs to, and nothing is evaluated or written."""
    run = isolated_run(runs, tmp_path)
    assert needle in cli_error(["--run", str(run), "--no-progress", *argv], capsys)
    assert not (run / "eval").exists()


def test_the_choice_a_refusal_names_takes_the_flag(runs: dict[str, Path], tmp_path: Path, data_env: None) -> None:
    run = isolated_run(runs, tmp_path)
    (row,) = eval_run(run, "--choice", "sim2real", "--physics", "friction=2", "--episodes", "1")
    assert row["friction"] == 2.0 and (run / "eval" / "sim2real_friction=2_ep1.csv").is_file()
    rows = eval_run(run, "--choice", "attack", "--attack-mode", "min_Q", "--epsilons", "0.3", "--episodes", "1")
    assert [r["epsilon"] for r in rows] == [0.3]


@pytest.fixture(scope="module")
def bc_run(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BC run: a deterministic policy without critics."""
    log_dir = tmp_path_factory.mktemp("bc_log")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
        train.main(["--task", TASK, "--algo", "bc", "--log-dir", str(log_dir), "--no-progress", "--set", "epochs=1",
                    "steps_per_epoch=5", "eval_episodes=1"])  # fmt: skip
    return next((log_dir / TASK / "bc").iterdir())


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["--attack-mode", "action_diff"],
            "action_diff needs a stochastic (Gaussian) policy, and this one is "
            "deterministic; this policy takes random; e.g. python eval.py",
        ),
        (
            ["--attack-mode", "min_Q"],
            "min_Q needs the policy's critics, and this algorithm has none; this policy takes "
            "random; e.g. python eval.py",
        ),
        (
            ["--attack-steps", "2"],
            "the random attack has no objective to follow and this policy takes no other; drop "
            "--attack-steps; e.g. python eval.py",
        ),
    ],
)
def test_attack_advice_names_only_modes_the_policy_takes(
    bc_run: Path, capsys: pytest.CaptureFixture[str], data_env: None, argv: list[str], needle: str
) -> None:
    """BC is refused action_diff and min_Q alike: the refusal offers neither, and the command it suggests runs."""
    err = cli_error(["--run", str(bc_run), "--no-progress", "--choice", "attack", *argv], capsys)
    assert err.startswith("error: bc run: ") and needle in err
    command = shlex.split(err.rsplit("python eval.py ", 1)[1])
    assert command == ["--run", str(bc_run), "--choice", "attack", "--attack-mode", "random"]
    rows = evaluate_cli.main([*command, "--epsilons", "0,0.1", "--episodes", "1", "--no-progress"])
    assert [row["epsilon"] for row in rows] == [0.0, 0.1]


def test_a_bad_value_in_a_runs_config_is_fixed_in_that_file(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """eval.py has no --set: its config refusal points at the run's config.yaml alone."""
    run = isolated_run(runs, tmp_path)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("  gamma: 0.99\n", "  gamma: 1.0\n", 1))
    err = cli_error(["--run", str(run), "--choice", "clean"], capsys)
    assert "sac.gamma=1.0" in err and err.endswith(f"change the value in {config}") and "--set" not in err
