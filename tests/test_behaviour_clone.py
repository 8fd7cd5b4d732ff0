"""What a clone has: behaviour/<env>/ carries the exported policies and medium-replay log (npz), not training.pt.

Every generated level is made from those files alone; continuing behaviour training without training.pt is refused
in one line naming the file and the command that recreates it, and that command works; with training.pt present,
training continues where it stopped."""

from __future__ import annotations

import hashlib
import shlex
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

import collect
from envs import generate
from envs.tasks import GENERATED_LEVELS

REPO_BEHAVIOUR = Path(__file__).resolve().parents[1] / "behaviour"
EXPORTED = ("medium.pt", "expert.pt", "medium_replay.npz")  # what git tracks in behaviour/<env>/


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset_dirs: Any) -> Path:
    """behaviour/ as a clone has it (pendulum's committed files, no training.pt), in place of the repository's."""
    root = tmp_path / "behaviour"
    (root / "pendulum").mkdir(parents=True)
    for name in EXPORTED:
        shutil.copy2(REPO_BEHAVIOUR / "pendulum" / name, root / "pendulum" / name)
    monkeypatch.setattr(generate, "BEHAVIOUR_ROOT", root)
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "datasets"))
    return root / "pendulum"


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def suggested_command(message: str) -> list[str]:
    """The arguments of the `python collect.py ...` command a message ends with."""
    words = shlex.split(message[message.index("python collect.py") :])
    assert words[:2] == ["python", "collect.py"], message
    return words[2:]


def test_every_level_is_generated_from_the_tracked_files_alone(
    clone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[str] = []
    real_load = torch.load

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        loaded.append(Path(getattr(file, "name", file)).name)
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    before = digests(clone)
    written = collect.main(["dataset", "--env", "pendulum", "--transitions", "300"])
    assert written is not None and [path.name for path in written] == [
        f"pendulum-{level}-gen.hdf5" for level in GENERATED_LEVELS
    ]
    assert set(loaded) == {"medium.pt", "expert.pt"}  # policies; the replay log came from the npz
    assert digests(clone) == before and not (clone / "training.pt").exists()
    with np.load(clone / "medium_replay.npz") as log, h5py.File(tmp_path / "datasets" / written[3].name) as file:
        assert written[3].name == "pendulum-medium-replay-gen.hdf5"
        np.testing.assert_array_equal(file["actions"][()], log["actions"])
        assert len(file["rewards"]) == int(log["lengths"].sum()) == 12_000
        np.testing.assert_array_equal(file["infos/action_log_probs"][()], log["log_probs"])


def test_continuing_without_training_state_is_refused_and_the_command_given_recreates_it(
    clone: Path, cli_error: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digests(clone)
    err = cli_error(lambda: collect.main(["train", "--env", "pendulum", "--steps", "60", "--no-progress"]))
    assert err.startswith(f"error: {clone / 'training.pt'} is missing, so training cannot continue")
    assert err.endswith("python collect.py train --env pendulum --steps 60 --no-progress --from-scratch")
    assert digests(clone) == before  # nothing written

    collect.main(suggested_command(err))  # trains from step 0 where the exported files are
    state = torch.load(clone / "training.pt", weights_only=False)
    assert state["env_steps"] == 60 and int(state["log"]["lengths"].sum()) == 60
    assert all(digests(clone)[name] == before[name] for name in EXPORTED)
    capsys.readouterr()

    # Now the state is local: the plain command continues it, and --from-scratch is refused rather than discarding it.
    collect.main(["train", "--env", "pendulum", "--steps", "90", "--no-progress"])
    out = capsys.readouterr().out
    assert f"resumed {clone} at env step 60" in out and "trained 90 env steps" in out
    err = cli_error(
        lambda: collect.main(["train", "--env", "pendulum", "--steps", "120", "--no-progress", "--from-scratch"])
    )
    assert "training.pt exists and --from-scratch would start over from step 0" in err
    collect.main(suggested_command(err.split(" (or ")[0]))
    assert "resumed" in capsys.readouterr().out
    assert torch.load(clone / "training.pt", weights_only=False)["env_steps"] == 120


def test_refusal_names_the_work_dir_given(tmp_path: Path, clone: Path, cli_error: Any) -> None:
    work = tmp_path / "my run"
    shutil.copytree(clone, work)
    err = cli_error(lambda: collect.main(["train", "--env", "pendulum", "--work-dir", str(work), "--seed", "3"]))
    assert f"{work / 'training.pt'} is missing" in err
    assert err.endswith(f"python collect.py train --env pendulum --seed 3 --work-dir '{work}' --from-scratch")
    assert not (work / "training.pt").exists()


def test_a_fresh_work_dir_trains_without_the_flag(tmp_path: Path, clone: Path) -> None:
    collect.main(["train", "--env", "pendulum", "--steps", "30", "--work-dir", str(tmp_path / "new"), "--no-progress"])
    assert torch.load(tmp_path / "new" / "training.pt", weights_only=False)["env_steps"] == 30


def test_policies_in_a_clone_keep_the_exported_log_and_refuse_one_it_does_not_hold(clone: Path, cli_error: Any) -> None:
    before = digests(clone)
    # Pendulum's medium was chosen with --medium-fraction 0.25: a clone re-exports the same files, byte for byte.
    collect.main(["policies", "--env", "pendulum", "--medium-fraction", "0.25"])
    assert digests(clone) == before
    # At 1/3 the medium would be the 20k snapshot, past the exported log: refused before anything is written.
    err = cli_error(lambda: collect.main(["policies", "--env", "pendulum"]))
    assert err.startswith(f"error: {clone / 'training.pt'} is missing and {clone / 'medium_replay.npz'} does not log")
    assert err.endswith(
        "recreate the training state: python collect.py train --env pendulum --steps 20000 --from-scratch"
    )
    assert digests(clone) == before
