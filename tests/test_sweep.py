"""sweep.py and train.py --seeds: grids run as processes, finished runs are skipped, interrupted ones resumed."""

from __future__ import annotations

import os
import pickle
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import sweep
import train
from utils import launch
from utils.errors import run_cli
from utils.launch import RunRequest, plan

TASK = "hopper-random-gen"
TINY = [
    "epochs=1",
    "steps_per_epoch=20",
    "batch_size=16",
    "rollout_freq=20",
    "rollout_batch_size=50",
    "eval_episodes=1",
    "save_every=1",
    "dynamics.num_ensemble=2",
    "dynamics.num_elites=1",
    "dynamics.hidden_dims=[8]",
    "dynamics.weight_decay=[0,0]",
    "dynamics.max_epochs=1",
    "sac.hidden_dims=[8]",
]


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("config.yaml"))


def sweep_args(root: Path, *extra: str) -> list[str]:
    return ["--tasks", TASK, "--algos", "mopo", "--log-dir", str(root), "--workers", "2", "--set", *TINY, *extra]


def test_two_by_two_grid_runs_then_skips_then_resumes(
    data_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = ["--seeds", "0", "1", "--grid", "penalty_coef=0.5,2"]
    assert sweep.main(sweep_args(tmp_path, *grid)) == 0
    runs = run_dirs(tmp_path)
    assert len(runs) == 4
    assert {run.parents[2].name for run in runs} == {"penalty_coef=0.5", "penalty_coef=2"}
    assert all((run / "checkpoints" / "checkpoint.pt").is_file() for run in runs)
    assert "penalty_coef: 2.0" in (tmp_path / "penalty_coef=2").rglob("config.yaml").__next__().read_text()
    capsys.readouterr()

    assert sweep.main(sweep_args(tmp_path, *grid)) == 0
    out = capsys.readouterr().out
    assert "4 already finished, 0 to resume, 0 to start" in out
    assert run_dirs(tmp_path) == runs

    # An interrupted run (its checkpoint is behind its configured epochs) is resumed in place.
    checkpoint = runs[0] / "checkpoints" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=False)
    state["epoch"], state["global_step"] = 0, 0
    torch.save(state, checkpoint)
    assert sweep.main(sweep_args(tmp_path, *grid)) == 0
    assert "3 already finished, 1 to resume, 0 to start" in capsys.readouterr().out
    assert run_dirs(tmp_path) == runs
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1


def test_changed_settings_start_new_runs(data_env: None, tmp_path: Path) -> None:
    request = RunRequest(TASK, "mopo", 0, str(tmp_path), tuple(TINY))
    assert plan([request])[0][0].resume is None  # nothing there yet
    assert sweep.main(sweep_args(tmp_path)) == 0
    to_run, finished = plan([request])
    assert not to_run and len(finished) == 1
    other = RunRequest(TASK, "mopo", 0, str(tmp_path), (*TINY, "penalty_coef=9"))
    to_run, finished = plan([other])
    assert len(to_run) == 1 and to_run[0].resume is None and not finished


def test_train_with_several_seeds(data_env: None, tmp_path: Path) -> None:
    train.main(["--task", TASK, "--algo", "mopo", "--seeds", "3", "4", "--log-dir", str(tmp_path), "--set", *TINY])
    names = sorted(p.name.split("-")[0] for p in (tmp_path / TASK / "mopo").iterdir())
    assert names == ["seed3", "seed4"]


