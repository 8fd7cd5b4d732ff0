"""Offline datasets: D4RL-layout hdf5 files (read without the d4rl package), download, and other backends.

Every backend ends in the same `OfflineDataset` of transitions (s, a, r, s', done). Dynamics models learn from
s -> s', so a transition never pairs the last state of one episode with the first state of the next
(docs/datasets.md): the dataset's own `next_observations` are used when the file has them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from envs.tasks import TaskSpec
from utils.checkpoint import atomic_write
from utils.errors import UserError
from utils.provenance import machine

REQUIRED_KEYS: tuple[str, ...] = ("observations", "actions", "rewards", "terminals")
OPTIONAL_KEYS: tuple[str, ...] = ("timeouts", "next_observations")
BACKENDS: tuple[str, ...] = ("auto", "hdf5", "d4rl", "minari")
DATASET_DIR_ENV = "D4RL_DATASET_DIR"  # the same variable the d4rl package reads, so both share one cache
# D4RL's qlearning_dataset assumes this episode length when a file has no timeouts (some -v0 files).
D4RL_MAX_EPISODE_STEPS = 1000

# The arrays a dataset's content hash covers, in this order: what training reads (docs/datasets.md, "Content hash").
HASHED_KEYS: tuple[str, ...] = (*REQUIRED_KEYS, *OPTIONAL_KEYS)
HASH_ATTRIBUTE = "content_sha256"  # the hdf5 attribute where generated files carry it
HASH_CACHE_FILE = ".content_sha256.json"  # beside files without the attribute (D4RL's): path -> size, mtime, hash

_GENERATE_HINT = (
    "generate one with python collect.py dataset --task <env>-<level>-gen (see python train.py --list-tasks)"
)


@dataclass
class OfflineDataset:
    """Transitions as float32 numpy arrays; `episode_starts` marks each episode's first transition."""

    observations: np.ndarray
    actions: np.ndarray
    next_observations: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    episode_starts: np.ndarray
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)  # scalars of the file's metadata/ group (generated data)
    content_hash: str | None = None  # sha256 of the raw arrays (content_hash), None when not computed

    @property
    def num_transitions(self) -> int:
        return int(self.observations.shape[0])

    def start_observations(self) -> np.ndarray:
        """The first observation of every episode [episodes, obs_dim] (where model episodes start), float32."""
        return np.asarray(self.observations, dtype=np.float32)[np.asarray(self.episode_starts, dtype=bool)]

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode in the data (the last one as far as the data goes)."""
        starts = np.flatnonzero(self.episode_starts)
        if len(starts) == 0 or starts[0] != 0:
            starts = np.concatenate([[0], starts])
        return np.add.reduceat(self.rewards.astype(np.float64), starts)

    def validate(self, spec: TaskSpec) -> None:
        """Fail early, naming the array, when data does not fit the task (e.g. a walker2d file for hopper)."""
        expected = {
            "observations": (spec.obs_dim,),
            "next_observations": (spec.obs_dim,),
            "actions": (spec.act_dim,),
            "rewards": (),
            "terminals": (),
            "episode_starts": (),
        }
        n = self.num_transitions
        if n == 0:
            raise UserError(f"dataset {self.source} holds no transitions; use a non-empty dataset for {spec.name}")
        for key, tail in expected.items():
            shape = getattr(self, key).shape
            if shape != (n, *tail):
                raise UserError(
                    f"dataset {self.source}: {key} has shape {shape}, task {spec.name} needs {(n, *tail)}; "
                    f"use a dataset made for {spec.name} "
                    f"({spec.gym_id}: obs_dim={spec.obs_dim}, act_dim={spec.act_dim})"
                )


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _check_raw(raw: Mapping[str, np.ndarray], source: str) -> None:
    """Validate a raw D4RL dict: required keys, equal lengths, 2-d observations/actions and finite floats."""
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise UserError(
                f"dataset {source} has no '{key}' array; a D4RL dataset needs {', '.join(REQUIRED_KEYS)}: "
                f"re-download it or {_GENERATE_HINT}"
            )
    for key in ("observations", "actions", "next_observations"):
        if key in raw and raw[key].ndim != 2:
            raise UserError(f"dataset {source}: '{key}' must be 2-d [N, dim], got shape {raw[key].shape}")
    n = len(raw["observations"])
    if n == 0:
        raise UserError(f"dataset {source} holds no transitions; re-download it or {_GENERATE_HINT}")
    for key, value in raw.items():
        if value.ndim == 0 or len(value) != n:
            rows = "a scalar" if value.ndim == 0 else f"{len(value)} rows"
            raise UserError(
                f"dataset {source} is inconsistent: '{key}' has {rows} but 'observations' has {n} rows; "
                f"re-download or regenerate it"
            )
    for key in ("rewards", "terminals", "timeouts"):
        if key in raw and raw[key].size != n:
            raise UserError(f"dataset {source}: '{key}' must hold one value per row, got shape {raw[key].shape}")
    for key, value in raw.items():
        if np.issubdtype(value.dtype, np.floating):
            bad_rows = ~np.isfinite(value.reshape(n, -1)).all(axis=1)
            if bad_rows.any():
                raise UserError(
                    f"dataset {source}: '{key}' has NaN/Inf at row {int(np.argmax(bad_rows))}; "
                    f"the file is corrupt: re-download or regenerate it"
                )


def read_d4rl_hdf5(path: str | Path, extra_keys: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Read the arrays transitions need from a D4RL-layout hdf5 file, plus `extra_keys` such as "infos/qpos"."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dataset file {path} does not exist; check the path or {_GENERATE_HINT}")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise UserError(
            f"{path} is not a readable HDF5 file ({_one_line(err)}); "
            f"delete it and download it again, or {_GENERATE_HINT}"
        ) from None
    raw: dict[str, np.ndarray] = {}
    with file:
        wanted = [*REQUIRED_KEYS, *(k for k in OPTIONAL_KEYS if k in file), *extra_keys]
        for key in wanted:
            node = file.get(key)
            if not isinstance(node, h5py.Dataset):
                raise UserError(
                    f"dataset {path} has no '{key}' array; a D4RL dataset needs {', '.join(REQUIRED_KEYS)}: "
                    f"re-download it or {_GENERATE_HINT}"
                )
            try:
                raw[key] = np.asarray(node[()])
            except (OSError, ValueError, KeyError) as err:
                raise UserError(
                    f"dataset {path}: cannot read '{key}' ({_one_line(err)}); the file is corrupt: "
                    f"delete it and download it again"
                ) from None
    _check_raw(raw, str(path))
    return raw


def _infer_timeouts(terminals: np.ndarray, max_episode_steps: int) -> np.ndarray:
    """Timeouts every `max_episode_steps` rows since the last terminal, as D4RL does for files without them."""
    n = len(terminals)
    segment_id = np.concatenate([[0], np.cumsum(terminals[:-1])])
    segment_first_row = np.concatenate([[0], np.flatnonzero(terminals[:-1]) + 1])
    step_in_segment = np.arange(n) - segment_first_row[segment_id]
    return ((step_in_segment + 1) % max_episode_steps == 0) & ~terminals


def to_transitions(
    raw: Mapping[str, np.ndarray],
    spec: TaskSpec | None = None,
    source: str = "dataset",
    max_episode_steps: int = D4RL_MAX_EPISODE_STEPS,
) -> OfflineDataset:
    """Turn a raw D4RL dict into transitions where no (s, s') pair spans two episodes.

    With `next_observations` every row is kept, timeout rows included (their next state is real). Without them
    s' = observations[i + 1] is only defined inside an episode, so each episode's last row is dropped: timeouts,
    the end of the data and also terminal rows, whose successor row is already the next episode's reset state
    (D4RL's qlearning_dataset keeps those and pairs them across the boundary). Episode boundaries are
    terminals OR timeouts; files without timeouts get D4RL's every-`max_episode_steps` rule.
    """
    raw = {key: np.asarray(value) for key, value in raw.items()}
    _check_raw(raw, source)
    n = len(raw["observations"])
    observations = raw["observations"].astype(np.float32, copy=False)
    terminals = raw["terminals"].reshape(n).astype(bool)
    if "timeouts" in raw:
        timeouts = raw["timeouts"].reshape(n).astype(bool)
    else:
        timeouts = _infer_timeouts(terminals, max_episode_steps)
    episode_ends = terminals | timeouts
    episode_starts = np.concatenate([[True], episode_ends[:-1]])

    rows: slice | np.ndarray
    if "next_observations" in raw:
        rows = slice(None)  # keep every row, without copying
        next_observations = raw["next_observations"].astype(np.float32, copy=False)
    else:
        has_successor = ~episode_ends
        has_successor[-1] = False
        rows = np.flatnonzero(has_successor)
        if len(rows) == 0:
            raise UserError(f"dataset {source} has no transition inside an episode; it needs episodes longer than 1")
        next_observations = observations[rows + 1]

    dataset = OfflineDataset(
        observations=np.ascontiguousarray(observations[rows]),
        actions=np.ascontiguousarray(raw["actions"].astype(np.float32, copy=False)[rows]),
        next_observations=np.ascontiguousarray(next_observations),
        rewards=raw["rewards"].reshape(n).astype(np.float32)[rows],
        terminals=terminals[rows].astype(np.float32),
        episode_starts=episode_starts[rows],
        source=source,
    )
    if spec is not None:
        dataset.validate(spec)
    return dataset


def default_dataset_dirs() -> list[Path]:
    """Where datasets are looked for and downloaded to: $D4RL_DATASET_DIR first, then ~/.d4rl/datasets."""
    dirs = []
    if os.environ.get(DATASET_DIR_ENV):
        dirs.append(Path(os.environ[DATASET_DIR_ENV]).expanduser())
    dirs.append(Path.home() / ".d4rl" / "datasets")
    return dirs


def _candidate_paths(spec: TaskSpec, dataset_path: str | None) -> list[Path]:
    candidates = []
    if dataset_path:
        given = Path(dataset_path).expanduser()
        candidates.append(given if given.is_file() else given / spec.dataset_file)
    candidates.extend(directory / spec.dataset_file for directory in default_dataset_dirs())
    return candidates


def find_dataset(spec: TaskSpec, dataset_path: str | None) -> Path | None:
    """First existing file among: dataset_path (file, or directory holding spec.dataset_file), env dir, home."""
    if dataset_path and not Path(dataset_path).expanduser().exists():
        raise UserError(
            f"dataset_path {dataset_path} does not exist; point it at an hdf5 file or a directory holding "
            f"{spec.dataset_file}, or leave it unset to use ${DATASET_DIR_ENV} or ~/.d4rl/datasets"
        )
    for candidate in _candidate_paths(spec, dataset_path):
        if candidate.is_file():
            return candidate
    return None


def _how_to_get(file_name: str, looked_in: Iterable[Path], url: str | None = None) -> str:
    places = ", ".join(dict.fromkeys(str(p) for p in looked_in))
    fetch = f"download {url} by hand into one of them" if url else "put the file in one of them"
    return (
        f"looked for {file_name} in: {places}; {fetch}, point to it with {DATASET_DIR_ENV}=DIR "
        f"or --set dataset_path=FILE, or {_GENERATE_HINT}"
    )


def _check_hdf5_keys(path: Path) -> None:
    with h5py.File(path, "r") as file:
        missing = [key for key in REQUIRED_KEYS if key not in file]
    if missing:
        raise ValueError(f"the file has no {', '.join(missing)}")


def download_file(url: str, dest: Path, timeout: float = 60) -> Path:
    """Download `url` to `dest`; only a complete, readable D4RL hdf5 file ever appears at `dest`.

    Bytes stream into `<dest>.part`, which is renamed once the size matches Content-Length and the file opens
    as hdf5 with the D4RL keys; on any failure the .part file is removed, so a retry starts clean.
    """
    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    print(f"downloading {url} -> {dest}", file=sys.stderr)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            length_header = response.headers.get("Content-Length")
            expected = int(length_header) if length_header and length_header.isdigit() else None
            received = 0
            with tqdm(
                total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=None
            ) as progress:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
            if expected is not None and received != expected:
                raise ValueError(f"incomplete download, got {received} of {expected} bytes")
            out.flush()
            os.fsync(out.fileno())
        try:
            _check_hdf5_keys(part)
        except OSError as err:
            raise ValueError(f"the downloaded file is not a valid HDF5 file ({_one_line(err)})") from None
        os.replace(part, dest)
    except (OSError, ValueError, http.client.HTTPException) as err:
        part.unlink(missing_ok=True)
        if isinstance(err, urllib.error.HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        else:
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
        looked_in = [dest, *(directory / dest.name for directory in default_dataset_dirs())]
        raise UserError(
            f"could not download {url} ({_one_line(reason)}); {_how_to_get(dest.name, looked_in)}"
        ) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest


def write_d4rl_hdf5(path: Path, data: Mapping[str, np.ndarray], metadata: Mapping[str, Any] | None = None) -> None:
    """Write arrays in D4RL's layout ("infos/qpos" becomes a nested dataset) atomically, with the attributes of
    `made_with` (content hash, versions, CPU) on the file.

    The file is written next to `path`, flushed to disk and renamed over it, so a crash never leaves a
    half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with h5py.File(tmp, "w") as file:
            for key, value in data.items():
                file.create_dataset(key, data=np.asarray(value))
            for key, value in (metadata or {}).items():
                file.create_dataset(f"metadata/{key}", data=value)
            file.attrs.update(made_with(data))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def _import_optional(module: str) -> tuple[Any | None, str]:
    """Import a backend package lazily; (None, reason) when it is missing or fails to import (d4rl often does)."""
    if importlib.util.find_spec(module) is None:
        return None, "not installed"
    try:
        return importlib.import_module(module), ""
    except Exception as err:  # noqa: BLE001 - any import-time failure means the backend is unusable
        return None, f"import failed: {_one_line(err)}"


def _raw_from_d4rl_package(spec: TaskSpec) -> dict[str, np.ndarray]:
    """Let an (already imported) d4rl package fetch the raw dict; it registers its tasks in the old `gym`."""
    import gym

    try:
        return dict(gym.make(spec.name).get_dataset())
    except Exception as err:  # noqa: BLE001 - d4rl raises bare exceptions for download and file errors
        raise UserError(
            f"the d4rl package could not load {spec.name} ({_one_line(err)}); use --set dataset_backend=hdf5 "
            f"to read or download the hdf5 file directly"
        ) from None


def _raw_from_minari(spec: TaskSpec) -> dict[str, np.ndarray]:
    """Concatenate Minari episodes into D4RL's layout, next states taken from each episode's own observations."""
    if spec.minari_id is None:
        raise UserError(
            f"task {spec.name} has no Minari dataset; use --set dataset_backend=hdf5 (Minari has only the "
            f"medium and expert -v2 equivalents)"
        )
    minari, reason = _import_optional("minari")
    if minari is None:
        raise UserError(f"the minari backend needs the minari package ({reason}); install it with pip install minari")
    try:
        dataset = minari.load_dataset(spec.minari_id, download=True)
    except Exception as err:  # noqa: BLE001 - minari's download and lookup errors have no common base class
        raise UserError(
            f"minari could not load {spec.minari_id} ({_one_line(err)}); check the id and network"
        ) from None
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS)}
    for episode in dataset.iterate_episodes():
        episode_obs = np.asarray(episode.observations, dtype=np.float32)
        terminals = np.asarray(episode.terminations, dtype=bool)
        timeouts = np.asarray(episode.truncations, dtype=bool).copy()
        timeouts[-1] |= not terminals[-1]  # the episode ends here whatever the flags say
        parts["observations"].append(episode_obs[:-1])
        parts["next_observations"].append(episode_obs[1:])
        parts["actions"].append(np.asarray(episode.actions, dtype=np.float32))
        parts["rewards"].append(np.asarray(episode.rewards, dtype=np.float32))
        parts["terminals"].append(terminals)
        parts["timeouts"].append(timeouts)
    if not parts["observations"]:
        raise UserError(f"minari dataset {spec.minari_id} has no episodes; try --set dataset_backend=hdf5")
    return {key: np.concatenate(arrays) for key, arrays in parts.items()}


