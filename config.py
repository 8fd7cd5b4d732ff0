"""Typed run configuration: dataclass defaults <- configs/<algo>/defaults.yaml <- configs/<algo>/<task>.yaml
<- --config FILE.yaml <- --set key=value / CLI flags.

This module holds the layering machinery and the blocks algorithms share (`RunConfig`, `OfflineConfig`,
`ModelBasedConfig`, `dynamics`, `sac`, `npg`, `termination`). Each algorithm's own dataclass lives beside it in
algos/<algo>.py, registered by name with `@register_config("<algo>")` and validated by the shared rules plus its
class's `rules`. Nested blocks are addressed with dotted keys (``--set dynamics.max_epochs=5``).

config.py imports neither `algos` nor `envs` (tests/test_layers.py holds the layers): the registry is filled when a
program imports `algos`, which every entry point does before it reads configs, and the functions that need the
task registry as well live in envs/task_config.py.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tempfile
import types
import typing
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cache, reduce
from pathlib import Path
from typing import Any

import yaml

from models.dynamics_config import DynamicsConfig
from utils.algorithm_spec import RegistryNotFilled as RegistryNotFilled  # raised here too; lives with the records
from utils.errors import UserError


@dataclass
class TerminationConfig:
    # False reproduces MOPO/OfflineRL-Kit's hopper check `abs(obs[1:] < 100)` (no lower bound), with which the
    # published numbers were made; True uses the corrected `abs(obs[1:]) < 100`.
    strict: bool = False


@dataclass
class SACConfig:
    """SAC core (docs/sac.md). Defaults are OfflineRL-Kit's; configs/mopo/mopo_tf.yaml holds MOPO-TF's."""

    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 1e-4
    gamma: float = 0.99
    tau: float = 0.005
    num_critics: int = 2
    auto_alpha: bool = True
    alpha: float = 0.2  # fixed alpha when auto_alpha is false
    target_entropy: float | None = None  # None: -|A|
    alpha_max: float | None = 1.0  # clamp on alpha after each update (KIT); None disables
    lr_schedule: str = "cosine"  # "cosine" anneals the actor lr over `epochs`; "none" keeps it fixed
    log_std_min: float = -5.0
    log_std_max: float = 2.0


@dataclass
class NPGConfig:
    """Natural policy gradient core (docs/npg.md): mjrl's Gaussian MLP policy, MLP baseline and NPG step."""

    policy_hidden_dims: list[int] = field(default_factory=lambda: [64, 64])
    init_log_std: float = 0.0
    min_log_std: float = -2.5
    max_log_std: float = 1.0
    step_size: float = 0.05  # mjrl's normalised step δ = α² gᵀF⁻¹g: a step moves the policy by mean KL ≈ δ/2
    cg_iters: int = 25
    cg_damping: float = 1e-3
    # CG's start: "gradient" = x₀ = g, as mjrl's npg_cg.py; "zero" = x₀ = 0, the textbook start.
    cg_init: str = "gradient"
    # mjrl's train_step default. The PAL/MAL config files say 0.999, but run_model_based_npg.py never passes gamma,
    # so the authors' PAL/MAL runs used 0.995; MOReL's run_morel.py does pass its config's 0.999 (its preset).
    gamma: float = 0.995
    gae_lambda: float = 0.97
    baseline_hidden_dims: list[int] = field(default_factory=lambda: [128, 128])
    baseline_lr: float = 1e-3
    baseline_weight_decay: float = 1e-3
    baseline_batch_size: int = 128
    baseline_epochs: int = 1


@dataclass
class RunConfig:
    """Keys every algorithm understands, offline or online."""

    online: typing.ClassVar[bool] = False  # True: learns from its own environment samples, on tasks without data
    families: typing.ClassVar[tuple[str, ...] | None] = None  # the env families it runs on (None: any)

    task: str = ""
    algo: str = ""
    # A user's own task: its task file (docs/custom_tasks.md). Set from --task FILE.yaml; resume, eval.py and sweeps
    # read the task back from it.
    task_file: str | None = None
    seed: int = 0
    device: str = "cpu"
    log_dir: str = "log"
    eval_episodes: int = 10
    save_every: int = 10
    termination: TerminationConfig = field(default_factory=TerminationConfig)

    def planned_epochs(self) -> int:
        """The `epoch` counter a finished run's checkpoint holds (sweeps and publishing compare it): each family's
        config says what it counts."""
        raise NotImplementedError(f"{type(self).__name__} does not say how many epochs a finished run has")

    def decision_repeat(self) -> int:
        """Environment steps per decision when the run's policy is evaluated: 1 unless the config repeats actions."""
        return 1