def one_line_error(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    err = one_line_error(sweep.main, sweep_args(tmp_path, "--grid", "penalty_coeff=1,2"), capsys)
    assert "penalty_coeff" in err and "penalty_coef" in err
    err = one_line_error(sweep.main, sweep_args(tmp_path, "--grid", "penalty_coef"), capsys)
    assert "key=v1,v2" in err
    assert not tmp_path.joinpath(TASK).exists()
    err = one_line_error(train.main, ["--task", TASK, "--algo", "mopo", "--seeds", "0", "--seed", "1"], capsys)
    assert "--seeds" in err
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    err = one_line_error(sweep.main, sweep_args(tmp_path, "--backend", "ray"), capsys)
    assert "pip install" in err and "ray" in err


def test_ray_backend_on_a_local_instance(data_env: None, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    with capfd.disabled():  # a local Ray instance stalls for minutes on pytest's captured file descriptors
        assert sweep.main(sweep_args(tmp_path, "--backend", "ray", "--seeds", "0")) == 0
    (run,) = run_dirs(tmp_path)
    assert (run / "checkpoints" / "checkpoint.pt").is_file()


class StandInRay(types.ModuleType):
    """The part of `ray` that utils/launch.run_ray uses: init, remote(num_cpus=...), f.remote(...), get, shutdown.

    Records what it is given and really runs each task (in this process, when it is submitted). As with Ray, arguments
    and results cross to and from the task by pickling, so a task that mutates its argument instead of returning the
    result, or a job that cannot be pickled, fails here as it would on a cluster."""

    def __init__(self) -> None:
        super().__init__("ray")
        self.init_calls: list[dict[str, Any]] = []
        self.remote_options: list[dict[str, Any]] = []
        self.submitted = 0
        self.shutdowns = 0

    def init(self, address: str | None = None, **kwargs: Any) -> None:
        self.init_calls.append({"address": address, **kwargs})

    def remote(self, *function: Callable[..., Any], **options: Any) -> Any:
        """`@ray.remote(num_cpus=...)` or a bare `@ray.remote`."""
        self.remote_options.append(options)
        ray = self

        def decorate(function: Callable[..., Any]) -> Any:
            class RemoteFunction:
                @staticmethod
                def remote(*args: Any) -> bytes:
                    ray.submitted += 1
                    copies = pickle.loads(pickle.dumps(args))
                    return pickle.dumps(function(*copies))  # the "object ref": the pickled result

            return RemoteFunction()

        return decorate(*function) if function else decorate

    def get(self, refs: list[bytes]) -> list[Any]:
        assert isinstance(refs, list), "ray.get of one ref per job, as a list"
        return [pickle.loads(ref) for ref in refs]

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def stand_in_ray(monkeypatch: pytest.MonkeyPatch) -> StandInRay:
    ray = StandInRay()
    monkeypatch.setitem(sys.modules, "ray", ray)
    return ray


def test_ray_backend_with_a_stand_in_ray(
    data_env: None,
    tmp_path: Path,
    stand_in_ray: StandInRay,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """CI has no Ray: this runs sweep.py --backend ray through run_ray's own code with real train.py processes."""
    threads: list[int] = []
    execute = launch.execute

    def recorded_execute(job: launch.Job, threads_per_run: int, echo: Callable[[str], None]) -> launch.Job:
        threads.append(threads_per_run)
        return execute(job, threads_per_run, echo)

    monkeypatch.setattr(launch, "execute", recorded_execute)
    argv = sweep_args(tmp_path, "--backend", "ray", "--seeds", "0", "--cpus-per-run", "2")
    assert sweep.main(argv) == 0
    # A local instance: no address, no dashboard (minutes to start on a small machine), worker logs kept quiet.
    assert stand_in_ray.init_calls == [
        {"address": None, "ignore_reinit_error": True, "log_to_driver": False, "include_dashboard": False}
    ]
    assert stand_in_ray.remote_options == [{"num_cpus": 2}]  # each run reserves --cpus-per-run CPUs ...
    assert threads == [2]  # ... and runs with that many threads
    assert stand_in_ray.submitted == 1 and stand_in_ray.shutdowns == 1
    (run,) = run_dirs(tmp_path)
    assert run.name.startswith("seed0-") and (run / "checkpoints" / "checkpoint.pt").is_file()
    out = capsys.readouterr().out
    assert "0 already finished, 0 to resume, 1 to start (ray)" in out
    assert out.count(": finished  normalized") == 1  # the result that came back through ray.get


def test_ray_backend_joins_a_cluster_without_local_only_options(stand_in_ray: StandInRay) -> None:
    """include_dashboard may only be given when Ray starts the instance; with an address it must be absent."""
    assert launch.run_ray([], "ray://head:10001", cpus_per_run=3) == []
    assert stand_in_ray.init_calls == [
        {"address": "ray://head:10001", "ignore_reinit_error": True, "log_to_driver": False}
    ]
    assert stand_in_ray.remote_options == [{"num_cpus": 3}] and stand_in_ray.shutdowns == 1


def test_ray_backend_shuts_ray_down_when_a_task_raises(
    stand_in_ray: StandInRay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_execute(job: launch.Job, threads: int, echo: Callable[[str], None]) -> launch.Job:
        raise RuntimeError("worker died")

    monkeypatch.setattr(launch, "execute", broken_execute)
    job = launch.Job(RunRequest(TASK, "mopo", 0, str(tmp_path), tuple(TINY)), None)
    with pytest.raises(RuntimeError, match="worker died"):
        launch.run_ray([job], None, cpus_per_run=1)
    assert stand_in_ray.shutdowns == 1


BC_TINY = ["epochs=1", "steps_per_epoch=1", "eval_episodes=1"]


def test_a_seed_listed_twice_is_refused_before_anything_runs(
    data_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--seeds 0 0` used to start two processes writing into one run directory (sweep.py) or silently run one seed
    (train.py, with or without --stack-seeds); now each refuses it in one line naming the fix, and writes nothing.
    A run listed twice some other way (the same --grid value twice, or spelled two ways) is refused as well."""
    log = ["--log-dir", str(tmp_path / "log")]
    sweep_argv = ["--tasks", TASK, "--algos", "bc", "--seeds", "0", "0", "--set", *BC_TINY, *log]
    err = one_line_error(sweep.main, sweep_argv, capsys)
    assert "--seeds lists 0 twice; give each value once (--seeds 0)" in err
    train_argv = ["--task", TASK, "--algo", "bc", "--seeds", "0", "1", "0", "--set", *BC_TINY, *log]
    err = one_line_error(train.main, train_argv, capsys)
    assert "--seeds lists 0 twice; give each value once (--seeds 0 1)" in err
    err = one_line_error(train.main, [*train_argv, "--stack-seeds"], capsys)
    assert "--seeds lists 0 twice" in err
    same_dir = ["--stack-seeds", "--resume", str(tmp_path / "run"), f"{tmp_path}/./run/"]
    err = one_line_error(train.main, same_dir, capsys)
    assert f"--resume lists {os.path.realpath(tmp_path / 'run')} twice" in err
    err = one_line_error(sweep.main, ["--tasks", TASK, "--algos", "bc", "bc", "--set", *BC_TINY, *log], capsys)
    assert "--algos lists bc twice" in err
    grid = ["--tasks", TASK, "--algos", "bc", "--set", *BC_TINY, *log, "--grid"]
    err = one_line_error(sweep.main, [*grid, "actor_lr=1e-3,1e-3"], capsys)
    assert "lists actor_lr=1e-3 twice; give each value once: --grid actor_lr=1e-3" in err
    err = one_line_error(sweep.main, [*grid, "actor_lr=1e-3,0.001"], capsys)
    assert "are one run (the same merged config)" in err
    assert not (tmp_path / "log").exists()


def test_runs_started_at_the_same_second_get_their_own_directories(
    data_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs of one seed named in the same second, even when the other claims the name between this run choosing
    it and creating it (two processes racing), each write into a directory of their own: one evaluation row and one
    event file each."""
    monkeypatch.setattr(train.time, "strftime", lambda *args: "20260101-120000")
    resolve = train.resolve_config

    def another_run_claims_the_name_first(args: Any) -> Any:
        cfg, run_dir, checkpoint = resolve(args)
        run_dir.mkdir(parents=True, exist_ok=True)  # as a second process would, after this one chose the name
        return cfg, run_dir, checkpoint

    monkeypatch.setattr(train, "resolve_config", another_run_claims_the_name_first)
    argv = ["--task", TASK, "--algo", "bc", "--seed", "0", "--log-dir", str(tmp_path), "--set", *BC_TINY]
    train.main([*argv, "--no-progress"])
    parent = tmp_path / TASK / "bc"
    assert sorted(p.name for p in parent.iterdir()) == ["seed0-20260101-120000", "seed0-20260101-120000-1"]
    assert list((parent / "seed0-20260101-120000").iterdir()) == []  # the other run's directory, untouched
    train.main([*argv, "--no-progress"])
    runs = sorted(p.parent for p in parent.glob("*/config.yaml"))
    assert [run.name for run in runs] == ["seed0-20260101-120000-1", "seed0-20260101-120000-2"]
    for run in runs:
        assert (run / "progress.csv").read_text().count("\n1,") == 1  # epoch 1 logged once
        assert len(list(run.glob("events.out.tfevents.*"))) == 1


def test_run_directories_are_claimed_exclusively(tmp_path: Path) -> None:
    """Many creators of one name at once: each gets a directory of its own, the first the name itself."""
    from concurrent.futures import ThreadPoolExecutor

    from utils.paths import create_run_dir

    wanted = tmp_path / "task" / "algo" / "seed0-20260101-120000"
    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda _: create_run_dir(wanted), range(8)))
    assert len(set(created)) == 8
    assert {path.name for path in created} == {wanted.name, *(f"{wanted.name}-{n}" for n in range(1, 8))}


def test_a_sweep_starts_afresh_a_run_that_stopped_before_its_first_checkpoint(
    data_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train.py --resume refuses a run directory with nothing to resume, so a sweep run again starts such a run in a
    new directory instead of resuming it, and leaves the old directory as it was."""
    argv = ["--tasks", TASK, "--algos", "bc", "--seeds", "0", "--set", *BC_TINY, "--log-dir", str(tmp_path)]
    assert sweep.main(argv) == 0
    (stopped,) = run_dirs(tmp_path)
    (stopped / "checkpoints" / "checkpoint.pt").unlink()
    before = {path: path.read_bytes() for path in stopped.rglob("*") if path.is_file()}
    capsys.readouterr()
    assert sweep.main(argv) == 0
    assert "0 already finished, 0 to resume, 1 to start" in capsys.readouterr().out
    assert {path: path.read_bytes() for path in stopped.rglob("*") if path.is_file()} == before
    (fresh,) = [run for run in run_dirs(tmp_path) if run != stopped]
    assert (fresh / "checkpoints" / "checkpoint.pt").is_file()
    to_run, finished = plan(sweep.build_requests(sweep.parse_args(argv)))
    assert not to_run and [job.run_dir for job in finished] == [fresh]


def test_the_summary_names_a_score_only_where_the_run_has_one(tmp_path: Path) -> None:
    """A run without reference scores (the Pendulum study writes nan) is summarised without a `normalized nan`."""
    header = "epoch,step,return_mean,return_std,normalized_score_mean,normalized_score_std,length_mean,wall_time\n"
    scored, unscored, fresh = tmp_path / "scored", tmp_path / "unscored", tmp_path / "fresh"
    rows = {scored: "5,5000,-4.4,0.7,2.25,0.0,1000.0,211.2\n", unscored: "5,5,-15.6,3.6,nan,nan,200,361\n"}
    for run_dir, row in rows.items():
        run_dir.mkdir()
        (run_dir / "progress.csv").write_text(header + row)
    fresh.mkdir()
    (fresh / "progress.csv").write_text(header)
    assert launch.last_score(scored) == 2.25
    assert launch.last_score(unscored) is None and launch.last_score(fresh) is None
    request = RunRequest(TASK, "mopo", 0, str(tmp_path), ())
    jobs = [
        launch.Job(request, None, "finished", scored, launch.last_score(scored)),
        launch.Job(request, None, "finished", unscored, launch.last_score(unscored)),
    ]
    assert launch.summary(jobs).splitlines() == [
        f"{request.label}: finished  normalized 2.2  {scored}",
        f"{request.label}: finished  {unscored}",
    ]