def load_dataset(
    spec: TaskSpec,
    dataset_path: str | None = None,
    backend: str = "auto",
    download: bool = True,
) -> OfflineDataset:
    """Load a task's dataset as transitions.

    backend "auto": a local hdf5 file (find_dataset), else the d4rl package if it imports, else a download into
    $D4RL_DATASET_DIR or ~/.d4rl/datasets. "hdf5": local file or download only. "d4rl": the d4rl package.
    "minari": Minari's dataset for the task (a re-collection with -v5 envs, not D4RL's data: scores are not
    comparable with D4RL tables).
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown dataset backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "minari":
        raw = _raw_from_minari(spec)
        return _hashed(to_transitions(raw, spec, source=f"minari:{spec.minari_id}"), raw)
    if backend == "d4rl":
        if spec.url is None:
            raise UserError(
                f"task {spec.name} is generated by this project, not part of d4rl; use --set dataset_backend=hdf5"
            )
        d4rl_module, reason = _import_optional("d4rl")
        if d4rl_module is None:
            raise UserError(
                f"the d4rl backend needs the d4rl package ({reason}); install it with "
                f"pip install git+https://github.com/Farama-Foundation/D4RL or use --set dataset_backend=hdf5"
            )
        raw = _raw_from_d4rl_package(spec)
        return _hashed(to_transitions(raw, spec, source=f"d4rl:{spec.name}"), raw)

    path = find_dataset(spec, dataset_path)
    if path is None and backend == "auto" and spec.url is not None:
        d4rl_module, _ = _import_optional("d4rl")
        if d4rl_module is not None:
            raw = _raw_from_d4rl_package(spec)
            return _hashed(to_transitions(raw, spec, source=f"d4rl:{spec.name}"), raw)
    if path is None:
        looked_in = _candidate_paths(spec, dataset_path)
        if spec.source_file is not None:  # a user's own task: its data are theirs to provide, nothing generates them
            raise UserError(
                f"task file {spec.source_file}: its dataset {spec.dataset_file} does not exist; write the data there "
                "in D4RL's layout (docs/custom_tasks.md) or point `dataset:` at the file"
            )
        if spec.url is None:
            raise UserError(
                f"no dataset for {spec.name} (looked in: {', '.join(str(p) for p in looked_in)}); generate it with "
                f"python collect.py dataset --task {spec.name}"
            )
        if not download:
            raise UserError(
                f"dataset for {spec.name} not found and downloading is off (--set download=false); "
                f"{_how_to_get(spec.dataset_file, looked_in, spec.url)}"
            )
        path = download_file(spec.url, default_dataset_dirs()[0] / spec.dataset_file)
    raw = read_d4rl_hdf5(path)
    dataset = to_transitions(raw, spec, source=str(path))
    dataset.metadata = read_metadata(path)
    dataset.content_hash = file_content_hash(path, raw)
    return dataset


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Scalar entries of an hdf5 file's `metadata/` group (how a generated dataset was made); {} when absent."""
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as file:
        group = file.get("metadata")
        if not isinstance(group, h5py.Group):
            return out
        for key, node in group.items():
            if isinstance(node, h5py.Dataset) and node.shape == ():
                value = node[()]
                out[key] = (
                    value.decode() if isinstance(value, bytes) else value.item() if hasattr(value, "item") else value
                )
    return out


