"""Learning check: one algorithm next to MOPO and BC on one dataset, at a stated budget, as one command.

    python bench/learning_check.py --algo mago --task hopper-medium-gen --seeds 0 1 2
    python bench/learning_check.py --algo morel --task halfcheetah-medium-gen --dry-run    # the train.py commands
    python bench/learning_check.py --algo bcq --task hopper-medium-gen --budget tiny      # seconds: a smoke test
    python bench/learning_check.py --algo micro --task hopper-medium-gen --budget epochs=10 mopo:epochs=10

Every seed of the algorithm, of MOPO and of BC is its own `python train.py` run (one thread each, --workers at once),
fitting its own dynamics model; re-running the command skips finished runs and resumes interrupted ones (sweep.py's
planning, utils/launch.py). Then the runs are published into the results registry (`score.py publish`, labels
`<algo>-check-<budget>`) and the table printed: normalized score, mean ± std over seeds of each seed's mean of its
last 5 evaluations, next to the behaviour policy and the dataset's episodes, with each run's budget and the data's
sha256.

--budget: `cpu` (default: each algorithm's CPU learning-check budget, PRESETS below, about three hours of 2 cores or
less for 3 seeds) or `tiny` (seconds per run, for CI), then KEY=VALUE items for the algorithm's runs and
mopo:KEY=VALUE / bc:KEY=VALUE for the comparators' (as train.py --set). docs/results.md#learning-checks.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import algos  # noqa: E402, F401  (registers every algorithm's record and config class)
from config import config_to_dict  # noqa: E402
from envs import OfflineDataset, TaskSpec, get_task, list_tasks, load_dataset  # noqa: E402
from envs.datasets import find_dataset  # noqa: E402
from envs.generate import dataset_reference  # noqa: E402
from envs.task_config import suggest_train  # noqa: E402
from utils.algorithm_spec import algorithm_spec, known_algorithm  # noqa: E402
from utils.errors import Interrupted, UserError, run_cli  # noqa: E402
from utils.launch import Job, RunRequest, check_distinct, check_workers, plan, run_local, summary  # noqa: E402
from utils.provenance import UNKNOWN, run_data, short_hash  # noqa: E402
from utils.publish import RESULTS_DIR, publish  # noqa: E402
from utils.runs import Run, read_progress, read_run  # noqa: E402

LAST_K = 5  # each seed's score: the mean of its last 5 evaluations (the project's learning claim)
COMPARATORS = ("mopo", "bc")  # every check runs these next to the algorithm, at the budget its preset names
THREADS = 1  # per run: --workers runs share the cores without oversubscribing them
OWN_MODEL_KEYS = ("dynamics_path", "branch_from")  # a check's seeds fit their own models; these would share one
GEN_TRANSITIONS = 200_000  # the size of the generated data the documented checks ran on (docs/wmopo.md, morel.md)


@dataclass(frozen=True)
class Preset:
    """One algorithm's CPU learning-check budget: its own train.py settings and its comparators' (MOPO, BC)."""

    sets: tuple[str, ...]  # the algorithm's --set items
    config: str | None = None  # its --config preset
    mopo: tuple[str, ...] = ()  # MOPO's --set items at this check
    bc: tuple[str, ...] = ()  # BC's --set items at this check
    families: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # per env family, in place of `sets`
    cost: str = ""  # what the docs state the algorithm's runs cost, printed with the plan


# MOPO's learning-check budget: 60 epochs x 1000 updates on a model fitted for at most 20 epochs
# (docs/wmopo.md#results-1, the README's MOPO rows "60k updates").
MOPO_60K = ("epochs=60", "dynamics.max_epochs=20")
# BC's: 30 epochs x 1000 steps (README: "BC is 30 epochs × 1000 steps on the same data"; docs/morel.md, docs/wmopo.md).
BC_30K = ("epochs=30",)

PRESETS: dict[str, Preset] = {
    "mopo": Preset(MOPO_60K, mopo=MOPO_60K, bc=BC_30K, cost="about 12 s per 1000 updates on 2 threads (mopo.md, demo)"),
    # docs/micro.md#learning-check-cpu: the first 20k updates (eval every 2 epochs), on 20-epoch models, with MOPO at
    # the same 20k updates ("its cosine learning-rate schedule then spans the same 20 epochs").
    "micro": Preset(
        ("epochs=20", "eval_every=2", "save_every=2", "dynamics.max_epochs=20"),
        mopo=("epochs=20", "dynamics.max_epochs=20"),
        bc=BC_30K,
        cost="106 min of 2 cores for 3 seeds stacked on hopper (micro.md); halfcheetah 6.6-7 min per stacked epoch",
    ),
    # configs/mago/cpu.yaml (5k updates, its own 10-member ensemble), MOPO at the same 5k updates (docs/mago.md compares
    # MOPO "after 5k").
    "mago": Preset(
        (),
        config="cpu",
        mopo=("epochs=5", "dynamics.max_epochs=20"),
        bc=BC_30K,
        cost="28-34 min per run on hopper, 30-34 on halfcheetah, with 2-5 runs sharing 2 cores (mago.md)",
    ),
    # configs/wmopo/cpu.yaml (two M-steps of 30k: 60k SAC updates), MOPO at the same 60k (docs/wmopo.md#results-1).
    "wmopo": Preset(
        (),
        config="cpu",
        mopo=MOPO_60K,
        bc=BC_30K,
        cost="18-34 min per run on one core beside another (wmopo.md); halfcheetah 39 min per run, 3 at once",
    ),
    # docs/morel.md#results: hopper `num_iter=100 fit_epochs=10`, halfcheetah (its own preset) `num_iter=50
    # fit_epochs=10`. NPG iterations are not SAC updates: MOPO runs at its own check budget.
    "morel": Preset(
        ("num_iter=100", "fit_epochs=10"),
        mopo=MOPO_60K,
        bc=BC_30K,
        families={"halfcheetah": ("num_iter=50", "fit_epochs=10")},
        cost="7.5-15 min per hopper seed (runs behind morel.md); halfcheetah 12-20 min per seed, the whole check with "
        "MOPO and BC 70 min of 2 cores (morel.md#the-demo-preset)",
    ),
    "bc": Preset(BC_30K, mopo=MOPO_60K, bc=BC_30K, cost="2-2.5 min per seed on one thread (runs behind morel.md)"),
    # No doc states a BCQ check: this project's choice is BC's 30k steps and BC's evaluation every 1000 steps (BCQ's own
    # epoch is 5000 steps), so both are scored over the same last 5 evaluations.
    "bcq": Preset(
        ("epochs=30", "steps_per_epoch=1000"),
        mopo=MOPO_60K,
        bc=BC_30K,
        cost="not measured to the end; on halfcheetah the first 1000 steps and their evaluation took 1.6 min per run, "
        "three at once",
    ),
    # No doc states a TD3+BC check either: this project's choice is MOPO's 60k updates on MOPO's evaluation grid
    # (every 1000 steps; the authors evaluate every 5000), so TD3+BC's and MOPO's last-5 means cover the same updates.
    "td3bc": Preset(
        ("epochs=60", "steps_per_epoch=1000"),
        mopo=MOPO_60K,
        bc=BC_30K,
        cost="updates measured at 7.9-8.7 s per 1000 on one thread with both cores busy (td3bc.md), so 60k about "
        "9 min per run before its evaluations; the whole run not measured",
    ),
    # No doc states a CQL check: this project's choice is BC's 30k steps (the authors' epoch is 1000 steps, so its
    # own evaluation schedule), scored over the same last 5 evaluations as BC and BCQ, with 10 episodes each as BC's
    # (the authors evaluate 1000 steps) and no behaviour-cloning warm-up (the authors' 39 999 updates would fill the
    # budget; docs/cql.md#speed). CQL's update values 30 actions per state in both critics (3 x 256 units): about 13
    # times SAC's.
    "cql": Preset(
        ("epochs=30", "cql.bc_steps=0", "eval_episodes=10"),
        mopo=MOPO_60K,
        bc=BC_30K,
        cost="not measured to the end; about 0.2 s per update on one thread (docs/cql.md#speed), so 1.5-2 h per seed",
    ),
    # No doc states a COMBO check: this project's choice is CQL's and BC's 30k updates (COMBO's update costs what
    # CQL's does, docs/combo.md#speed), on a model fitted for at most 20 epochs as MOPO's check fits its own, with MOPO
    # at the same 30k updates and 20-epoch model (the cosine actor schedule of both then spans the same 30 epochs),
    # so the two model-based methods compare at equal updates.
    "combo": Preset(
        ("epochs=30", "dynamics.max_epochs=20"),
        mopo=("epochs=30", "dynamics.max_epochs=20"),
        bc=BC_30K,
        cost="not measured to the end; updates 188-205 ms each on one thread with both cores busy, one rollout of "
        "50k x 5 steps 6.8 s per 1000 updates (docs/combo.md#speed), so about 1.7 h per seed after its model fit",
    ),
}

# `--budget tiny`: every part of each algorithm runs, in seconds per run (tests' tiny settings; 5 evaluations each, so
# the table's last-5 means are the same computation as at full budget).
_TINY_MODEL = (
    "dynamics.num_ensemble=3", "dynamics.num_elites=2", "dynamics.hidden_dims=[16,16]",
    "dynamics.weight_decay=[2.5e-5,5e-5,1e-4]", "dynamics.max_epochs=2",
)  # fmt: skip
_TINY_MOPO = (
    "epochs=5", "steps_per_epoch=20", "batch_size=32", "rollout_freq=20", "rollout_batch_size=100",
    "rollout_length=2", "eval_episodes=1", "save_every=1", "sac.hidden_dims=[32,32]", *_TINY_MODEL,
)  # fmt: skip
TINY: dict[str, tuple[str, ...]] = {
    "mopo": _TINY_MOPO,
    "micro": (*_TINY_MOPO, "eval_every=1", "num_samples=2"),
    "bc": ("epochs=5", "steps_per_epoch=20", "batch_size=32", "eval_episodes=1", "save_every=1", "hidden_dims=[16,16]"),
    "bcq": (
        "epochs=5", "steps_per_epoch=20", "batch_size=32", "eval_episodes=1", "save_every=1",
        "actor_hidden_dims=[16,16]", "critic_hidden_dims=[16,16]", "vae_hidden_dims=[16,16]",
    ),
    "td3bc": (
        "epochs=5", "steps_per_epoch=21", "batch_size=32", "eval_episodes=1", "save_every=1", "hidden_dims=[16,16]",
    ),
    "cql": (
        "epochs=5", "steps_per_epoch=20", "batch_size=32", "eval_episodes=1", "save_every=1", "sac.hidden_dims=[16,16]",
        "cql.num_actions=3",
    ),
    "combo": (*_TINY_MOPO, "cql.num_actions=3"),
    "mago": (
        "epochs=5", "steps_per_epoch=3", "batch_size=16", "adv_batch_size=8", "eval_episodes=1", "save_every=1",
        "hidden_dims=[16,16]", "num_models=3", "num_state_samples=2", "num_action_samples=4", "monitor_rollouts=2",
        "monitor_horizon=5", "dynamics.num_ensemble=4", "dynamics.num_elites=4", "dynamics.hidden_dims=[16,16]",
        "dynamics.weight_decay=[0,0,0]", "dynamics.max_epochs=1",
    ),
    "wmopo": (
        "epochs=3", "steps_per_epoch=60", "update_after=30", "rollout_random_steps=20", "model_episode_length=40",
        "eval_episodes=1", "model_eval_episodes=1", "sim_samples=300", "sim_batch=20", "model_buffer_size=500",
        "batch_size=32", "dynamics.hidden_dims=[16]", "dynamics.weight_decay=[1e-5,1e-5]", "dynamics.max_epochs=2",
        "dynamics.batch_size=64", "ratio.hidden_dims=[16]", "ratio.max_epochs=2", "ratio.batch_size=64",
        "model_error.hidden_dims=[16]", "model_error.max_epochs=2", "model_error.batch_size=64",
        "sac.hidden_dims=[16]",
    ),
    "morel": (
        "num_iter=5", "save_every=1", "fit_epochs=1", "inner_steps=1", "update_paths=4", "horizon=10",
        "eval_episodes=1", "bc_epochs=1", "dynamics.hidden_dims=[16,16]", "npg.policy_hidden_dims=[8,8]",
        "npg.baseline_hidden_dims=[8,8]",
    ),
}  # fmt: skip
BUDGETS = ("cpu", "tiny")


@dataclass(frozen=True)
class Budget:
    """What one algorithm's runs are told (`--config`, `--set`) and the registry label they are published under."""

    config: str | None
    sets: tuple[str, ...]
    label: str

    def describe(self) -> str:
        parts = (["--config", self.config] if self.config else []) + (["--set", *self.sets] if self.sets else [])
        return shlex.join(parts) if parts else "the algorithm's defaults"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True, help=f"the algorithm to check: {', '.join(sorted(PRESETS))}")
    parser.add_argument("--task", required=True, help="a dataset task, e.g. hopper-medium-gen")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of every method (default 0 1 2)")
    parser.add_argument(
        "--budget",
        nargs="+",
        default=[],
        metavar="ITEM",
        help="cpu (default) or tiny, then KEY=VALUE for the algorithm's runs and mopo:KEY=VALUE, bc:KEY=VALUE for "
        "the comparators'",
    )
    parser.add_argument("--workers", type=int, default=2, help="runs at once, one thread each (default 2)")
    parser.add_argument("--log-dir", default="log/learning_check", help="root of the run directories")
    parser.add_argument("--results", default=str(RESULTS_DIR), help="the registry's root (default: results/)")
    parser.add_argument("--dry-run", action="store_true", help="print the train.py commands it would run, run none")
    return parser.parse_args(argv)


