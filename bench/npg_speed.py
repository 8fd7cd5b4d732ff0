"""Where a PAL iteration's time goes, with the Hopper-v4 preset (configs/pal/defaults.yaml).

    python bench/npg_speed.py --device cpu [--iterations 3] [--algo pal|mal] [--threads N]

Runs the first `--iterations` iterations of the real loop (the first collects init_samples, later ones
iter_samples) and prints, per iteration, seconds spent sampling the real environment, fitting the ensemble, in
NPG steps (model rollouts + NPG + baseline) and evaluating, with the fit's gradient steps and the NPG samples.
Later iterations fit a larger buffer, so the fit grows until the buffer is full (PAL: 10,000 transitions).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algos import build_algorithm  # noqa: E402
from algos.npg_trainer import NPGTrainer  # noqa: E402
from envs import Evaluator, get_task  # noqa: E402
from envs.task_config import load_task_config  # noqa: E402
from utils.allocator import keep_freed_memory  # noqa: E402
from utils.logger import RunLogger  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--algo", default="pal", choices=["pal", "mal"])
    parser.add_argument("--task", default="Hopper-v4")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: PyTorch's)")
    args = parser.parse_args()
    keep_freed_memory()  # as train.py does
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_task_config(args.algo, args.task, overrides=[f"num_iter={args.iterations}"])
    spec = get_task(cfg.task)
    device = torch.device(args.device)
    print(f"{args.algo} on {spec.name}, {device}, {torch.get_num_threads()} threads")
    print(
        f"{'iter':>4} {'samples':>8} {'sampling s':>10} {'model fit s':>11} {'fit steps':>9} {'NPG s':>7} "
        f"{'NPG samples':>11} {'eval s':>7} {'total s':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        logger = RunLogger(tmp, quiet=True)
        algo = build_algorithm(cfg, spec.obs_dim, spec.act_dim, device)
        evaluator = Evaluator(spec, cfg.eval_episodes, cfg.seed, device, cfg.act_repeat)
        trainer = NPGTrainer(cfg, algo, spec, evaluator, logger, tmp, device, progress=False)  # type: ignore[arg-type]
        for _ in range(args.iterations):
            m, _ = trainer.iterate()
            trainer.iteration += 1
            print(
                f"{trainer.iteration:>4} {int(m['train/iter_samples']):>8} {m['time/sampling']:>10.2f} "
                f"{m['time/model_fit']:>11.2f} {int(m['dynamics/steps']):>9} {m['time/npg']:>7.2f} "
                f"{int(m.get('npg/num_samples', 0)) * cfg.inner_steps:>11} {m['time/evaluation']:>7.2f} "
                f"{m['time/iteration']:>8.2f}"
            )
        trainer.close()  # and its evaluator
        logger.close()


if __name__ == "__main__":
    main()