# ---------------------------------------------------------------------------------------------------- content hash


def content_hash(raw: Mapping[str, np.ndarray]) -> str:
    """sha256 of a dataset's HASHED_KEYS arrays, so it names the data, not the file's bytes (compression, chunking,
    attributes and metadata do not count; one changed value does).

    Each array present is hashed in HASHED_KEYS order as its name, its canonical dtype and shape, then its values in
    C order: floats as little-endian float32 (what training reads), terminals and timeouts as one byte 0/1, and
    rewards, terminals and timeouts flattened to one value per row.
    """
    digest = hashlib.sha256()
    for key in HASHED_KEYS:
        if key not in raw:
            continue
        value = np.asarray(raw[key])
        if key in ("terminals", "timeouts"):
            value = value.reshape(-1).astype(bool).astype(np.uint8)
        else:
            value = value.astype("<f4", copy=False)
            value = value.reshape(-1) if key == "rewards" else value
        value = np.ascontiguousarray(value)
        digest.update(f"{key}|{value.dtype.str}|{value.shape}\n".encode())
        digest.update(memoryview(value).cast("B"))
    return digest.hexdigest()


def made_with(data: Mapping[str, np.ndarray]) -> dict[str, str]:
    """The hdf5 attributes a written dataset carries: its content hash and the software and CPU that made it."""
    facts = machine()
    versions = {f"version_{name}": version or "none" for name, version in facts["versions"].items()}
    return {HASH_ATTRIBUTE: content_hash(data), **versions, "cpu_model": facts["cpu"]}