def train_command(algo: str, family: str | None, seeds: str) -> tuple[str, str]:
    """(task, an accepted `python train.py --task T --algo ALGO --seeds ...`) for an algorithm that learns without a
    dataset, on an env of `family` where there is one (envs.task_config.suggest_train checks it up to where work
    starts)."""
    online = [name for name in list_tasks() if get_task(name).online]
    online.sort(key=lambda name: get_task(name).family != family)
    for task in online:
        command = suggest_train(algo, task)
        if command is not None:
            return task, f"python train.py {command} --seeds {seeds}"
    raise UserError(f"{algo} learns without a dataset, and no environment task here accepts it; see docs/README.md")


def check_algo(algo: str, task: str) -> None:
    """Refuse, in one line with the commands that do work, what is not a learning check on data."""
    try:
        family = get_task(task).family
    except UserError:
        family = None
    spec = known_algorithm(algo)
    if spec is not None and spec.study:
        env, command = train_command(algo, None, "0 1 2 3 4")
        raise UserError(
            f"{algo} is a method of the WMOPO Pendulum study: it fits models to evaluate a fixed policy and trains "
            f"none, so it has no learning check; run the study with {command} and score it with python score.py "
            f"log/{env} --algo {algo} --metric result/evaluation_error (docs/wmopo.md#the-pendulum-study)"
        )
    if spec is not None and spec.online:
        env, command = train_command(algo, family, "0 1 2")
        raise UserError(
            f"{algo} learns online from its own environment samples, with no dataset to check it against MOPO and BC "
            f"on; train its seeds with {command} --workers 2 and score them with python score.py log/{env} --algo "
            f"{algo} --last 5 (docs/pal_mal.md)"
        )
    if algo not in PRESETS:
        if spec is not None:
            raise UserError(
                f"{algo} has no learning-check budget yet; add one to PRESETS in bench/learning_check.py, or check one "
                f"of: {', '.join(sorted(PRESETS))}"
            )
        raise UserError(f"unknown algorithm {algo!r}; a learning check takes one of: {', '.join(sorted(PRESETS))}")


