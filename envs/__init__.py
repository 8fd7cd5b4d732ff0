"""Everything about the world: tasks, environments, termination functions, datasets and evaluation."""

from envs.datasets import OfflineDataset, load_dataset
from envs.evaluation import Evaluator
from envs.tasks import TaskSpec, get_task, list_tasks, load_task_file, make_env, normalized_score
from envs.termination import get_termination_fn, termination_for

__all__ = [
    "Evaluator",
    "OfflineDataset",
    "TaskSpec",
    "get_task",
    "get_termination_fn",
    "termination_for",
    "list_tasks",
    "load_task_file",
    "load_dataset",
    "make_env",
    "normalized_score",
]