@dataclass
class DatasetConfig(RunConfig):
    """Keys of every algorithm that learns from an offline dataset."""

    dataset_path: str | None = None
    # auto: local hdf5 (dataset_path, $D4RL_DATASET_DIR, ~/.d4rl/datasets), then the d4rl package if importable,
    # then download; "hdf5", "d4rl" and "minari" force one backend.
    dataset_backend: str = "auto"
    download: bool = True


@dataclass
class OfflineConfig(DatasetConfig):
    """Keys of the offline algorithms trained by epochs of minibatch updates (algos/trainer.py)."""

    epochs: int = 3000
    steps_per_epoch: int = 1000
    batch_size: int = 256
    eval_every: int = 1

    def planned_epochs(self) -> int:
        """Its epochs of `steps_per_epoch` updates."""
        return self.epochs

    def real_fraction(self) -> float:
        """The share of each update's batch drawn from the dataset (the rest from model rollouts): all of it."""
        return 1.0


@dataclass
class LearnedModelConfig(OfflineConfig):
    """Keys of every offline algorithm that fits (or loads) an ensemble dynamics model before training."""

    dynamics_path: str | None = None
    dynamics_only: bool = False
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)


@dataclass
class ModelBasedConfig(LearnedModelConfig):
    """Keys of the offline model-based (MBPO-style) family: SAC on real data plus short branched model rollouts."""

    # Keys this block once had, which moved to WMOPO's config (its episode rollouts), at the values every other
    # algorithm's run configs hold them; `load_run_config` reads past them so those runs still resume.
    retired: typing.ClassVar[dict[str, Any]] = {
        "rollout_mode": "branch",
        "model_episode_length": 1000,
        "rollout_random_steps": 0,
        "update_after": 0,
    }
    model_buffer_size: int | None = None  # None: rollout_batch_size x rollout_length x model_retain_epochs
    rollout_length: int = 1
    rollout_batch_size: int = 50_000
    rollout_freq: int = 1000
    model_retain_epochs: int = 5
    real_ratio: float = 0.05
    sac: SACConfig = field(default_factory=SACConfig)

    def real_fraction(self) -> float:
        return self.real_ratio


def _npg_dynamics() -> DynamicsConfig:
    """mjrl's deterministic models: 4 members of 512x512 ReLU regressing Δs (scaled by mean absolute deviation),
    Adam 1e-3 without weight decay, minibatches of 200."""
    return DynamicsConfig(
        num_ensemble=4,
        num_elites=4,
        hidden_dims=[512, 512],
        weight_decay=[0.0, 0.0, 0.0],
        lr=1e-3,
        batch_size=200,
        bootstrap=False,
        loss="mse",
        activation="relu",
        init="uniform",
        normalization="mad",
        predict_reward=False,
    )


@dataclass
class ModelBasedNPGConfig(RunConfig):
    """Keys of model-based NPG (PAL, MAL, MOReL; docs/npg.md): iterations of model fitting and NPG steps on
    rollouts of the policy in every ensemble member."""

    num_iter: int = 50
    inner_steps: int = 5  # NPG steps per iteration
    update_paths: int = 50  # start states per NPG step; each is rolled out in every member
    horizon: int = 500  # model rollout length (decisions)
    start_state: str = "init"  # "init": first states of paths; "buffer": half of them from any stored state
    buffer_frac: float = 0.5  # with start_state=buffer
    fit_epochs: int = 25
    fit_max_steps: int | None = 10_000  # gradient steps per fit, checked after each epoch (mjrl's max_steps)
    refresh_fit: bool = False  # re-initialise the models before every fit instead of warm-starting them
    act_repeat: int = 1  # environment steps per decision (rewards summed; model rewards scaled by it)
    # Reward and termination of model transitions: "env" = the gymnasium -v4 env's own; "mjrl" = the PAL/MAL code's
    # hand-written hopper functions; reward "learned" = mjrl's learned r(s, a, f(s, a)) per member, fitted with the
    # models; termination "mopo" = the SAC family's (envs/termination.py).
    reward_fn: str = "env"
    termination_fn: str = "env"
    # What the policy, the baseline, the models' clamp and MOReL's disagreement see: "none" = raw observations;
    # "mjrl" = mjrl's task-file mask (hopper: velocities × 0.02; envs/rewards.py `observation_mask`).
    obs_mask: str = "none"
    # Model states are clamped to ±state_bound in the masked space, as mjrl's rollouts (its `large_value`): with the
    # hopper mask, positions at ±100 and velocities at ±5000 in raw units.
    state_bound: float = 100.0
    eval_episodes: int = 5
    save_every: int = 1
    npg: NPGConfig = field(default_factory=NPGConfig)
    dynamics: DynamicsConfig = field(default_factory=_npg_dynamics)

    def planned_epochs(self) -> int:
        """Its iterations (one model fit and `inner_steps` NPG steps each)."""
        return self.num_iter

    def decision_repeat(self) -> int:
        """`act_repeat` environment steps per decision, rewards summed."""
        return self.act_repeat


