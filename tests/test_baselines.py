"""BC (docs/bc.md) and BCQ (docs/bcq.md): networks, losses, the soft-clipped target, action selection, and both
end to end through train.py and eval.py, with exact resume."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from conftest import eval_run, progress_rows, random_batch
from torch import nn

import eval as evaluate_cli
import train
from algos import ALGORITHMS, BC, BCQ, build_algorithm
from algos.bc import BCConfig
from algos.bcq import BCQConfig
from buffers.replay import Batch
from config import load_config
from models.actor_critic import DeterministicActor
from models.bcq import ConditionalVAE, PerturbationActor
from utils.errors import UserError, run_cli

OBS_DIM, ACT_DIM = 3, 2
SMALL = [16, 16]


def _bc(seed: int = 0, **overrides: object) -> BC:
    torch.manual_seed(seed)
    return BC(OBS_DIM, ACT_DIM, BCConfig(**{"hidden_dims": [32, 32], **overrides}))


def _bcq(seed: int = 0, **overrides: object) -> BCQ:
    torch.manual_seed(seed)
    small = {"actor_hidden_dims": SMALL, "critic_hidden_dims": SMALL, "vae_hidden_dims": SMALL}
    return BCQ(OBS_DIM, ACT_DIM, BCQConfig(**{**small, **overrides}))


def _batch(n: int = 32, seed: int = 0) -> Batch:
    return random_batch(n, seed, OBS_DIM, ACT_DIM)


EXPERT = torch.tensor([[0.5, -0.3], [-0.2, 0.4], [0.3, 0.2]])


def _expert_batch(n: int, gen: torch.Generator) -> Batch:
    """Transitions of a linear expert a = clip(s W, -1, 1) (rewards and next states are irrelevant to BC)."""
    obs = torch.randn(n, OBS_DIM, generator=gen)
    act = (obs @ EXPERT).clamp(-1, 1)
    return Batch(obs, act, torch.zeros(n), torch.randn(n, OBS_DIM, generator=gen), torch.zeros(n))


# ---------------------------------------------------------------------------------------------------- networks
def test_deterministic_actor_shapes_bounds_and_no_gaussian() -> None:
    torch.manual_seed(0)
    actor = DeterministicActor(OBS_DIM, ACT_DIM, SMALL)
    with torch.no_grad():
        for p in actor.parameters():
            p.mul_(10)  # saturate the tanh
    with torch.no_grad():
        action, extra = actor(torch.randn(5, 7, OBS_DIM) * 10)
    assert action.shape == (5, 7, ACT_DIM) and extra is None
    assert float(action.abs().max()) <= 1.0
    assert not hasattr(actor, "distribution_params")


def test_vae_shapes_log_std_clamp_and_clipped_sampling() -> None:
    torch.manual_seed(0)
    vae = ConditionalVAE(OBS_DIM, ACT_DIM, latent_dim=4, hidden_dims=SMALL, log_std_min=-4, log_std_max=15)
    with torch.no_grad():
        for p in vae.encoder.parameters():
            p.mul_(50)  # push the log-std outside its clamp
    obs, act = torch.randn(64, OBS_DIM), torch.rand(64, ACT_DIM) * 2 - 1
    with torch.no_grad():
        recon, mean, log_std = vae(obs, act)
    assert recon.shape == (64, ACT_DIM) and mean.shape == log_std.shape == (64, 4)
    assert float(log_std.min()) >= -4 and float(log_std.max()) <= 15
    assert float(recon.abs().max()) <= 1.0
    z = vae.sample_latent(10_000)
    assert z.shape == (10_000, 4) and float(z.abs().max()) == 0.5  # clipped, and the clip is reached
    assert vae.decode(torch.randn(2, 5, OBS_DIM)).shape == (2, 5, ACT_DIM)
    unclipped = ConditionalVAE(OBS_DIM, ACT_DIM, 4, SMALL, latent_clip=None)
    assert float(unclipped.sample_latent(10_000).abs().max()) > 2.0


def test_perturbation_is_at_most_phi_and_stays_in_bounds() -> None:
    torch.manual_seed(0)
    xi = PerturbationActor(OBS_DIM, ACT_DIM, SMALL, phi=0.05)
    with torch.no_grad():
        for p in xi.parameters():
            p.mul_(20)
    obs = torch.randn(500, OBS_DIM) * 5
    act = torch.rand(500, ACT_DIM) * 2 - 1
    act[:10] = 1.0  # at the bound: the clip must hold the perturbed action inside
    with torch.no_grad():
        out = xi(obs, act)
    assert out.shape == (500, ACT_DIM)
    assert float((out - act).abs().max()) <= 0.05 + 1e-6
    assert float(out.abs().max()) <= 1.0


def test_bcq_critics_are_one_batched_twin_ensemble() -> None:
    algo = _bcq()
    q = algo.critics(torch.randn(7, OBS_DIM), torch.rand(7, ACT_DIM))
    assert q.shape == (2, 7)
    assert algo.vae.latent_dim == 2 * ACT_DIM
    assert not hasattr(algo.actor, "distribution_params")


# ---------------------------------------------------------------------------------------------------- BC
def test_bc_loss_falls_and_the_policy_imitates_a_linear_expert() -> None:
    algo = _bc(actor_lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    losses = [float(algo.update(_expert_batch(64, gen))["loss/actor"]) for _ in range(400)]
    assert sum(losses[-20:]) < 0.05 * sum(losses[:20])
    test = _expert_batch(500, torch.Generator().manual_seed(2))
    error = (algo.act(test.obs) - test.act).square().mean()
    assert float(error) < 5e-3, float(error)


def test_bc_checkpoint_round_trip_continues_identically() -> None:
    algo = _bc()
    algo.update(_batch())
    restored = _bc(seed=5)
    restored.load_training_state(copy.deepcopy(algo.training_state()))  # as through a checkpoint file
    algo.update(_batch(seed=1))
    restored.update(_batch(seed=1))
    for (name, a), b in zip(algo.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------------------------------------------- BCQ
def test_bcq_vae_reconstruction_loss_falls() -> None:
    algo = _bcq(vae_lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    recon = [float(algo.update(_expert_batch(100, gen))["loss/recon"]) for _ in range(300)]
    assert sum(recon[-20:]) < 0.3 * sum(recon[:20]), (recon[:5], recon[-5:])


class HandBuiltCritics(nn.Module):
    """Target critics whose values are given: Q [2, B * n] whatever the input; remembers what it was called with."""

    def __init__(self, values: torch.Tensor) -> None:
        super().__init__()
        self.values = values

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        self.seen = (obs, act)
        return self.values


def test_bcq_target_is_soft_clipped_double_q_maxed_over_sampled_actions() -> None:
    algo = _bcq(gamma=0.9, lmbda=0.75)
    with torch.no_grad():  # online and target perturbation nets differ, so using the wrong one shows
        for p in algo.perturbation.parameters():
            p.add_(1.0)
    n = algo.cfg.num_target_samples
    assert n == 10
    q1, q2 = torch.zeros(2, n), torch.zeros(2, n)
    # Row 0: sample 0 has (Q1, Q2) = (10, 1): 0.75 * 1 + 0.25 * 10 = 3.25; sample 1 has (2.9, 2.9): 2.9.
    # The soft clip picks sample 0 (3.25), where min alone would give 2.9 and max alone 10.
    q1[0, 0], q2[0, 0] = 10.0, 1.0
    q1[0, 1], q2[0, 1] = 2.9, 2.9
    q1[0, 2], q2[0, 2] = -1.0, 3.0  # 0.75 * -1 + 0.25 * 3 = 0
    # Row 1: Q2 < Q1 on every sample; the best is sample 7: 0.75 * 4 + 0.25 * 6 = 4.5.
    q1[1], q2[1] = torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32) - 3
    q1[1, 7], q2[1, 7] = 4.0, 6.0
    q1[1, 9], q2[1, 9] = 9.0, -20.0  # 0.75 * -20 + 0.25 * 9 = -12.75
    q1[1, 8], q2[1, 8] = 5.0, 1.0  # 0.75 * 1 + 0.25 * 5 = 2.0
    # sample 6: (6, 3) -> 3.75 < 4.5
    algo.target_critics = HandBuiltCritics(torch.stack([q1.reshape(-1), q2.reshape(-1)]))

    batch = Batch(
        obs=torch.randn(2, OBS_DIM),
        act=torch.zeros(2, ACT_DIM),
        rew=torch.tensor([1.0, -2.0]),
        next_obs=torch.randn(2, OBS_DIM),
        done=torch.tensor([0.0, 0.0]),
    )
    torch.manual_seed(123)
    target = algo.critic_target(batch)
    expected = torch.tensor([1.0 + 0.9 * 3.25, -2.0 + 0.9 * 4.5])
    torch.testing.assert_close(target, expected)

    seen_obs, seen_act = algo.target_critics.seen
    torch.testing.assert_close(seen_obs, batch.next_obs.repeat_interleave(n, dim=0))  # n rows per next state
    torch.manual_seed(123)
    with torch.no_grad():
        decoded = algo.vae.decode(seen_obs)
        torch.testing.assert_close(seen_act, algo.target_perturbation(seen_obs, decoded))  # the *target* actor
    assert float(decoded.abs().max()) <= 1.0

    done = batch._replace(done=torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(algo.critic_target(done)[0], torch.tensor(1.0))  # terminal: y = r


def test_bcq_selects_the_argmax_q1_candidate_inside_the_action_box() -> None:
    algo = _bcq()
    with torch.no_grad():  # large weights: the decoder saturates and the perturbation pushes against the bounds
        for p in [*algo.vae.decoder.parameters(), *algo.perturbation.parameters()]:
            p.mul_(10)
    obs = torch.randn(6, OBS_DIM) * 3
    with torch.no_grad():
        actions, q1 = algo.candidates(obs)
    assert actions.shape == (6, 100, ACT_DIM) and q1.shape == (6, 100)
    flat = actions.reshape(-1, ACT_DIM)
    torch.testing.assert_close(q1.reshape(-1), algo.critics(obs.repeat_interleave(100, 0), flat)[0])
    chosen = algo.act(obs)
    torch.testing.assert_close(chosen, actions[torch.arange(6), q1.argmax(1)])
    assert (q1.gather(1, q1.argmax(1, keepdim=True)) >= q1).all()
    assert float(chosen.abs().max()) <= 1.0
    assert float(actions.abs().max()) <= 1.0


def test_bcq_deterministic_selection_is_a_function_of_the_observation() -> None:
    algo = _bcq()
    obs = torch.randn(8, OBS_DIM)
    rng = torch.get_rng_state()
    first = algo.act(obs)
    assert torch.equal(torch.get_rng_state(), rng)  # the fixed draws come from a private generator
    assert torch.equal(algo.act(obs), first)
    torch.testing.assert_close(algo.act(obs[:3]), first[:3])  # independent of the other states in the batch
    action, extra = algo.actor(obs.view(2, 4, OBS_DIM), deterministic=True)  # the attacks' [n, C, obs] call
    assert extra is None and torch.equal(action.view(8, ACT_DIM), first)

    fresh = _bcq(select_noise="fresh")
    fresh.load_state_dict(algo.state_dict())
    assert not torch.equal(fresh.act(obs), fresh.act(obs))  # the official rule: new draws at every call
    assert not torch.equal(algo.act(obs, deterministic=False), algo.act(obs, deterministic=False))


def test_bcq_update_moves_targets_by_tau_and_round_trips_exactly() -> None:
    algo = _bcq(tau=0.005)
    before = {k: v.clone() for k, v in algo.state_dict().items()}
    metrics = algo.update(_batch())
    assert set(metrics) == {"loss/vae", "loss/recon", "loss/kl", "loss/critic", "loss/actor", "q_mean"}
    assert all(v.grad_fn is None and v.dim() == 0 for v in metrics.values())
    after = algo.state_dict()
    for name in after:
        if name.startswith(("target_critics.", "target_perturbation.")):
            online = name.removeprefix("target_")
            expected = before[name] + 0.005 * (after[online] - before[name])
            torch.testing.assert_close(after[name], expected, msg=name)
    state = algo.training_state()
    assert set(state) == {"modules", "vae_optim", "critic_optim", "actor_optim"}
    restored = _bcq(seed=9)
    restored.load_training_state(copy.deepcopy(state))  # as through a checkpoint file
    torch.manual_seed(4)
    algo.update(_batch(seed=1))
    torch.manual_seed(4)
    restored.update(_batch(seed=1))
    for (name, a), b in zip(algo.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------------------------------------------- configs
def test_configs_registry_and_presets() -> None:
    assert ALGORITHMS["bc"] is BC and ALGORITHMS["bcq"] is BCQ
    for algo, cls in (("bc", BCConfig), ("bcq", BCQConfig)):  # defaults.yaml mirrors the dataclass defaults
        assert load_config(algo, "task-without-file") == dataclasses.replace(cls(), algo=algo, task="task-without-file")
    bc = load_config("bc", "hopper-medium-gen")
    assert (bc.epochs, bc.steps_per_epoch, bc.batch_size, bc.eval_episodes, bc.actor_lr) == (200, 1000, 256, 20, 3e-4)
    bcq = load_config("bcq", "hopper-medium-gen")
    assert (bcq.epochs * bcq.steps_per_epoch, bcq.batch_size, bcq.lmbda, bcq.phi) == (1_000_000, 100, 0.75, 0.05)
    assert not hasattr(bcq, "dynamics") and not hasattr(bcq, "rollout_length")
    for algo in ("bc", "bcq"):
        quick = load_config(algo, "hopper-medium-gen", "quickstart")
        assert (quick.epochs, quick.steps_per_epoch, quick.eval_episodes) == (10, 200, 3)
        assert isinstance(build_algorithm(quick, 11, 3), ALGORITHMS[algo])
    with pytest.raises(UserError, match="unknown config key 'rollout_length'"):
        load_config("bc", "hopper-medium-gen", overrides=["rollout_length=5"])
    with pytest.raises(UserError, match="lmbda=1.5"):
        load_config("bcq", "hopper-medium-gen", overrides=["lmbda=1.5"])
    with pytest.raises(UserError, match="select_noise"):
        load_config("bcq", "hopper-medium-gen", overrides=["select_noise=random"])


# ---------------------------------------------------------------------------------------------------- end to end
TASK = "hopper-random-gen"
TINY = ["epochs=2", "steps_per_epoch=30", "batch_size=32", "eval_episodes=2", "save_every=1"]
NETS = {
    "bc": ["hidden_dims=[32,32]"],
    "bcq": ["actor_hidden_dims=[32,32]", "critic_hidden_dims=[32,32]", "vae_hidden_dims=[32,32]"],
}


def _train(log_dir: Path, algo: str, *extra: str) -> Path:
    args = ["--task", TASK, "--algo", algo, "--seed", "1", "--log-dir", str(log_dir), "--no-progress"]
    train.main([*args, "--set", *TINY, *NETS[algo], *extra])
    (run_dir,) = (log_dir / TASK / algo).iterdir()
    return run_dir


@pytest.fixture(scope="module")
def runs(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    log_dir = tmp_path_factory.mktemp("log")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
        return {algo: _train(log_dir, algo) for algo in ("bc", "bcq")}


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: evaluate_cli.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("algo", ["bc", "bcq"])
def test_run_layout_and_clean_eval_reproduces_the_last_training_evaluation(runs: dict[str, Path], algo: str) -> None:
    run_dir = runs[algo]
    assert not (run_dir / "dynamics.pt").exists()
    assert [int(r["epoch"]) for r in progress_rows(run_dir)] == [1, 2]
    assert "dynamics" not in yaml.safe_load((run_dir / "config.yaml").read_text())
    (row,) = eval_run(run_dir, "--choice", "clean", "--episodes", "2")
    assert row["normalized_mean"] == pytest.approx(float(progress_rows(run_dir)[-1]["normalized_score_mean"]))


@pytest.mark.parametrize("algo", ["bc", "bcq"])
def test_sim2real_runs(runs: dict[str, Path], algo: str) -> None:
    rows = eval_run(runs[algo], "--choice", "sim2real", "--episodes", "1", "--physics", "friction=0.5,1.5")
    assert [r["friction"] for r in rows] == [0.5, 1.5]
    assert (runs[algo] / "eval" / "sim2real_friction=0.5,1.5_ep1.csv").is_file()


def test_bcq_min_q_attack_and_zero_budget_is_clean(runs: dict[str, Path], data_env: None) -> None:
    rows = eval_run(
        runs["bcq"], "--choice", "attack", "--attack-mode", "min_Q", "--epsilons", "0,0.2", "--episodes", "2",
        "--num-candidates", "5",
    )  # fmt: skip
    clean = eval_run(runs["bcq"], "--choice", "clean", "--episodes", "2")[0]
    assert [r["epsilon"] for r in rows] == [0.0, 0.2]
    assert rows[0]["return_mean"] == clean["return_mean"]
    assert (runs["bcq"] / "eval" / "attack-min_Q_eps=0,0.2_cand5_ep2.csv").is_file()
    eval_run(
        runs["bcq"], "--choice", "attack", "--attack-mode", "min_Q", "--attack-steps", "1", "--epsilons", "0.1",
        "--episodes", "1", "--num-candidates", "3",
    )  # fmt: skip
    assert (runs["bcq"] / "eval" / "attack-min_Q_eps=0.1_cand3_pgd1_ep1.csv").is_file()


def test_unsupported_attacks_fail_in_one_line(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(["--run", str(runs["bc"]), "--choice", "attack", "--attack-mode", "min_Q"], capsys)
    assert "needs the policy's critics" in err
    for algo in ("bc", "bcq"):
        err = cli_error(["--run", str(runs[algo]), "--choice", "attack", "--attack-mode", "action_diff"], capsys)
        assert "needs a stochastic (Gaussian) policy" in err


def test_bcq_resumed_run_equals_uninterrupted_run(data_env: None, tmp_path: Path) -> None:
    straight = _train(tmp_path / "straight", "bcq")
    one_epoch = _train(tmp_path / "resumed", "bcq", "epochs=1")
    config = one_epoch / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 1\n", "epochs: 2\n"))
    train.main(["--resume", str(one_epoch), "--no-progress"])

    def final(run_dir: Path) -> dict[str, torch.Tensor]:
        return torch.load(run_dir / "checkpoints" / "checkpoint.pt", weights_only=False)["algo_state"]

    expected, resumed = final(straight), final(one_epoch)
    assert expected["modules"].keys() == resumed["modules"].keys()
    for name, tensor in expected["modules"].items():
        assert torch.equal(tensor, resumed["modules"][name]), name
    for name in ("vae_optim", "critic_optim", "actor_optim"):
        for key, value in expected[name]["state"].items():
            for field, tensor in value.items():
                assert torch.equal(tensor, resumed[name]["state"][key][field]), (name, key, field)
    assert [r["return_mean"] for r in progress_rows(one_epoch)] == [r["return_mean"] for r in progress_rows(straight)]
