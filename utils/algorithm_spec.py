"""What shared code knows of an algorithm: one `AlgorithmSpec` record per `--algo` name.

train.py, plot.py, score.py, sweep.py and the tools in utils/ ask this registry which loop trains an algorithm, what
its steps count, how long a run of it is planned to be, whether it fits a model first, whether seeds stack and which
named figures it has, instead of testing config types or algorithm names. Each algorithm's own module declares its
record beside its classes; `algos/__init__.py` registers them all when a program imports `algos` (every entry point
does before it reads a run), as `register_config` fills config.py's registry.

This module sits in the lowest layer and imports no project module at run time (the annotations name config and
algos classes only for readers and type checkers), so config.py and the tools can read it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the classes a record names live in layers above this one
    from algos.base import Algorithm
    from algos.train_run import RunRunner
    from config import RunConfig


class RegistryNotFilled(RuntimeError):
    """The registry was read before any algorithm registered itself: a program that reads configs forgot to import
    `algos` first. A bug in that program, not a user's mistake, so it is no UserError."""


class Loop(enum.Enum):
    """Which training loop train.py runs an algorithm's runs with."""

    EPOCHS = "epochs"  # algos/trainer.py: epochs of minibatch updates on the dataset (and model rollouts)
    NPG = "npg"  # algos/npg_trainer.py: iterations of model fits and NPG steps, online or on a dataset
    STUDY = "study"  # the runner is its own loop: it fits and scores models and trains no policy


class Unit(enum.Enum):
    """What the logged step of an algorithm's runs counts; its value is the x-axis label of their curves."""

    GRADIENT_STEPS = "Gradient steps"
    NPG_ITERATIONS = "Iterations"
    ENV_SAMPLES = "Environment samples"
    STUDY_ITERATIONS = "Iteration i (model θ_i)"

    def budget(self, steps: int) -> str:
        """A planned length in this unit as budgets and tables write it: `100 iterations`, `60k steps`."""
        if self is Unit.NPG_ITERATIONS:
            return f"{steps} iterations"
        return f"{steps // 1000}k steps" if steps % 1000 == 0 else f"{steps} steps"


class ModelUse(enum.Enum):
    """Whether and how an algorithm learns a dynamics model, which decides what train.py does before training."""

    NONE = "none"  # learns from the data alone
    QUERIED = "queried"  # fits (or loads: dynamics_path) an ensemble first, saved as dynamics.pt; its updates query it
    ROLLOUTS = "rollouts"  # as QUERIED, and the trainer branches model rollouts from it into a model buffer
    REFITTED = "refitted"  # fits its models inside its own loop, every iteration (no dynamics.pt, no dynamics_only)

    @property
    def fitted_first(self) -> bool:
        """The model is fitted before training and saved in the run dir: `dynamics_path` and `dynamics_only` apply."""
        return self in (ModelUse.QUERIED, ModelUse.ROLLOUTS)


@dataclass(frozen=True)
class RunFigure:
    """A figure drawn from one run's own files rather than from its logged curves, written as
    `<task>_<algo>_seed<N>_<name>.png`."""

    name: str  # the file name's last part
    draw: Callable[[Path, Path, str], None]  # (run dir, PNG path, title); refuses with a UserError what it cannot draw
    help: str  # what `plot.py --help` says it is


@dataclass(frozen=True)
class FigureSet:
    """`plot.py --figures NAME`: figures that only one algorithm family's runs log, drawn from those runs. Algorithms
    that share a set (the study's four methods) name the same object."""

    name: str
    what: str  # whose runs they are, as the refusal of other runs names them
    curves: Mapping[str, str] = field(default_factory=dict)  # metric -> figure name (`<task>_<name>.png`)
    axis_labels: Mapping[str, str] = field(default_factory=dict)  # y-axis label of each metric the family logs
    run_figure: RunFigure | None = None  # instead of curves over seeds: one figure per run


def no_planned_length(config: Mapping[str, Any]) -> int | None:
    """Runs that end at a number of samples known only when they get there (online), or whose steps count no
    planned updates (the study)."""
    return None


