"""train.py's last line: the score (last evaluation and the mean of the last 5) next to the dataset's episodes and
the behaviour policy, and where the curves are."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from algos.train_run import final_line
from envs import OfflineDataset, get_task, normalized_score
from utils.logger import PROGRESS_COLUMNS

SPEC = get_task("halfcheetah-medium-gen")


def dataset(episode_returns: list[float], metadata: dict) -> OfflineDataset:
    """Two-step episodes whose rewards sum to the given returns."""
    rewards = np.repeat(np.asarray(episode_returns, np.float32) / 2, 2)
    starts = np.tile([True, False], len(episode_returns))
    n = len(rewards)
    zeros = np.zeros((n, SPEC.obs_dim), np.float32)
    return OfflineDataset(zeros, np.zeros((n, SPEC.act_dim), np.float32), zeros, rewards, np.zeros(n, bool), starts,
                          "test", metadata)  # fmt: skip


def write_progress(run_dir: Path, scores: list[float]) -> None:
    with open(run_dir / "progress.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, PROGRESS_COLUMNS)
        writer.writeheader()
        for i, score in enumerate(scores):
            writer.writerow({**dict.fromkeys(PROGRESS_COLUMNS, 0), "epoch": i + 1, "normalized_score_mean": score})


def test_final_line_puts_the_score_next_to_the_data_and_the_behaviour_policy(tmp_path: Path) -> None:
    write_progress(tmp_path, [1.0, 10.0, 20.0, 30.0, 40.0, 5.0])
    result = {"normalized_mean": 5.0, "normalized_std": 0.5, "return_mean": 300.0, "return_std": 10.0}
    data = dataset([4000.0, 4200.0], {"policy_normalized_score": 37.6})
    line = final_line(result, SPEC, data, tmp_path)
    expected_dataset = normalized_score(SPEC, 4100.0)
    assert line.startswith("final normalized score 5.0 ± 0.5 (return 300.0, mean of the last 5 evaluations 21.0)")
    assert f"dataset episodes {expected_dataset:.1f}, behaviour policy 37.6" in line
    assert f"tensorboard --logdir {tmp_path}" in line


def test_final_line_without_a_behaviour_policy(tmp_path: Path) -> None:
    write_progress(tmp_path, [7.0])
    result = {"normalized_mean": 7.0, "normalized_std": 0.0, "return_mean": 600.0, "return_std": 0.0}
    line = final_line(result, get_task("halfcheetah-random-gen"), dataset([-280.0], {}), tmp_path)
    assert "mean of the last" not in line and "behaviour policy" not in line
    assert "dataset episodes 0.0 |" in line or "dataset episodes -0.0 |" in line
    assert line.startswith("final normalized score 7.0 ± 0.0 (return 600.0)")


def test_episode_returns_split_at_episode_starts() -> None:
    data = dataset([2.0, 4.0, 6.0], {})
    np.testing.assert_allclose(data.episode_returns(), [2.0, 4.0, 6.0])
