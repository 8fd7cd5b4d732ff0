"""Data provenance: the content hash of a dataset, the attributes generated files carry, the cache of D4RL files'
hashes, generation that makes the same data whatever the CPU's kernels, and the provenance.json of real runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY_DATASET_TASK, TINY_MOPO_SETTINGS

import train
from envs import datasets as datasets_module
from envs import get_task, load_dataset, normalized_score
from envs.behaviour import load_behaviour_policy
from envs.datasets import (
    HASH_ATTRIBUTE,
    HASH_CACHE_FILE,
    content_hash,
    file_content_hash,
    write_d4rl_hdf5,
)
from envs.generate import BEHAVIOUR_ROOT, actor_policy, generate_dataset, write_dataset
from utils.provenance import PROVENANCE_FILE, git_state, read_provenance, software_versions

REPO = Path(__file__).resolve().parents[1]


def raw_data(n: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(n, 11)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, 3)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.arange(n) % 10 == 9,
        "next_observations": rng.normal(size=(n, 11)).astype(np.float32),
    }


def write_plain(path: Path, data: dict[str, np.ndarray], **options: object) -> Path:
    """An hdf5 file written without this project's attributes, as D4RL's files are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        for key, value in data.items():
            file.create_dataset(key, data=value, **options)
    return path


# ------------------------------------------------------------------------------------------------------ content hash


def test_the_hash_names_the_arrays_not_the_file(tmp_path: Path) -> None:
    data = raw_data()
    digest = content_hash(data)
    plain = write_plain(tmp_path / "plain.hdf5", data)
    packed = write_plain(tmp_path / "packed.hdf5", data, compression="gzip", chunks=True)
    assert plain.read_bytes() != packed.read_bytes()
    with h5py.File(packed, "a") as file:  # metadata and unrelated arrays are not the data
        file.create_dataset("metadata/seed", data=3)
        file.create_dataset("infos/qpos", data=np.ones((50, 6)))
    assert file_content_hash(plain) == file_content_hash(packed) == digest
    # The same values in other dtypes and shapes (float64, rewards as a column, terminals as floats) are the same data.
    widened = {**data, "observations": data["observations"].astype(np.float64), "rewards": data["rewards"][:, None]}
    widened["terminals"] = data["terminals"].astype(np.float32)
    assert content_hash(widened) == digest


def test_one_changed_value_or_a_missing_array_changes_the_hash() -> None:
    data = raw_data()
    digest = content_hash(data)
    for key in ("observations", "actions", "rewards", "next_observations"):
        changed = {name: value.copy() for name, value in data.items()}
        changed[key].reshape(-1)[7] = np.nextafter(changed[key].reshape(-1)[7], np.float32(np.inf))
        assert content_hash(changed) != digest, key
    flipped = {**data, "terminals": data["terminals"].copy()}
    flipped["terminals"][3] = True
    assert content_hash(flipped) != digest
    assert content_hash({k: v for k, v in data.items() if k != "timeouts"}) != digest
    # Moving values between arrays (same bytes in another order of keys) is other data.
    swapped = {**data, "observations": data["next_observations"], "next_observations": data["observations"]}
    assert content_hash(swapped) != digest


def test_written_files_carry_the_hash_versions_and_cpu(tmp_path: Path) -> None:
    data = raw_data()
    path = tmp_path / "made.hdf5"
    write_d4rl_hdf5(path, data, {"seed": 0})
    with h5py.File(path, "r") as file:
        attrs = dict(file.attrs)
    assert attrs[HASH_ATTRIBUTE] == content_hash(data)
    versions = software_versions()
    assert attrs["version_torch"] == versions["torch"] and attrs["version_numpy"] == np.__version__
    for name in ("version_mujoco", "version_gymnasium", "version_python", "cpu_model"):
        assert attrs[name] and attrs[name] != "none", name


def test_generation_writes_the_attributes_and_loading_reads_them(
    dataset_dirs, capsys: pytest.CaptureFixture[str]
) -> None:
    out = write_dataset(TINY_DATASET_TASK, transitions=300, seed=1, max_episode_steps=100)
    with h5py.File(out, "r") as file:
        recorded = file.attrs[HASH_ATTRIBUTE]
        arrays = {key: file[key][()] for key in datasets_module.HASHED_KEYS}
    assert recorded == content_hash(arrays)
    assert f"content sha256 {recorded[:12]}" in capsys.readouterr().out
    assert load_dataset(get_task(TINY_DATASET_TASK)).content_hash == recorded
    assert not (out.parent / HASH_CACHE_FILE).exists()  # the attribute is enough: nothing to cache