def budgets(algo: str, spec: TaskSpec, items: Sequence[str]) -> tuple[str, dict[str, Budget]]:
    """Each method's budget, the algorithm's first: the named budget (`cpu` presets or `tiny`), then the KEY=VALUE
    items of --budget (prefixed `mopo:` or `bc:` for a comparator). Custom items give the label a short digest of
    them, so runs of another budget are never published under the preset's label."""
    methods = list(dict.fromkeys([algo, *COMPARATORS]))
    name, extra = "cpu", {method: [] for method in methods}
    for index, item in enumerate(items):
        key, eq, value = item.partition("=")
        if not eq:
            if index or item not in BUDGETS:
                raise UserError(
                    f"--budget {item}: neither a budget name ({', '.join(BUDGETS)}, first) nor KEY=VALUE; e.g. "
                    "--budget tiny, or --budget epochs=10 mopo:epochs=10"
                )
            name = item
            continue
        target, _, key = key.rpartition(":")
        target = target or algo
        if target not in methods or not key:
            raise UserError(
                f"--budget {item}: {'no key' if not key else f'{target} is not in this check'}; write KEY=VALUE for "
                f"{algo}'s runs, or prefix it with one of {', '.join(methods)}: --budget {methods[-1]}:epochs=10"
            )
        if key.split(".")[0] in OWN_MODEL_KEYS:
            raise UserError(
                f"--budget {item}: every seed of a learning check fits its own model, so {key} is not a budget key; "
                "train runs on a shared model with python train.py --set directly"
            )
        extra[target].append(f"{key}={value}")
    preset = PRESETS[algo]
    out = {}
    for method in methods:
        if name == "tiny":
            config, sets = None, TINY[method]
        elif method == algo:
            config, sets = preset.config, preset.families.get(spec.family, preset.sets)
        else:
            config, sets = None, getattr(preset, method)
        label = f"{method}-check-{name}"
        if extra[method]:
            label += "-" + hashlib.sha256(" ".join(extra[method]).encode()).hexdigest()[:6]
        out[method] = Budget(config, (*sets, *extra[method]), label)
    return name, out