def planned_updates(config: Mapping[str, Any]) -> int | None:
    """The epochs loop's last step: `epochs` x `steps_per_epoch` gradient steps (None if the config lacks them)."""
    epochs, steps = config.get("epochs"), config.get("steps_per_epoch")
    return epochs * steps if isinstance(epochs, int) and isinstance(steps, int) else None


@dataclass(frozen=True)
class AlgorithmSpec:
    """One algorithm as shared code sees it. Declared once, in the algorithm's module, beside its classes."""

    name: str  # `--algo NAME`, the `algo` key of its run configs
    title: str  # as tables and help texts write it (MOPO, MOReL)
    config: type[RunConfig]  # its config dataclass (registered under `name` with `register_config`)
    runner: type[Algorithm] | type[RunRunner]  # what train.py builds: the algorithm, or the study that runs itself
    loop: Loop
    unit: Unit  # what its logged steps count
    # The step a finished run ends at, read from its saved config (a plain mapping: Run.config); None when unknown.
    planned_length: Callable[[Mapping[str, Any]], int | None]
    model: ModelUse
    trainer: type[RunRunner] | None = None  # its own loop class (None: its Loop's, `algos.runner_class`)
    figure_sets: tuple[FigureSet, ...] = ()

    @property
    def online(self) -> bool:
        """Learns from its own environment samples (or, the study, data it generates), on tasks without a dataset;
        its config class declares it (envs/task_config.py reads it there to match tasks)."""
        return self.config.online

    @property
    def needs_dataset(self) -> bool:
        """Runs on an offline task and reads its dataset."""
        return not self.config.online

    @property
    def study(self) -> bool:
        """Trains no policy (eval.py and learning checks have nothing to evaluate)."""
        return self.loop is Loop.STUDY

    @property
    def stackable(self) -> bool:
        """`--stack-seeds` applies: an epochs-loop algorithm whose update takes a leading seed dimension (its class
        declares `stackable`, which `TrainableModule.stack` checks)."""
        return self.loop is Loop.EPOCHS and self.runner.stackable


_SPECS: dict[str, AlgorithmSpec] = {}


def register_algorithm(spec: AlgorithmSpec) -> AlgorithmSpec:
    """Add an algorithm's record (algos/__init__.py does, for every built-in one); a name registers once, and a
    figure-set name belongs to one set."""
    if _SPECS.get(spec.name, spec) is not spec:
        raise ValueError(f"algorithm {spec.name!r} is already registered")
    for figures in spec.figure_sets:
        other = _figure_sets().get(figures.name)
        if other is not None and other[0] is not figures:
            raise ValueError(f"figure set {figures.name!r} is already another set of {', '.join(other[1])}")
    _SPECS[spec.name] = spec
    return spec


def algorithm_specs() -> dict[str, AlgorithmSpec]:
    """Every registered algorithm's record by name, in registration order. An empty registry means the caller never
    imported `algos`; saying so beats an "unknown algorithm" that lists none."""
    if not _SPECS:
        raise RegistryNotFilled(
            "no algorithm has registered its record: import algos (which registers every built-in one) before asking "
            "what an algorithm is; entry points such as train.py, sweep.py, plot.py and score.py do so at the top"
        )
    return _SPECS


def algorithm_spec(name: str) -> AlgorithmSpec:
    """The record of a registered algorithm (configs and runs read back through the registry always have one)."""
    return algorithm_specs()[name]


def known_algorithm(name: str) -> AlgorithmSpec | None:
    """The record of `name`, or None for an algorithm this code lacks (run directories of other versions still
    load: plot.py and score.py read them as plain YAML)."""
    return algorithm_specs().get(name)


def _figure_sets() -> dict[str, tuple[FigureSet, tuple[str, ...]]]:
    """Every figure set registered so far with the algorithms that declare it, without the empty-registry check."""
    sets: dict[str, tuple[FigureSet, tuple[str, ...]]] = {}
    for spec in _SPECS.values():
        for figures in spec.figure_sets:
            owners = sets.get(figures.name, (figures, ()))[1]
            sets[figures.name] = (figures, (*owners, spec.name))
    return sets


def figure_sets() -> dict[str, tuple[FigureSet, tuple[str, ...]]]:
    """`plot.py --figures` choices: each set and the algorithms whose runs it is drawn from."""
    algorithm_specs()
    return _figure_sets()