CONFIG_CLASSES: dict[str, type[RunConfig]] = {}
"""Config class of every algorithm by its `--algo` name, filled by `register_config` when a program imports algos/."""

C = typing.TypeVar("C", bound=type)


def register_config(algo: str) -> Callable[[C], C]:
    """Class decorator for an algorithm's config dataclass (it lives beside the algorithm): `--algo NAME`, run
    configs and sweeps then find it by name."""

    def register(cls: C) -> C:
        if CONFIG_CLASSES.get(algo, cls) is not cls:
            raise ValueError(f"algorithm {algo!r} already has the config class {CONFIG_CLASSES[algo].__name__}")
        CONFIG_CLASSES[algo] = cls
        return cls

    return register


def config_classes() -> dict[str, type[RunConfig]]:
    """Every registered algorithm's config class. config.py does not import `algos` (it would close an import circle),
    so an empty registry means the caller never did; saying so beats an "unknown algorithm" that lists none."""
    if not CONFIG_CLASSES:
        raise RegistryNotFilled(
            "no algorithm has registered its config class: import algos (which registers every built-in one) before "
            "reading configs; entry points such as train.py, sweep.py, plot.py and score.py do so at the top"
        )
    return CONFIG_CLASSES


CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
"""Found next to this file, so configs load the same whatever the working directory."""

