"""Every algorithm's record (utils/algorithm_spec.py): one per registered config, in agreement with its classes, and
each field as shared code reads it (planned length, x-axis unit, budget text, model fitted first, stacking, figure
sets). Shared code asks the registry, so train.py, plot.py, score.py, sweep.py and utils/ name no algorithm."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

import algos  # noqa: F401  (fills the registry)
import plot
import train
from algos import ALGORITHMS, STUDIES, build_algorithm
from config import (
    LearnedModelConfig,
    ModelBasedConfig,
    ModelBasedNPGConfig,
    config_classes,
    config_to_dict,
    load_config,
)
from utils.algorithm_spec import (
    FigureSet,
    Loop,
    ModelUse,
    Unit,
    algorithm_spec,
    algorithm_specs,
    figure_sets,
    register_algorithm,
)
from utils.errors import UserError
from utils.launch import saved_its_model_only
from utils.runs import Run

REPO = Path(__file__).resolve().parents[1]
OFFLINE_TASK = "hopper-medium-v2"
ONLINE_TASK = "Hopper-v4"
STUDY_TASK = "CustomPendulum-v0"


def run_of(algo: str, task: str, *overrides: str) -> Run:
    """A run of `algo` as plot.py and score.py read it back: its merged config as a plain mapping."""
    cfg = load_config(algo, task, overrides=list(overrides))
    return Run(REPO / "log" / "never-written", task, algo, cfg.seed, config_to_dict(cfg))


def test_every_registered_config_has_one_record_beside_its_classes() -> None:
    specs = algorithm_specs()
    assert set(specs) == set(config_classes())
    for name, spec in specs.items():
        assert spec.name == name and spec.config is config_classes()[name], name
        assert spec.runner.__module__ == spec.config.__module__, name  # declared where the algorithm lives
    assert {name for name, spec in specs.items() if not spec.study} == set(ALGORITHMS)
    assert {name for name, spec in specs.items() if spec.study} == set(STUDIES)
    assert all(ALGORITHMS[name] is spec.runner for name, spec in specs.items() if not spec.study)


def test_records_agree_with_the_config_blocks_and_classes_they_describe() -> None:
    """What a record declares is what its config's shared blocks and its classes implement."""
    for name, spec in algorithm_specs().items():
        assert spec.model.fitted_first == issubclass(spec.config, LearnedModelConfig), name
        assert (spec.model is ModelUse.ROLLOUTS) == issubclass(spec.config, ModelBasedConfig), name
        assert (spec.loop is Loop.NPG) == issubclass(spec.config, ModelBasedNPGConfig), name
        assert spec.online == spec.config.online and spec.needs_dataset == (not spec.online), name
        assert spec.trainer is None or spec.loop is Loop.EPOCHS, name
        assert spec.stackable == (spec.loop is Loop.EPOCHS and spec.runner.stackable), name
    stackable = sorted(name for name, spec in algorithm_specs().items() if spec.stackable)
    assert stackable == ["bc", "bcq", "combo", "cql", "micro", "mopo", "td3bc"]


def test_planned_length_is_the_records_reading_of_the_config() -> None:
    """Run.final_step (score.py's unfinished note, publish's check) asks the record: WMOPO's epochs count one M-step
    of em_iterations, MOReL's steps are its num_iter iterations, online and study runs have none, and an algorithm
    this code lacks has an unknown one."""
    assert run_of("wmopo", OFFLINE_TASK, "epochs=3", "steps_per_epoch=100", "em_iterations=4").final_step == 1200
    assert run_of("morel", OFFLINE_TASK, "num_iter=7").final_step == 7
    assert run_of("mopo", OFFLINE_TASK, "epochs=5", "steps_per_epoch=10").final_step == 50
    assert run_of("bc", OFFLINE_TASK, "epochs=2").final_step == 2000
    assert run_of("pal", ONLINE_TASK).final_step is None
    assert run_of("wmopo-alg2", STUDY_TASK).final_step is None
    assert Run(REPO, OFFLINE_TASK, "no-such-algo", 0, {"epochs": 2, "steps_per_epoch": 3}).final_step is None


def test_planned_epochs_is_what_each_family_counts() -> None:
    """The checkpoint counter sweeps and publishing compare: epochs, iterations, M-steps x epochs, models + 1."""
    assert load_config("mopo", OFFLINE_TASK, overrides=["epochs=5"]).planned_epochs() == 5
    assert load_config("morel", OFFLINE_TASK, overrides=["num_iter=7"]).planned_epochs() == 7
    assert load_config("pal", ONLINE_TASK, overrides=["num_iter=3"]).planned_epochs() == 3
    assert load_config("wmopo", OFFLINE_TASK, overrides=["epochs=3", "em_iterations=2"]).planned_epochs() == 6
    assert load_config("wmopo-alg2", STUDY_TASK, overrides=["iterations=4"]).planned_epochs() == 5