def _hashed(dataset: OfflineDataset, raw: Mapping[str, np.ndarray]) -> OfflineDataset:
    dataset.content_hash = content_hash(raw)
    return dataset


def file_content_hash(path: str | Path, raw: Mapping[str, np.ndarray] | None = None) -> str:
    """A dataset file's content hash: its own attribute when it was written here, else the one cached beside it for
    this path, size and modification time, else computed from `raw` (or the file) and cached (D4RL's files: their
    first load pays for it). A directory that cannot be written just goes without the cache."""
    path = Path(path).resolve()
    with h5py.File(path, "r") as file:
        recorded = file.attrs.get(HASH_ATTRIBUTE)
    if recorded is not None:
        return recorded.decode() if isinstance(recorded, bytes) else str(recorded)
    stat = path.stat()
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache_path = path.parent / HASH_CACHE_FILE
    cache = _read_hash_cache(cache_path)
    entry = cache.get(str(path))
    if isinstance(entry, dict) and {k: entry.get(k) for k in key} == key and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = content_hash(raw if raw is not None else read_d4rl_hdf5(path))
    cache[str(path)] = {**key, "sha256": digest}
    text = json.dumps(cache, indent=1, sort_keys=True) + "\n"
    with contextlib.suppress(OSError):  # a read-only dataset directory: the hash is recomputed on each load
        atomic_write(cache_path, lambda handle: handle.write(text.encode()))
    return digest


def _read_hash_cache(path: Path) -> dict[str, Any]:
    """The cache's entries; a missing or damaged cache is an empty one (it only saves time)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