def test_d4rl_files_hash_once_then_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_plain(tmp_path / "d4rl" / "hopper-medium-v2.hdf5", raw_data())
    digest = file_content_hash(path)
    assert digest == content_hash(raw_data())
    cache = json.loads((path.parent / HASH_CACHE_FILE).read_text())
    stat = path.stat()
    assert cache[str(path.resolve())] == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}

    def recompute(raw: object) -> str:
        raise AssertionError("the cached hash should have been used")

    monkeypatch.setattr(datasets_module, "content_hash", recompute)
    assert file_content_hash(path) == digest
    monkeypatch.undo()
    # The file replaced by other data (another size or modification time): hashed again, and the cache updated.
    write_plain(path, raw_data(seed=1))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert file_content_hash(path) == content_hash(raw_data(seed=1)) != digest
    assert json.loads((path.parent / HASH_CACHE_FILE).read_text())[str(path.resolve())]["sha256"] != digest


def test_a_read_only_dataset_directory_goes_without_the_cache(tmp_path: Path) -> None:
    path = write_plain(tmp_path / "ro" / "hopper-medium-v2.hdf5", raw_data())
    path.parent.chmod(0o555)
    try:
        if os.access(path.parent, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        assert file_content_hash(path) == content_hash(raw_data())
        assert not (path.parent / HASH_CACHE_FILE).exists()
    finally:
        path.parent.chmod(0o755)


# ------------------------------------------------------------------------------------------ generation vs the CPU

# Generates the first 5000 transitions of hopper-medium-gen and prints their content hash; the thread count is argv[1].
GENERATE = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
from envs.datasets import content_hash
from envs.generate import build_dataset
from envs.tasks import get_task
data, metadata = build_dataset(get_task("hopper-medium-gen"), 5000, 0)
assert metadata["policy_dtype"] == "float64"
print(content_hash(data))
"""


def test_generation_is_the_same_whatever_the_threads_and_cpu_kernels() -> None:
    """The behaviour policy's float32 actions depended on the matmul kernel MKL picked for the CPU (here: MKL_CBWR
    picks another one, as another CPU model would) and MuJoCo turned that last bit into other episodes; run in
    float64 and rounded once, the data is the same for 1 or 2 threads and every kernel choice (docs/datasets.md)."""
    settings = [
        ("1", {}),
        ("2", {}),
        ("1", {"MKL_CBWR": "COMPATIBLE"}),  # MKL's CPU-independent code path instead of the one tuned for this CPU
        ("2", {"ATEN_CPU_CAPABILITY": "default"}),  # PyTorch's scalar kernels instead of AVX2/AVX-512 ones
    ]
    hashes = {}
    for threads, extra in settings:
        env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": threads, **extra}
        done = subprocess.run(
            [sys.executable, "-c", GENERATE, threads], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, done.stderr[-2000:]
        hashes[threads, tuple(extra.items())] = done.stdout.strip()
    assert len(set(hashes.values())) == 1, hashes


def test_the_float64_policy_acts_as_the_float32_actor() -> None:
    """Same noise, same network: the float64 path moves actions by float32 rounding only, not by policy."""
    spec = get_task("hopper-medium-gen")
    actor, _ = load_behaviour_policy(BEHAVIOUR_ROOT / "hopper" / "medium.pt", spec)
    obs = np.random.default_rng(0).normal(size=(1, spec.obs_dim)).astype(np.float32)
    torch.manual_seed(5)
    actions, log_probs = actor_policy(actor)(obs)
    torch.manual_seed(5)
    with torch.no_grad():
        expected, expected_log_prob = actor(torch.as_tensor(obs))
    np.testing.assert_allclose(actions, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(log_probs, expected_log_prob.squeeze(-1).numpy(), atol=1e-3)


# ------------------------------------------------------------------------------------------------- runs' provenance


def tiny_mopo(log_dir: Path, epochs: int = 2) -> list[str]:
    return ["--task", TINY_DATASET_TASK, "--algo", "mopo", "--seed", "1", "--log-dir", str(log_dir), "--no-progress",
            "--set", f"epochs={epochs}", *TINY_MOPO_SETTINGS]  # fmt: skip


@pytest.fixture(scope="module")
def offline_run(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    log_dir = tmp_path_factory.mktemp("provenance_runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
        train.main(tiny_mopo(log_dir))
    (run_dir,) = (log_dir / TINY_DATASET_TASK / "mopo").iterdir()
    return run_dir


def last_wall_time(run_dir: Path) -> float:
    return float((run_dir / "progress.csv").read_text().strip().splitlines()[-1].split(",")[-1])


def test_a_run_records_its_data_code_software_and_machine(offline_run: Path, tiny_dataset_dir: Path) -> None:
    provenance = read_provenance(offline_run)
    assert provenance is not None
    dataset_file = tiny_dataset_dir / get_task(TINY_DATASET_TASK).dataset_file
    with h5py.File(dataset_file, "r") as file:
        recorded = file.attrs[HASH_ATTRIBUTE]
        rewards, ends = file["rewards"][:], file["terminals"][:] | file["timeouts"][:]
    # The data's episodes by hand: returns summed up to each terminal or timeout (the tail as far as it goes).
    bounds = [0, *(np.flatnonzero(ends) + 1)]
    bounds += [] if bounds[-1] == len(rewards) else [len(rewards)]
    returns = [rewards[start:stop].astype(np.float64).sum() for start, stop in zip(bounds[:-1], bounds[1:])]
    reference = provenance["dataset"]
    spec = get_task(TINY_DATASET_TASK)
    assert {key: reference.pop(key) for key in ("episode_return_mean", "episode_normalized_mean")} == pytest.approx(
        {"episode_return_mean": np.mean(returns), "episode_normalized_mean": normalized_score(spec, np.mean(returns))}
    )
    assert reference == {
        "name": TINY_DATASET_TASK,
        "path": str(dataset_file.resolve()),
        "sha256": recorded,
        "transitions": 2000,
        "episodes": len(returns),
        "behaviour_normalized": None,  # random data: no single policy's score
    }
    assert (provenance["task"], provenance["algo"], provenance["seed"]) == (TINY_DATASET_TASK, "mopo", 1)
    assert provenance["argv"] == tiny_mopo(offline_run.parents[2])
    assert provenance["command"].startswith(f"python train.py --task {TINY_DATASET_TASK} --algo mopo --seed 1")
    assert set(provenance["versions"]) >= {"python", "mujoco", "gymnasium", "torch", "numpy"}
    assert provenance["versions"]["numpy"] == np.__version__
    assert provenance["cpu"] and provenance["host"]
    assert provenance["threads"] == torch.get_num_threads()
    assert provenance["git"] == git_state()
    assert provenance["resumes"] == []
    assert provenance["wall_time"] == pytest.approx(last_wall_time(offline_run), abs=0.01)
    assert provenance["updated"] >= provenance["started"]


def test_a_resumed_run_adds_its_segment(offline_run: Path, tiny_dataset_dir: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(offline_run, tmp_path / offline_run.name))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
        train.main(["--resume", str(run_dir), "--no-progress"])
    provenance = read_provenance(run_dir)
    assert provenance is not None and len(provenance["resumes"]) == 1
    assert provenance["resumes"][0]["argv"] == ["--resume", str(run_dir), "--no-progress"]
    assert provenance["dataset"] == read_provenance(offline_run)["dataset"]  # type: ignore[index]


def test_resuming_on_other_data_is_refused_before_anything_changes(
    offline_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_error
) -> None:
    run_dir = Path(shutil.copytree(offline_run, tmp_path / offline_run.name))
    other = tmp_path / "regenerated"
    spec = get_task(TINY_DATASET_TASK)
    write_d4rl_hdf5(other / spec.dataset_file, generate_dataset(spec, 2000, seed=9, max_episode_steps=200))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(other))
    before = {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()}
    err = cli_error(lambda: train.main(["--resume", str(run_dir), "--no-progress"]))
    recorded = read_provenance(offline_run)["dataset"]["sha256"]  # type: ignore[index]
    assert str(run_dir) in err and recorded[:12] in err and "put back the dataset" in err
    assert {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()} == before


def test_a_run_made_before_provenance_resumes_without_inventing_one(
    offline_run: Path, tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    run_dir = Path(shutil.copytree(offline_run, tmp_path / offline_run.name))
    (run_dir / PROVENANCE_FILE).unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
        train.main(["--resume", str(run_dir), "--no-progress"])
    assert not (run_dir / PROVENANCE_FILE).exists()


PAL_TINY = ["num_iter=2", "save_every=1", "fit_epochs=1", "inner_steps=1", "update_paths=4", "horizon=10",
            "eval_episodes=1", "dynamics.hidden_dims=[32,32]", "npg.policy_hidden_dims=[8,8]",
            "npg.baseline_hidden_dims=[8,8]", "init_samples=300", "iter_samples=200", "buffer_size=1000"]  # fmt: skip


def test_an_online_run_records_everything_but_a_dataset(tmp_path: Path) -> None:
    train.main(["--task", "Hopper-v4", "--algo", "pal", "--log-dir", str(tmp_path), "--no-progress", "--set",
                *PAL_TINY])  # fmt: skip
    (run_dir,) = (tmp_path / "Hopper-v4" / "pal").iterdir()
    provenance = read_provenance(run_dir)
    assert provenance is not None and provenance["dataset"] is None
    assert provenance["git"] == git_state() and provenance["cpu"] and provenance["versions"]["mujoco"]
    assert provenance["wall_time"] == pytest.approx(last_wall_time(run_dir), abs=0.01)


def test_an_unreadable_provenance_file_is_one_line(offline_run: Path, tmp_path: Path, cli_error) -> None:
    run_dir = Path(shutil.copytree(offline_run, tmp_path / offline_run.name))
    (run_dir / PROVENANCE_FILE).write_text("{not json")
    err = cli_error(lambda: read_provenance(run_dir))
    assert str(run_dir / PROVENANCE_FILE) in err and "unreadable" in err