def test_budget_text_is_in_the_records_unit() -> None:
    """Tables' budget column (and the learning check's) in the unit the record names, not guessed from keys."""
    assert run_of("morel", OFFLINE_TASK, "num_iter=100").budget == "100 iterations"
    assert run_of("mopo", OFFLINE_TASK, "epochs=60").budget == "60k steps"
    assert run_of("mopo", OFFLINE_TASK, "epochs=3", "steps_per_epoch=500").budget == "1500 steps"
    assert run_of("pal", ONLINE_TASK).budget == "online"
    assert Unit.NPG_ITERATIONS.budget(5) == "5 iterations" and Unit.GRADIENT_STEPS.budget(2000) == "2k steps"


def test_x_axis_is_the_records_unit() -> None:
    assert plot.x_unit("hopper-medium-gen", "mopo", "normalized_score_mean") == "Gradient steps"
    assert plot.x_unit("hopper-medium-gen", "mago", "dynamics/holdout_loss") == "Dynamics model epochs"
    assert plot.x_unit("hopper-medium-gen", "morel", "dynamics/holdout_loss") == "Iterations"
    assert plot.x_unit(ONLINE_TASK, "mal", "normalized_score_mean") == "Environment samples"
    assert plot.x_unit(STUDY_TASK, "wmopo-erm", "study/score") == "Iteration i (model θ_i)"
    # An algorithm this code lacks: environment samples on online tasks, else gradient steps.
    assert plot.x_unit(ONLINE_TASK, "no-such-algo", "normalized_score_mean") == "Environment samples"
    assert plot.x_unit("hopper-medium-gen", "no-such-algo", "dynamics/holdout_loss") == "Dynamics model epochs"


def test_only_a_model_fitted_first_makes_a_run_that_saved_its_model_only(tmp_path: Path) -> None:
    """dynamics_only applies where the record says the model is fitted before training (and the key exists)."""
    (tmp_path / "dynamics.pt").write_bytes(b"")
    assert saved_its_model_only(load_config("mopo", OFFLINE_TASK, overrides=["dynamics_only=true"]), tmp_path)
    assert not saved_its_model_only(load_config("mopo", OFFLINE_TASK), tmp_path)
    assert not saved_its_model_only(load_config("bc", OFFLINE_TASK), tmp_path)
    assert not saved_its_model_only(load_config("morel", OFFLINE_TASK), tmp_path)


def test_the_stack_seeds_help_lists_the_stackable_records(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at hyphens otherwise
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "as one batched computation (MOPO, MICRO, BC, BCQ, TD3+BC, CQL, COMBO; each seed still writes its own run dir"
        in text
    )
    assert f"algorithm: {', '.join(sorted(config_classes()))}" in text