def read_data(spec: TaskSpec, request: RunRequest) -> OfflineDataset:
    """The task's dataset as the runs will read it; a generated one that is missing is named with its collect.py
    command (the documented checks' size), anything else as train.py would refuse it."""
    cfg = request.resolved_config()
    if spec.version == "gen" and find_dataset(spec, cfg.dataset_path) is None:
        size = "" if spec.level == "medium-replay" else f" --transitions {GEN_TRANSITIONS}"
        raise UserError(
            f"no dataset for {spec.name} yet; generate it with python collect.py dataset --task {spec.name}{size}, "
            "then run this check again"
        )
    return load_dataset(spec, cfg.dataset_path, cfg.dataset_backend, cfg.download)


def planned_steps(request: RunRequest) -> str:
    """A request's planned length before it has a run directory (the plan and --dry-run show it)."""
    config = config_to_dict(request.resolved_config())
    return Run(Path(request.log_dir), request.task, request.algo, request.seed, config).budget


def check_same_data(run_dirs: Sequence[Path], dataset: OfflineDataset, log_dir: str) -> None:
    """Refuse to count runs of other data than the dataset the check reads now (the dataset was regenerated since)."""
    if dataset.content_hash is None:
        return
    for run_dir in run_dirs:
        data = run_data(run_dir)
        if data != dataset.content_hash:
            what = "unknown data (no provenance.json)" if data == UNKNOWN else f"data sha256 {short_hash(data)}"
            raise UserError(
                f"{run_dir} was trained on {what}, not on the data {dataset.source} holds now (sha256 "
                f"{short_hash(dataset.content_hash)}); run the check with another --log-dir (e.g. {log_dir}-"
                f"{short_hash(dataset.content_hash)[:8]}) to train afresh on these data"
            )