INHERIT_KEY = "inherit"
_NONE_WORDS = frozenset({"none", "null", "~"})
_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})
# Singular and plural wording of each scalar type, used in type error messages.
_TYPE_WORDS: dict[type, tuple[str, str]] = {
    bool: ("true or false", "booleans"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
}


# ----------------------------------------------------------------------------------------------------------------
# YAML reading


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (YAML 1.1 wants `1.0e-3`) and rejects duplicate keys, which
    PyYAML would otherwise resolve silently by keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` entries may legitimately be overridden by explicit keys
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys are reported by the base class
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _display(path: Path) -> str:
    """Path as the user should read it: relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse one YAML file that must hold a mapping; an empty file is an empty mapping."""
    shown = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read config file {shown}: {err.strerror}; check the path") from None
    try:
        data = yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark is not None else shown
        problem = getattr(err, "problem", None) or str(err)
        raise UserError(f"malformed YAML in {where}: {' '.join(str(problem).split())}; fix the syntax there") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"{shown} must hold a mapping of `key: value` lines at the top level, not a {type(data).__name__}"
        )
    return data


def _read_layers(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[dict[str, Any], str]]:
    """(mapping, source) pairs of a file and the files it inherits, in the order they apply (parents first)."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(_display(p) for p in (*chain, path))
        raise UserError(f"config inheritance cycle: {cycle}; remove one of these `{INHERIT_KEY}:` lines")
    data = _read_yaml_mapping(path)
    parents = data.pop(INHERIT_KEY, None)
    if parents is None:
        parents = []
    elif isinstance(parents, str):
        parents = [parents]
    elif not (isinstance(parents, list) and all(isinstance(name, str) for name in parents)):
        raise UserError(f"{_display(path)}: `{INHERIT_KEY}:` must be a file name or a list of file names")
    layers: list[tuple[dict[str, Any], str]] = []
    for name in parents:
        parent = path.parent / name
        if not parent.is_file():
            raise UserError(
                f"{_display(path)}: inherited file {name!r} not found at {_display(parent)}; "
                "inherit paths are relative to the file that contains them"
            )
        layers.extend(_read_layers(parent, (*chain, path)))
    layers.append((data, _display(path)))
    return layers


# ----------------------------------------------------------------------------------------------------------------
# Field types


@cache
def _field_types(cls: type) -> dict[str, Any]:
    """Resolved type of every dataclass field (annotations are strings under `from __future__ import annotations`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_block(tp: Any) -> bool:
    """A nested dataclass, addressed with dotted keys rather than set as one value."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if len(args) != 1:
            raise TypeError(f"config fields support only `X | None` unions, got {tp!r}")
        return args[0], True
    return tp, False


def _type_name(tp: Any, plural: bool = False) -> str:
    """Wording for error messages: 'an integer', 'a list of numbers', 'a string or null'."""
    inner, optional = _unwrap_optional(tp)
    if typing.get_origin(inner) is list:
        name = "lists" if plural else f"a list of {_type_name(typing.get_args(inner)[0], plural=True)}"
    else:
        words = _TYPE_WORDS.get(inner)
        name = words[plural] if words else repr(inner)
    return f"{name} or null" if optional else name


def _coerce(value: Any, tp: Any) -> Any:
    """Check an already-typed value (from YAML or Python) against a field type; raise ValueError on mismatch.

    Strict on purpose: a bool is never a number and a float never an int, so `epochs: 1e3` or `epochs: true` are
    caught instead of silently becoming 1000 or 1.
    """
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(value)
    if typing.get_origin(inner) is list:
        if not isinstance(value, list):
            raise ValueError(value)
        (element,) = typing.get_args(inner)
        return [_coerce(item, element) for item in value]
    if inner is bool and isinstance(value, bool):
        return value
    if inner is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if inner is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if inner is str and isinstance(value, str):
        return value
    if inner not in _TYPE_WORDS:
        raise TypeError(f"unsupported config field type {inner!r}")
    raise ValueError(value)


def _parse_text(text: str, tp: Any) -> Any:
    """Turn a `--set` string into a value of the field type; raise ValueError when it does not parse."""
    inner, optional = _unwrap_optional(tp)
    word = text.strip()
    if optional and word.lower() in _NONE_WORDS:
        return None
    if typing.get_origin(inner) is list:
        try:
            items = yaml.load(word if word.startswith("[") else f"[{word}]", Loader=_ConfigLoader)
        except yaml.YAMLError:
            raise ValueError(text) from None
        return _coerce(items, inner)
    if inner is bool:
        if word.lower() in _TRUE_WORDS:
            return True
        if word.lower() in _FALSE_WORDS:
            return False
        raise ValueError(text)
    if inner is int:
        return int(word)
    if inner is float:
        return float(word)
    if inner is str:
        return text
    raise TypeError(f"unsupported config field type {inner!r}")


# ----------------------------------------------------------------------------------------------------------------
# Keys


def list_keys(cls: type) -> list[str]:
    """Every settable dotted key of a config class (leaves only, e.g. `dynamics.lr`), in declaration order."""
    keys: list[str] = []
    for name, tp in _field_types(cls).items():
        if _is_block(tp):
            keys.extend(f"{name}.{sub}" for sub in list_keys(tp))
        else:
            keys.append(name)
    return keys


def _block_keys(cls: type, prefix: str = "") -> list[str]:
    """Dotted names of the nested blocks (`dynamics`, `sac`, ...), offered as suggestions too."""
    blocks: list[str] = []
    for name, tp in _field_types(cls).items():
        if _is_block(tp):
            blocks.append(prefix + name)
            blocks.extend(_block_keys(tp, f"{prefix}{name}."))
    return blocks


def _suggest(key: str, root: type) -> str:
    """' (did you mean a, b?)' from keys spelled alike or with the same last component, e.g. `max_epochs`."""
    candidates = list_keys(root) + _block_keys(root)
    tail = key.rsplit(".", 1)[-1]
    same_tail = [c for c in candidates if c.rsplit(".", 1)[-1] == tail]
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    close_tail = [c for c in candidates if difflib.get_close_matches(tail, [c.rsplit(".", 1)[-1]], cutoff=0.75)]
    picks = list(dict.fromkeys(same_tail + close + close_tail))[:3]
    if picks:
        return f" (did you mean {', '.join(picks)}?)"
    top = ", ".join(_field_types(root))
    return f" (top-level keys: {top})"


def _get(cfg: Any, key: str) -> Any:
    """Value of a dotted key."""
    return reduce(getattr, key.split("."), cfg)


# ----------------------------------------------------------------------------------------------------------------
# Merging


def _apply(
    cfg: Any,
    data: Mapping[Any, Any],
    source: str,
    origins: dict[str, str],
    *,
    text: bool = False,
    root: type | None = None,
    prefix: str = "",
) -> None:
    """Set every key of `data` on `cfg` in place, recursing into blocks; `text` marks `--set` strings to parse.

    `origins` records which source set each dotted key last, so validation errors can say where to fix a value.
    """
    root = root or type(cfg)
    fields = _field_types(type(cfg))
    for raw_key, value in data.items():
        key = str(raw_key)
        name, dot, rest = key.partition(".")
        dotted = prefix + key
        if name not in fields or (dot and not _is_block(fields[name])):
            raise UserError(f"unknown config key '{dotted}' in {source}{_suggest(dotted, root)}")
        tp = fields[name]
        if _is_block(tp):
            if dot:
                value = {rest: value}
            elif not isinstance(value, Mapping):
                example = f"{prefix}{name}.{list_keys(tp)[0]}"
                raise UserError(
                    f"{source}: '{prefix}{name}' is a block of settings, not a value; set its keys instead, "
                    f"e.g. {example}=..."
                )
            _apply(getattr(cfg, name), value, source, origins, text=text, root=root, prefix=f"{prefix}{name}.")
            continue
        try:
            parsed = _parse_text(value, tp) if text else _coerce(value, tp)
        except ValueError:
            raise UserError(f"{source}: {dotted} must be {_type_name(tp)}, got {value!r}") from None
        setattr(cfg, name, parsed)
        origins[dotted] = source


def _split_override(item: str) -> tuple[str, str]:
    """`dotted.key=value` -> (key, value); a missing `=` or key is the user's to fix."""
    key, eq, value = item.partition("=")
    if not eq or not key.strip():
        raise UserError(f"--set {item!r} is not key=value; write e.g. --set dynamics.max_epochs=5")
    return key.strip(), value


def _config_class(algo: str) -> type[RunConfig]:
    """The dataclass of an algorithm, or a UserError listing the known ones."""
    classes = config_classes()
    if algo not in classes:
        raise UserError(f"unknown algorithm {algo!r}; known algorithms: {', '.join(sorted(classes))}")
    return classes[algo]


def _resolve_config_file(config_file: str, algo: str) -> Path:
    """A --config path, or a bare preset name looked up in configs/<algo>/ (`--config quickstart`)."""
    path = Path(config_file).expanduser()
    if path.is_file():
        return path
    if path.parent == Path("."):
        for candidate in (CONFIGS_DIR / algo / config_file, CONFIGS_DIR / algo / f"{config_file}.yaml"):
            if candidate.is_file():
                return candidate
    raise UserError(
        f"config file not found: {config_file}; pass the path of a YAML file or a preset name from "
        f"{_display(CONFIGS_DIR / algo)}/ such as quickstart"
    )


def load_config(
    algo: str,
    task: str,
    config_file: str | None = None,
    overrides: Sequence[str] = (),
    cli: Mapping[str, Any] | None = None,
    family: str | None = None,
) -> RunConfig:
    """Merge all configuration layers for one run (later wins) and validate the result.

    Layers: dataclass defaults <- configs/<algo>/defaults.yaml <- configs/<algo>/<family>.yaml (the task's env
    family, if given and present) <- configs/<algo>/<task>.yaml (if present) <- `config_file` <- `overrides`
    ("dotted.key=value" strings) <- `cli` (typed values; None means "not given").
    """
    cls = _config_class(algo)
    cfg = cls()
    origins: dict[str, str] = {}
    algo_dir = CONFIGS_DIR / algo
    files = [algo_dir / "defaults.yaml"]
    if family and Path(family).name == family:
        files.append(algo_dir / f"{family}.yaml")
    if task and Path(task).name == task:
        files.append(algo_dir / f"{task}.yaml")
    files = [path for path in files if path.is_file()]
    if config_file is not None:
        files.append(_resolve_config_file(config_file, algo))
    for path in files:
        for data, source in _read_layers(path):
            _apply(cfg, data, source, origins)
    for item in [overrides] if isinstance(overrides, str) else overrides:
        key, value = _split_override(item)
        _apply(cfg, {key: value}, f"--set {item}", origins, text=True)
    for key, value in (cli or {}).items():
        if value is not None:
            value = os.fspath(value) if isinstance(value, os.PathLike) else value
            _apply(cfg, {key: value}, f"command-line option for {key}", origins)
    for key, wanted in (("algo", algo), ("task", task)):
        given = getattr(cfg, key)
        if given and given != wanted:
            where = origins.get(key, "the dataclass default")
            raise UserError(
                f"{where} sets {key}={given!r} but this run has {key}={wanted!r}; "
                f"remove that setting or start the run with {key} {given!r}"
            )
    cfg.algo, cfg.task = algo, task
    _validate(cfg, origins)
    return cfg


# ----------------------------------------------------------------------------------------------------------------
# Validation

Rule = Callable[[Any, Any], str | None]
"""(value, whole config) -> the requirement the value breaks, or None when it is fine."""


def one_of(*choices: str) -> Rule:
    """String options the consuming code branches on; anything else would fail late or silently."""
    return lambda value, cfg: None if value in choices else f"one of {', '.join(choices)}"


def positive(value: Any, cfg: Any) -> str | None:
    """Counts, sizes and rates where zero or less makes no sense."""
    return None if value > 0 else "> 0"


def positive_or_none(value: Any, cfg: Any) -> str | None:
    """Optional limits: null means unlimited."""
    return None if value is None or value > 0 else "> 0 or null"


def all_positive(value: Any, cfg: Any) -> str | None:
    """Layer widths: an empty list or a zero-width layer would build a broken network."""
    return None if value and all(v > 0 for v in value) else "a non-empty list of positive numbers"


def between(low: float, high: float, *, open_interval: bool = False) -> Rule:
    """Fractions and probabilities; open when an end point would empty a split."""
    if open_interval:
        return lambda value, cfg: None if low < value < high else f"strictly between {low:g} and {high:g}"
    return lambda value, cfg: None if low <= value <= high else f"between {low:g} and {high:g}"


def discount(why: str) -> Rule:
    """A discount factor of bootstrapped (infinite-horizon) values, which 1 would leave unbounded; `why` says what
    breaks at 1 for this algorithm. A finite-horizon method with no 1/(1 − γ) anywhere uses between(0, 1) instead."""
    return lambda value, cfg: None if 0 <= value < 1 else f"in [0, 1) ({why})"


def penalty_weight(value: Any, cfg: Any) -> str | None:
    """Weights of pessimism penalties: 0 switches the penalty off, a negative weight would turn it into a bonus."""
    return None if value >= 0 else ">= 0 (0 switches the penalty off; a negative one would reward uncertainty)"


def polyak_rate(value: Any, cfg: Any) -> str | None:
    """Polyak rates of target networks: 1 copies, 0 would never move the targets from their initial weights."""
    return None if 0 < value <= 1 else "in (0, 1] (0 never moves the target networks from their initial weights)"


def above(other: str) -> Rule:
    """The upper end of a range whose lower end is the key `other` (dotted), e.g. log-std bounds."""

    def rule(value: Any, cfg: Any) -> str | None:
        low = _get(cfg, other)
        return None if value > low else f"> {other} ({low:g})"

    return rule


def _device(value: Any, cfg: Any) -> str | None:
    """Catch typos like `gpu` or `cuda0` before any tensor is built."""
    return None if re.fullmatch(r"cpu|cuda(:\d+)?", value) else "cpu, cuda or cuda:N"


def non_negative(value: Any, cfg: Any) -> str | None:
    """Weights and radii where zero switches a term off."""
    return None if value >= 0 else ">= 0"


def _elites(value: Any, cfg: Any) -> str | None:
    """Elites are chosen among the ensemble members."""
    ensemble = cfg.dynamics.num_ensemble
    return None if 1 <= value <= ensemble else f"between 1 and dynamics.num_ensemble ({ensemble})"


def _weight_decay(value: Any, cfg: Any) -> str | None:
    """One decay per linear layer, which changes with the number of hidden layers; AdamW decays every parameter
    itself (`adamw_weight_decay`), and stacking a coupled L2 on it is nobody's published model."""
    wanted = len(cfg.dynamics.hidden_dims) + 1
    if len(value) != wanted:
        return f"a list of {wanted} numbers, one per hidden layer of dynamics.hidden_dims plus the output layer"
    if cfg.dynamics.optimizer == "adamw" and any(value):
        return "all zeros with dynamics.optimizer=adamw (its decay is dynamics.adamw_weight_decay)"
    if cfg.dynamics.optimizer == "adam_l2" and any(value):
        return "all zeros with dynamics.optimizer=adam_l2 (its decay is dynamics.param_weight_decay)"
    return None


def _holdout_ratio(value: Any, cfg: Any) -> str | None:
    """0 trains a fixed number of epochs without a holdout, which needs that number."""
    if not 0 <= value < 1:
        return "in [0, 1)"
    if value == 0 and cfg.dynamics.max_epochs is None:
        return "0 only with dynamics.max_epochs set (without a holdout nothing stops the fit)"
    return None


_RULES: dict[str, Rule] = {
    "device": _device,
    "dataset_backend": one_of("auto", "hdf5", "d4rl", "minari"),
    "dynamics.loss": one_of("nll", "mse", "beta_nll"),
    "dynamics.variance_bounds": one_of("logvar", "logstd"),
    "dynamics.optimizer": one_of("adam", "adamw", "adam_l2"),
    "dynamics.variance_model": one_of("network", "state_independent"),
    "dynamics.holdout_metric": one_of("mse", "nll"),
    "dynamics.keep_weights": one_of("best", "last"),
    "dynamics.member_loss": one_of("sum", "mean"),
    "dynamics.patience_after_epoch": lambda value, cfg: None if value >= 0 else ">= 0",
    "dynamics.param_weight_decay": lambda value, cfg: None if value >= 0 else ">= 0",
    "dynamics.train_loss_patience": lambda value, cfg: None if value is None or value > 0 else "> 0 (or null)",
    "dynamics.nll_beta": lambda value, cfg: None if 0 <= value <= 1 else "between 0 and 1",
    "dynamics.adamw_weight_decay": lambda value, cfg: None if value >= 0 else ">= 0",
    "dynamics.grad_clip": lambda value, cfg: None if value is None or value > 0 else "> 0 (or null for no clipping)",
    "dynamics.precision": one_of("fp32", "bf16"),
    "dynamics.activation": one_of("silu", "relu", "tanh"),
    "dynamics.init": one_of("truncated_normal", "uniform"),
    "dynamics.normalization": one_of("standard", "mad", "scaled_targets", "none"),
    "sac.lr_schedule": one_of("cosine", "none"),
    **dict.fromkeys(
        (
            "epochs",
            "steps_per_epoch",
            "batch_size",
            "eval_every",
            "eval_episodes",
            "save_every",
            "rollout_length",
            "rollout_freq",
            "rollout_batch_size",
            "model_retain_epochs",
            "num_iter",
            "inner_steps",
            "update_paths",
            "fit_epochs",
            "act_repeat",
            "state_bound",
            "dynamics.num_ensemble",
            "dynamics.batch_size",
            "dynamics.max_holdout",
            "dynamics.max_epochs_since_update",
            "dynamics.lr",
            "sac.actor_lr",
            "sac.critic_lr",
            "sac.alpha_lr",
            "sac.num_critics",
            "npg.step_size",
            "npg.cg_iters",
            "npg.baseline_lr",
            "npg.baseline_batch_size",
            "npg.baseline_epochs",
        ),
        positive,
    ),
    "dynamics.max_epochs": positive_or_none,
    **dict.fromkeys(
        ("dynamics.hidden_dims", "sac.hidden_dims", "npg.policy_hidden_dims", "npg.baseline_hidden_dims"), all_positive
    ),
    **dict.fromkeys(("npg.cg_damping", "npg.baseline_weight_decay"), non_negative),
    "npg.min_log_std": lambda value, cfg: None if value < cfg.npg.max_log_std else "< npg.max_log_std",
    "real_ratio": between(0, 1),
    "model_buffer_size": positive_or_none,
    "buffer_frac": between(0, 1),
    "start_state": one_of("init", "buffer"),
    "reward_fn": one_of("env", "mjrl", "learned"),
    "termination_fn": one_of("env", "mjrl", "mopo", "mopo_strict"),
    "obs_mask": one_of("none", "mjrl"),
    "npg.cg_init": one_of("gradient", "zero"),
    "fit_max_steps": positive_or_none,
    "horizon": lambda value, cfg: None if value >= 5 else ">= 5 (model paths shorter than 5 steps are dropped)",
    # SAC's critic targets bootstrap through time limits: at γ = 1 nothing bounds their values.
    "sac.gamma": discount("at 1 SAC's bootstrapped values have no bound"),
    "sac.tau": polyak_rate,
    "sac.alpha": non_negative,  # the fixed entropy weight (auto_alpha false): 0 drops the entropy term
    "sac.alpha_max": positive_or_none,
    "sac.log_std_max": above("sac.log_std_min"),
    # NPG's paths are finite (`horizon` model steps, or real episodes) and its baseline sees the step t, with no
    # 1/(1 − γ) anywhere: γ = 1 is the undiscounted return of a path, a meaningful objective.
    **dict.fromkeys(("npg.gamma", "npg.gae_lambda"), between(0, 1)),
    "npg.init_log_std": lambda value, cfg: (
        None
        if cfg.npg.min_log_std <= value <= cfg.npg.max_log_std
        else f"between npg.min_log_std ({cfg.npg.min_log_std:g}) and npg.max_log_std ({cfg.npg.max_log_std:g})"
    ),
    **dict.fromkeys(("dynamics.improvement_threshold", "dynamics.logvar_bound_coef"), non_negative),
    "dynamics.max_logvar_init": above("dynamics.min_logvar_init"),
    # The density-ratio fits (models/density_ratio.py) of every config with a `ratio` block.
    "ratio.hidden_dims": all_positive,
    **dict.fromkeys(("ratio.lr", "ratio.batch_size", "ratio.patience", "ratio.max_epochs"), positive),
    "ratio.weight_decay": non_negative,
    "ratio.holdout_ratio": lambda value, cfg: None if 0 <= value < 1 else "in [0, 1) (0: stop on the training loss)",
    "dynamics.holdout_ratio": _holdout_ratio,
    "dynamics.num_elites": _elites,
    "dynamics.weight_decay": _weight_decay,
}
"""Checks on the shared keys' merged values; a rule applies only when the config class has that key. An
algorithm's config class adds checks on its own keys in a `rules` class attribute (see algos/bcq.py)."""


def _rules_of(cls: type) -> dict[str, Rule]:
    """The shared rules plus every `rules` class attribute along the class's bases (subclasses win)."""
    rules = dict(_RULES)
    for klass in reversed(cls.__mro__):
        rules.update(vars(klass).get("rules", {}))
    return rules


SET_FIX = "change the value there or with --set key=value"


def _validate(cfg: RunConfig, origins: Mapping[str, str], fix: str = SET_FIX) -> None:
    """Raise one UserError listing every value that breaks a rule, with the source that set it, ending in `fix`
    (how the caller's user changes a value: --set where the command has it)."""
    keys = set(list_keys(type(cfg)))
    problems = []
    for key, rule in _rules_of(type(cfg)).items():
        if key not in keys:
            continue
        value = _get(cfg, key)
        requirement = rule(value, cfg)
        if requirement is not None:
            where = origins.get(key, "the dataclass default")
            problems.append(f"{key}={value!r} (from {where}) must be {requirement}")
    if problems:
        raise UserError(f"invalid config: {'; '.join(problems)}; {fix}")


# ----------------------------------------------------------------------------------------------------------------
# Saving and loading run configs


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain nested dict (blocks become dicts, lists are copied) for YAML, logging and hyperparameter tables."""
    return dataclasses.asdict(cfg)


def _hashable(value: Any) -> Hashable:
    """Lists as tuples and mappings as sorted item tuples, so config values can be compared and used as keys."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Hashable]:
    """`{"dynamics": {"lr": 1e-3}}` -> `{"dynamics.lr": 1e-3}`: the dotted keys `--set` uses, lists as tuples."""
    flat: dict[str, Hashable] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _hashable(value)
    return flat


def save_config(cfg: RunConfig, path: str | os.PathLike[str]) -> None:
    """Write the merged config as YAML atomically, so a crash never leaves a half-written config.yaml behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        f"# {cfg.algo} run config for {cfg.task}; read back with envs.task_config.load_run_config\n"
        + yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def without_retired(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config's keys less those `cls` no longer has (its `retired` class attribute) at the value that meant
    what the class does now. Another value stays, so reading it refuses the key: that setting is gone."""
    retired = getattr(cls, "retired", {})
    fields = _field_types(cls)
    return {
        key: value
        for key, value in data.items()
        if not (key in retired and key not in fields and value == retired[key])
    }


def read_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read a saved run config back (class chosen by its `algo` key), as strictly as load_config reads YAML.

    Keys missing from the file keep their dataclass defaults, so run directories from before a new option was
    added still load. A run on a user's task file needs that file in place; registering its task is
    envs/task_config.py's `load_run_config`, the reader every caller uses.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"run config not found: {_display(path)}; pass the config.yaml inside a run directory")
    data = _read_yaml_mapping(path)
    algo = data.get("algo")
    classes = config_classes()
    if not isinstance(algo, str) or algo not in classes:
        raise UserError(
            f"{_display(path)} is not a run config of a known algorithm (algo: {algo!r}; known: "
            f"{', '.join(sorted(classes))}); pass a config.yaml written by train.py"
        )
    cfg = classes[algo]()
    origins: dict[str, str] = {}
    _apply(cfg, without_retired(type(cfg), data), _display(path), origins)
    # A saved run config is read by eval.py and --resume, which take no --set: the file is the one place to fix it.
    _validate(cfg, origins, f"change the value in {_display(path)}")
    if cfg.task_file is not None and not Path(cfg.task_file).is_file():
        raise UserError(
            f"{_display(path)} was trained on the task file {cfg.task_file}, which is missing; put it back there"
        )
    return cfg