def test_figure_sets_come_from_the_records(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    sets = figure_sets()
    assert {name: owners for name, (_, owners) in sets.items()} == {
        "mago": ("mago",),
        "wmopo-em": ("wmopo",),
        "wmopo": tuple(STUDIES),
        "wmopo-states": tuple(STUDIES),
    }
    with pytest.raises(SystemExit):
        plot.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{mago,wmopo,wmopo-em,wmopo-states}" in text
    assert "a named set of metrics (replaces --metric); wmopo-states: the Pendulum study's Figure 1 per run" in text
    out = Path("out")
    assert plot.figure_path(out, "t", "monitor/adv_q_target/mean") == out / "t_adv-q.png"
    assert plot.figure_path(out, "t", "eval/episode_reward") == out / "t_real-return.png"
    assert plot.figure_path(out, "t", "normalized_score_mean") == out / "t.png"
    assert plot.axis_label("study/score") == "Score −L(θ_i; w)"
    assert plot.axis_label("monitor/ensemble_std/mean") == "log ensemble std"
    assert plot.axis_label("return_mean") == "Return" and plot.axis_label("loss/critic") == "loss/critic"


def test_a_figure_set_refuses_runs_of_other_algorithms_by_its_record() -> None:
    runs = [run_of("mopo", OFFLINE_TASK)]
    with pytest.raises(UserError) as err:
        plot.check_figure_runs("mago", runs)
    assert str(err.value) == (
        "--figures mago draws MAGO runs (algo mago), but the 1 runs given are mopo runs; pass MAGO run directories"
    )
    with pytest.raises(UserError, match=r"WMOPO Pendulum study runs \(algo wmopo-alg1, wmopo-alg1-detached, "):
        plot.check_figure_runs("wmopo-states", runs)


def test_attack_critics_are_what_the_algorithm_says() -> None:
    """eval.py's value-based attacks query the critics an algorithm hands out; BC and the NPG family have none."""
    for name in ("mopo", "bcq", "mago"):
        algo = build_algorithm(load_config(name, OFFLINE_TASK), 11, 3)
        assert algo.attack_critics() is algo.critics, name  # type: ignore[attr-defined]
    for name, task in (("bc", OFFLINE_TASK), ("morel", OFFLINE_TASK), ("pal", ONLINE_TASK)):
        assert build_algorithm(load_config(name, task), 11, 3).attack_critics() is None, name


def test_register_algorithm_refuses_a_second_record_or_figure_set_of_one_name() -> None:
    mopo = algorithm_spec("mopo")
    assert register_algorithm(mopo) is mopo  # the same record again changes nothing
    with pytest.raises(ValueError, match="'mopo' is already registered"):
        register_algorithm(dataclasses.replace(mopo, title="Another"))
    clash = dataclasses.replace(mopo, name="mopo-clash", figure_sets=(FigureSet("mago", "Another"),))
    with pytest.raises(ValueError, match="figure set 'mago' is already another set of mago"):
        register_algorithm(clash)
    assert "mopo-clash" not in algorithm_specs()


def test_reading_the_registry_before_algos_is_a_programming_error() -> None:
    code = (
        "import utils.algorithm_spec as registry\n"
        "try:\n"
        "    registry.algorithm_specs()\n"
        "except registry.RegistryNotFilled as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no algorithm has registered its record: import algos")


# ------------------------------------------------------------------------------------------- no algorithm by name
SHARED_FILES = (
    "train.py",
    "plot.py",
    "score.py",
    "sweep.py",
    *sorted(f"utils/{p.name}" for p in REPO.glob("utils/*.py")),
)


def _docstrings(tree: ast.AST) -> set[int]:
    """The docstring nodes of a module, its classes and functions (prose may name algorithms; code may not)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _identifier_words(name: str) -> set[str]:
    """`WMOPOTrainer` -> wmopo, trainer; `run_morel` -> run, morel; the whole name lowered too."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", name)
    return {word.lower() for word in words} | set(name.lower().split("_")) | {name.lower()}


def algorithm_names_in_code(path: Path) -> list[str]:
    """`line: name` for every registered algorithm name in a file's code: a string constant (docstrings aside) that
    holds it as a word (`-` and `_` separate words), an identifier made of it, or an algorithm's own class."""
    specs = algorithm_specs()
    names = set(specs)
    classes = {cls.__name__ for spec in specs.values() for cls in (spec.config, spec.runner, spec.trainer) if cls}
    patterns = {name: re.compile(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z0-9])") for name in names}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        identifier = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found += [f"{node.lineno}: {n}" for n, pattern in patterns.items() if pattern.search(node.value.lower())]
        elif isinstance(node, ast.Name):
            identifier = node.id
        elif isinstance(node, ast.Attribute):
            identifier = node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            identifier = node.name
        elif isinstance(node, ast.arg):
            identifier = node.arg
        elif isinstance(node, ast.alias):
            identifier = node.asname or node.name.rsplit(".", 1)[-1]
        if identifier is not None:
            hits = (_identifier_words(identifier) & names) | ({identifier} & classes)
            found += [f"{getattr(node, 'lineno', '?')}: {hit}" for hit in sorted(hits)]
    return found


def test_the_checker_sees_names_in_code_but_not_in_prose(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Docstrings may say mopo."""\n'
        "# comments too: morel\n"
        'X = {"morel"}\n'
        'HELP = "e.g. wmopo-states"\n'
        "from algos.wmopo import WMOPOTrainer\n"
        "def run_mago(cfg): return cfg.normal\n",
        encoding="utf-8",
    )
    found = sorted(algorithm_names_in_code(sample))
    assert found == ["3: morel", "4: wmopo", "5: WMOPOTrainer", "5: wmopo", "6: mago"]


@pytest.mark.parametrize("name", SHARED_FILES)
def test_shared_code_names_no_algorithm(name: str) -> None:
    """train.py, plot.py, score.py, sweep.py and utils/ ask the registry; algorithm names stay in algos/, configs/,
    docs/, tests/ and bench/ presets."""
    assert algorithm_names_in_code(REPO / name) == []