def score_of(run_dir: Path, column: str) -> tuple[int, float, int]:
    """(seed, mean of the last LAST_K evaluations, evaluations counted) of one run."""
    run = read_run(run_dir)
    values = read_progress(run)[column]
    recent = values[-LAST_K:]
    return run.seed, float(np.mean(recent)), len(recent)


def table(
    algo: str,
    spec: TaskSpec,
    dataset: OfflineDataset,
    plans: Mapping[str, Budget],
    run_dirs: Mapping[str, list[Path]],
    budget_name: str,
) -> str:
    """The check's Markdown table: each method's mean ± std over seeds of each seed's last-5 mean, its budget, and
    the behaviour policy and dataset episodes on the same data."""
    column = "normalized_score_mean" if spec.normalizable else "return_mean"
    what = "normalized score" if spec.normalizable else "return"
    rows, counts = [], set()
    for method, budget in plans.items():
        scores = [score_of(run_dir, column) for run_dir in run_dirs[method]]
        counts.update(count for _, _, count in scores)
        values = np.array([value for _, value, _ in scores])
        per_seed = ", ".join(f"{seed}: {value:.1f}" for seed, value, _ in scores)
        steps = read_run(run_dirs[method][0]).budget
        name = algorithm_spec(method).title
        cell = f"{values.mean():.1f} ± {values.std():.1f}"
        rows.append(f"| {name} | {cell} | {per_seed} | {steps}: `{budget.describe()}` |")
    reference = dataset_reference(spec, dataset)
    episodes = reference["episode_normalized_mean" if spec.normalizable else "episode_return_mean"]
    behaviour = reference["behaviour_normalized"]
    behaviour_cell = "–" if behaviour is None else f"{behaviour:.1f}"
    source = dataset.metadata.get("behaviour_policy")  # generated data name their policy (envs/generate.py)
    if behaviour is not None:
        behaviour_note = f"{source or 'the policy'}: its normalized score when it was chosen (envs/generate.py)"
    else:
        behaviour_note = "no score recorded for these data" + (f" (behaviour: {source})" if source else "")
    rows.append(f"| behaviour policy | {behaviour_cell} | | {behaviour_note} |")
    rows.append(
        f"| dataset episodes | {episodes:.1f} | | {reference['episodes']} episodes, {dataset.num_transitions} "
        "transitions |"
    )
    last = f"its last {LAST_K}" if counts == {LAST_K} else f"its last {'/'.join(map(str, sorted(counts)))}"
    caption = (
        f"Learning check: {algo} on {spec.name}, budget {budget_name}, data sha256 {dataset.content_hash}. "
        f"{what.capitalize()}: mean ± std over seeds of each seed's mean of {last} evaluations."
    )
    header = ["", f"| method | {what} | per seed | budget |", "|---|---:|---|---|"]
    return "\n".join([caption, *header, *rows]) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_workers(args.workers)
    check_distinct("--seeds", args.seeds)
    check_algo(args.algo, args.task)
    spec = get_task(args.task)
    if spec.online:
        raise UserError(
            f"{spec.name} is an online environment task without a dataset; a learning check trains on data: pass a "
            "dataset task, e.g. --task hopper-medium-gen (python train.py --list-tasks lists them)"
        )
    budget_name, plans = budgets(args.algo, spec, args.budget)
    requests = [
        RunRequest(spec.name, method, seed, args.log_dir, budget.sets, budget.config, threads=THREADS)
        for method, budget in plans.items()
        for seed in args.seeds
    ]
    for request in requests:  # every key and value is checked before anything starts
        try:
            request.resolved_config()
        except UserError as err:
            raise UserError(f"{request.algo} on {spec.name}: {err}") from None
    dataset = read_data(spec, requests[0])
    to_run, finished = plan(requests)
    existing = [path for job in [*to_run, *finished] if (path := job.resume or job.run_dir) is not None]
    check_same_data(existing, dataset, args.log_dir)  # before any training: a check never mixes two datasets
    resumed = sum(job.resume is not None for job in to_run)
    print(
        f"learning check: {args.algo} on {spec.name} (data sha256 {short_hash(dataset.content_hash)}), budget "
        f"{budget_name}, seeds {' '.join(map(str, args.seeds))}: {len(requests)} runs; {len(finished)} already "
        f"finished, {resumed} to resume, {len(to_run) - resumed} to start ({args.workers} at once, {THREADS} thread "
        "each)",
        flush=True,
    )
    for method, budget in plans.items():
        first = next(request for request in requests if request.algo == method)
        cost = f" ({PRESETS[method].cost})" if budget_name == "cpu" and method == args.algo else ""
        print(f"  {method}: {planned_steps(first)}, {budget.describe()}{cost}")
    if args.dry_run:
        for job in to_run:
            command = dataclasses.replace(job.request, threads=THREADS).command(job.resume)
            print(shlex.join(["python", "train.py", *command[2:]]))
        for job in finished:
            print(f"# finished: {job.run_dir}")
        labels = ", ".join(budget.label for budget in plans.values())
        print(f"# then: publish the runs into {Path(args.results) / spec.name}/{{{labels}}} and print the table")
        return 0
    try:
        done = run_local(to_run, args.workers, THREADS) if to_run else []
    except KeyboardInterrupt:
        again = shlex.join(["python", "bench/learning_check.py", *(sys.argv[1:] if argv is None else argv)])
        raise Interrupted(f"interrupted; finished runs are kept, continue with: {again}") from None
    failed = [job for job in done if not job.outcome.startswith("finished")]
    if failed:
        print(summary(done))
        print(f"{len(failed)} of {len(done)} runs failed; fix the cause and run the same command to continue")
        return 1
    jobs: list[Job] = [*finished, *done]
    run_dirs: dict[str, list[Path]] = {method: [] for method in plans}
    for job in sorted(jobs, key=lambda job: job.request.seed):
        assert job.run_dir is not None, job.request.label
        run_dirs[job.request.algo].append(job.run_dir)
    check_same_data([path for paths in run_dirs.values() for path in paths], dataset, args.log_dir)
    for method, budget in plans.items():
        publish([str(path) for path in run_dirs[method]], args.results, budget.label)
    print()
    print(table(args.algo, spec, dataset, plans, run_dirs, budget_name), end="")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
