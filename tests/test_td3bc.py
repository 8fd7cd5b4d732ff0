"""TD3+BC (algos/td3bc.py, docs/td3bc.md): the normalised BC term and λ by hand, the policy delay, target policy
smoothing with injected noise, state normalisation, a transcription of the authors' update as an oracle, then the
algorithm end to end through train.py (exact resume), eval.py, plot.py, score.py and sweep.py, and bad input."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import eval_run, progress_rows, random_batch, refused_by_train, train_tiny, train_tiny_on
from torch import nn
from torch.testing import assert_close

import eval as evaluate_cli
import plot
import score
import sweep
import train
from algos import ALGORITHMS, TD3BC, build_algorithm, load_run
from algos.td3bc import TD3BCConfig
from buffers.replay import Batch
from config import load_config
from utils.algorithm_spec import algorithm_spec

OBS_DIM, ACT_DIM = 3, 2
SMALL = [16, 16]


def _td3bc(seed: int = 0, dataset: object = None, **overrides: object) -> TD3BC:
    torch.manual_seed(seed)
    return TD3BC(OBS_DIM, ACT_DIM, TD3BCConfig(**{"hidden_dims": SMALL, **overrides}), dataset=dataset)


def _batch(n: int = 32, seed: int = 0) -> Batch:
    return random_batch(n, seed, OBS_DIM, ACT_DIM)


def _scaled_observations(n: int, seed: int) -> np.ndarray:
    """Observations whose dimensions have very different means and scales, so normalisation matters."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, OBS_DIM)) * [10.0, 0.1, 1.0] + [5.0, -2.0, 0.0]).astype(np.float32)


class LinearTwin(nn.Module):
    """Hand-built twin critics Q_k(s, a) = s · u_k + a · w_k -> [2, B], differentiable in a (and in s)."""

    def __init__(self, u: torch.Tensor, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("u", u)  # [2, obs_dim]
        self.register_buffer("w", w)  # [2, act_dim]

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        self.seen = (obs.detach().clone(), act.detach().clone())
        return torch.stack([obs @ self.u[k] + act @ self.w[k] for k in range(2)])


# ---------------------------------------------------------------------------------------------------- the BC term
def test_actor_loss_is_the_normalised_bc_term_by_hand() -> None:
    """π(s) = tanh(b) for every state (hidden weights zeroed); Q1(s, a) = s·u1 + a·w1. By hand: λ = α / mean|Q1|,
    L = −λ mean Q1 + mean (π − a)², and dL/db, with λ a constant (no gradient through the normaliser)."""
    algo = _td3bc(alpha=2.5)
    bias = torch.tensor([0.4, -0.7])
    with torch.no_grad():
        for layer in algo.policy.net:
            if isinstance(layer, nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        algo.policy.net[-1].bias.copy_(bias)
    u = torch.tensor([[1.0, -2.0, 0.5], [9.0, 9.0, 9.0]])  # the second critic must not enter the actor loss
    w = torch.tensor([[3.0, -1.0], [7.0, 7.0]])
    algo.critics = LinearTwin(u, w)
    obs = torch.tensor([[0.2, 0.1, -1.0], [-1.5, 0.3, 0.0], [0.0, -0.4, 2.0], [1.0, 1.0, 1.0]])
    act = torch.tensor([[0.5, -0.5], [-0.1, 0.9], [0.3, 0.0], [-0.8, -0.6]])

    pi = [math.tanh(0.4), math.tanh(-0.7)]
    q1 = [sum(o * c for o, c in zip(row, u[0].tolist())) + pi[0] * 3.0 - pi[1] * 1.0 for row in obs.tolist()]
    assert min(q1) < 0 < max(q1)  # |Q| differs from Q: the absolute value is tested
    lmbda = 2.5 / (sum(abs(q) for q in q1) / 4)
    bc = sum((pi[i] - a[i]) ** 2 for a in act.tolist() for i in range(2)) / 8
    loss = -lmbda * sum(q1) / 4 + bc
    # dL/db_i = −λ w1_i (1 − π_i²) + (2 / 8) Σ_rows (π_i − a_i)(1 − π_i²)
    grad = [
        (-lmbda * w[0, i].item() + 2 / 8 * sum(pi[i] - a_i for a_i in act[:, i].tolist())) * (1 - pi[i] ** 2)
        for i in range(2)
    ]

    got_loss, got_bc, got_lambda = algo.actor_loss(obs, act)
    assert_close(got_lambda, torch.tensor(lmbda))
    assert_close(got_bc, torch.tensor(bc))
    assert_close(got_loss, torch.tensor(loss))
    got_loss.backward()
    assert_close(algo.policy.net[-1].bias.grad, torch.tensor(grad))
    assert_close(algo.critics.seen[1], torch.tensor([pi] * 4))  # Q1 is evaluated at π(s), not at the data's a


def test_alpha_zero_is_pure_behaviour_cloning() -> None:
    algo = _td3bc(alpha=0.0)
    batch = _batch()
    loss, bc, lmbda = algo.actor_loss(batch.obs, batch.act)
    assert float(lmbda) == 0.0
    assert_close(loss, bc)
    assert_close(bc, (algo.policy(batch.obs)[0] - batch.act).square().mean())


# ---------------------------------------------------------------------------------------------------- policy delay
def _parameters(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("policy_freq", [2, 3])
def test_actor_and_targets_update_only_on_every_policy_freq_th_critic_step(policy_freq: int) -> None:
    algo = _td3bc(policy_freq=policy_freq, tau=0.05)
    for k in range(1, 2 * policy_freq + 1):  # the authors' total_it: 1, 2, ...
        before = {name: _parameters(getattr(algo, name)) for name in ("policy", "critics")}
        targets = {name: _parameters(getattr(algo, name)) for name in ("target_policy", "target_critics")}
        metrics = algo.update(_batch(seed=k), noise=torch.zeros(32, ACT_DIM))
        assert int(algo.updates) == k
        assert not _same(before["critics"], _parameters(algo.critics))  # the critics step every time
        delayed = k % policy_freq == 0
        assert ("loss/actor" in metrics) == ("loss/bc" in metrics) == ("lambda" in metrics) == delayed
        assert _same(before["policy"], _parameters(algo.policy)) != delayed
        for name in ("target_policy", "target_critics"):
            after = _parameters(getattr(algo, name))
            if not delayed:
                assert _same(targets[name], after), (k, name)
                continue
            online = _parameters(getattr(algo, name.removeprefix("target_")))
            for old, new, source in zip(targets[name], after, online):
                assert_close(new, old + 0.05 * (source - old))  # θ' ← θ' + τ (θ − θ'), with θ after its step
    assert all(v.grad_fn is None and v.dim() == 0 for v in metrics.values())


def test_the_critics_regress_on_the_clipped_double_q_target() -> None:
    """L(θ) = Σ_k mean (Q_k(s, a) − y)², logged per critic (÷ 2), with y from `critic_target`."""
    algo = _td3bc()
    batch = _batch()
    noise = torch.randn(32, ACT_DIM, generator=torch.Generator().manual_seed(5))
    target = algo.critic_target(batch, noise)
    q = algo.critics(algo.normalizer(batch.obs), batch.act).detach()
    metrics = algo.update(batch, noise=noise)
    assert_close(metrics["loss/critic"], (q - target).square().mean(-1).sum() / 2)
    assert_close(metrics["q_mean"], q.mean())


# ---------------------------------------------------------------------------------------------------- smoothing
class FixedPolicy(nn.Module):
    def __init__(self, actions: torch.Tensor) -> None:
        super().__init__()
        self.actions = actions

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, None]:
        self.seen = obs.clone()
        return self.actions, None


def test_target_policy_smoothing_with_injected_noise_and_clipping() -> None:
    """ã = clip(π'(s') + clip(0.2 ε, −0.5, 0.5), −1, 1) and y = r + γ(1 − d) min_k Q_k'(s', ã), at normalised s'."""
    data = SimpleNamespace(observations=_scaled_observations(50, 1))
    algo = _td3bc(dataset=data, gamma=0.9)
    algo.target_policy = FixedPolicy(torch.tensor([[0.9, -0.2], [0.9, -0.2], [-0.6, 0.1]]))
    u = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    w = torch.tensor([[1.0, 1.0], [-1.0, 2.0]])
    algo.target_critics = LinearTwin(u, w)
    next_obs = torch.tensor([[5.0, -2.0, 0.0], [15.0, -1.9, 1.0], [-5.0, -2.2, -1.0]])
    batch = Batch(
        obs=torch.zeros(3, OBS_DIM),
        act=torch.zeros(3, ACT_DIM),
        rew=torch.tensor([1.0, -1.0, 0.5]),
        next_obs=next_obs,
        done=torch.tensor([0.0, 0.0, 1.0]),
    )
    noise = torch.tensor([[3.0, -0.5], [0.1, -4.0], [-2.6, 2.4]])
    # 0.2 ε = (0.6, −0.1), (0.02, −0.8), (−0.52, 0.48); clipped at ±0.5: (0.5, −0.1), (0.02, −0.5), (−0.5, 0.48).
    # Plus π'(s'), clipped to [−1, 1]: (1.4 → 1, −0.3), (0.92, −0.7), (−1.1 → −1, 0.58).
    expected_act = torch.tensor([[1.0, -0.3], [0.92, -0.7], [-1.0, 0.58]])
    normalised = (next_obs - algo.normalizer.mean) / algo.normalizer.std
    q = torch.stack([normalised @ u[k] + expected_act @ w[k] for k in range(2)])
    expected = batch.rew + 0.9 * (1 - batch.done) * q.amin(0)

    target = algo.critic_target(batch, noise)
    assert_close(algo.target_policy.seen, normalised)  # the target actor and critics see normalised next states
    assert_close(algo.target_critics.seen[0], normalised)
    assert_close(algo.target_critics.seen[1], expected_act)
    assert_close(target, expected)
    assert_close(target[2], torch.tensor(0.5))  # terminal: y = r


def test_smoothing_noise_is_drawn_from_the_global_stream_when_not_given() -> None:
    algo = _td3bc()
    batch = _batch()
    torch.manual_seed(11)
    drawn = algo.critic_target(batch)
    torch.manual_seed(11)
    assert_close(drawn, algo.critic_target(batch, torch.randn(32, ACT_DIM)))
    assert not torch.equal(drawn, algo.critic_target(batch))  # fresh draws at every call


# ---------------------------------------------------------------------------------------------------- normalisation
def test_state_statistics_are_the_datasets_mean_and_population_std_plus_eps() -> None:
    observations = np.array([[1.0, 10.0, -3.0], [3.0, 10.0, 0.0], [5.0, 10.0, 3.0], [7.0, 10.0, 0.0]], np.float32)
    algo = _td3bc(dataset=SimpleNamespace(observations=observations))
    assert_close(algo.normalizer.mean, torch.tensor([4.0, 10.0, 0.0]))
    # numpy's std (ddof 0): sqrt(mean of squared deviations) = sqrt(5), 0, sqrt(4.5); plus 1e-3.
    assert_close(algo.normalizer.std, torch.tensor([math.sqrt(5.0), 0.0, math.sqrt(4.5)]) + 1e-3)
    raw = torch.tensor([[4.0, 10.0, 0.0], [6.0, 10.5, -1.0]])
    normalised = (raw - torch.tensor([4.0, 10.0, 0.0])) / algo.normalizer.std
    assert_close(normalised[1, 1], torch.tensor(500.0))  # a constant dimension is divided by eps alone
    with torch.no_grad():
        assert_close(algo.act(raw), algo.policy(normalised)[0])  # acting takes raw observations
        assert_close(algo.actor(raw)[0], algo.policy(normalised)[0])
        a = torch.rand(2, ACT_DIM)
        assert_close(algo.attack_critics()(raw, a), algo.critics(normalised, a))
    obs = raw.clone().requires_grad_(True)
    algo.actor(obs)[0].sum().backward()  # the gradient attacks differentiate the policy in the observation
    assert obs.grad is not None and float(obs.grad.abs().sum()) > 0

    plain = _td3bc(dataset=SimpleNamespace(observations=observations), normalize=False)
    assert torch.equal(plain.normalizer.mean, torch.zeros(3)) and torch.equal(plain.normalizer.std, torch.ones(3))
    assert torch.equal(plain.normalizer(raw), raw)  # the authors' mean, std = 0, 1: the identity
    eps = _td3bc(dataset=SimpleNamespace(observations=observations), normalize_eps=0.5)
    assert_close(eps.normalizer.std[1], torch.tensor(0.5))


def test_normalising_each_batch_equals_training_on_the_normalised_buffer() -> None:
    """What the authors do (normalise the stored states and next states once) and what this code does (keep raw
    states and normalise each batch) are the same computation."""
    data = SimpleNamespace(observations=_scaled_observations(200, 2))
    ours = _td3bc(seed=3, dataset=data)
    theirs = _td3bc(seed=3)  # the identity normaliser, trained on states normalised beforehand
    theirs.load_state_dict({**ours.state_dict(), "normalizer.mean": torch.zeros(3), "normalizer.std": torch.ones(3)})
    mean, std = ours.normalizer.mean, ours.normalizer.std
    for step in range(5):
        batch = _batch(seed=step)._replace(obs=_batch(seed=step).obs * 3 + 1, next_obs=_batch(seed=step).next_obs * 2)
        noise = torch.randn(32, ACT_DIM, generator=torch.Generator().manual_seed(step))
        ours.update(batch, noise=noise)
        theirs.update(batch._replace(obs=(batch.obs - mean) / std, next_obs=(batch.next_obs - mean) / std), noise=noise)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        if not name.startswith("normalizer."):
            assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_the_statistics_travel_with_the_saved_state() -> None:
    """A TD3BC built without a dataset (as load_run builds one) acts like the trained one once its state is loaded."""
    data = SimpleNamespace(observations=_scaled_observations(100, 3))
    trained = _td3bc(dataset=data)
    trained.update(_batch())
    assert {"normalizer.mean", "normalizer.std", "updates"} <= set(trained.state_dict())
    loaded = _td3bc(seed=7)
    loaded.load_state_dict(copy.deepcopy(trained.state_dict()))
    raw = torch.tensor(_scaled_observations(5, 4))
    assert torch.equal(loaded.act(raw), trained.act(raw))


# ---------------------------------------------------------------------------------------------------- the authors'
class AuthorsActor(nn.Module):
    def __init__(self, ours: nn.Sequential) -> None:
        super().__init__()
        self.layers = copy.deepcopy(ours)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.layers(state))  # max_action 1


class AuthorsCritic(nn.Module):
    """Two separate MLPs, Q1 and Q2, as plain Linear layers holding our ensemble's members' weights."""

    def __init__(self, ensemble: nn.Module) -> None:
        super().__init__()
        self.q = nn.ModuleList()
        for member in range(2):
            layers: list[nn.Module] = []
            for layer in ensemble.net.layers:
                linear = nn.Linear(layer.in_features, layer.out_features)
                with torch.no_grad():
                    linear.weight.copy_(layer.weight[member].T)
                    linear.bias.copy_(layer.bias[member, 0])
                layers += [linear, nn.ReLU()]
            self.q.append(nn.Sequential(*layers[:-1]))

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sa = torch.cat([state, action], 1)
        return self.q[0](sa), self.q[1](sa)

    def Q1(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:  # noqa: N802 (the authors' name)
        return self.q[0](torch.cat([state, action], 1))


def test_updates_match_a_transcription_of_the_authors_train_step() -> None:
    """The authors' TD3_BC.train written out step by step (their buffer normalised once in float32 numpy, two
    separate critics, F.mse_loss, total_it, τθ + (1 − τ)θ' target updates, plain Adam), from our initial weights,
    on the same rows and smoothing draws: after 7 updates (actor steps at 2, 4 and 6) every network agrees."""
    observations = _scaled_observations(300, 5)
    rng = np.random.default_rng(6)
    next_observations = (observations + rng.normal(scale=0.3, size=observations.shape)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(300, ACT_DIM)).astype(np.float32)
    rewards = rng.normal(size=300).astype(np.float32)
    terminals = (rng.uniform(size=300) < 0.1).astype(np.float32)
    algo = _td3bc(dataset=SimpleNamespace(observations=observations))

    mean = observations.mean(0, keepdims=True)  # utils.py normalize_states, eps 1e-3
    std = observations.std(0, keepdims=True) + 1e-3
    state, next_state = (observations - mean) / std, (next_observations - mean) / std
    actor, critic = AuthorsActor(algo.policy.net), AuthorsCritic(algo.critics)
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=3e-4)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=3e-4)
    total_it, discount, tau, policy_noise, noise_clip, alpha = 0, 0.99, 0.005, 0.2, 0.5, 2.5

    for step in range(7):
        rows = rng.integers(0, 300, size=64)
        eps = torch.randn(64, ACT_DIM, generator=torch.Generator().manual_seed(step))
        algo.update(
            Batch(*(torch.as_tensor(x[rows]) for x in (observations, actions, rewards, next_observations, terminals))),
            noise=eps,
        )
        # --- the authors' train(), on the normalised buffer
        total_it += 1  # noqa: SIM113 (the authors' counter, kept as they keep it)
        s, a, ns = (torch.as_tensor(x[rows]) for x in (state, actions, next_state))
        r, not_done = torch.as_tensor(rewards[rows]).unsqueeze(1), 1.0 - torch.as_tensor(terminals[rows]).unsqueeze(1)
        with torch.no_grad():
            noise = (eps * policy_noise).clamp(-noise_clip, noise_clip)
            next_action = (actor_target(ns) + noise).clamp(-1.0, 1.0)
            target_q1, target_q2 = critic_target(ns, next_action)
            target_q = r + not_done * discount * torch.min(target_q1, target_q2)
        current_q1, current_q2 = critic(s, a)
        critic_loss = nn.functional.mse_loss(current_q1, target_q) + nn.functional.mse_loss(current_q2, target_q)
        critic_optimizer.zero_grad()
        critic_loss.backward()
        critic_optimizer.step()
        if total_it % 2 == 0:
            pi = actor(s)
            q = critic.Q1(s, pi)
            lmbda = alpha / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + nn.functional.mse_loss(pi, a)
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()
            for net, target in ((critic, critic_target), (actor, actor_target)):
                for param, target_param in zip(net.parameters(), target.parameters()):
                    target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)

    for ours, theirs in ((algo.policy.net, actor.layers), (algo.target_policy.net, actor_target.layers)):
        for a, b in zip(ours.parameters(), theirs.parameters()):
            assert_close(a, b, rtol=1e-5, atol=1e-6)
    for ours, theirs in ((algo.critics, critic), (algo.target_critics, critic_target)):
        for member in range(2):
            expected = AuthorsCritic(ours).q[member]
            for a, b in zip(expected.parameters(), theirs.q[member].parameters()):
                assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- seed stacking
def test_stacked_seeds_keep_their_own_statistics_and_match_the_seeds_alone() -> None:
    """Each seed's dataset statistics stay its own in a stacked instance (the normaliser is a stacked module), and
    the stacked update ends where the seeds trained alone end."""
    from models.seed_stack import SeedStreams

    datasets = [SimpleNamespace(observations=_scaled_observations(80, 20 + seed)) for seed in range(3)]
    batches = [[_batch(seed=10 * seed + step) for step in range(5)] for seed in range(3)]
    alone = []
    for seed in range(3):
        run = _td3bc(seed=seed, dataset=datasets[seed])
        for batch in batches[seed]:
            run.update(batch)
        alone.append(run)
    streams, runs = SeedStreams(), []
    for seed in range(3):
        runs.append(_td3bc(seed=seed, dataset=datasets[seed]))
        streams.capture()
    stacked = TD3BC.stack(runs, streams, epochs=1)
    for step in range(5):
        metrics = stacked.update(Batch(*(torch.stack(f) for f in zip(*(b[step] for b in batches)))))
    assert metrics["loss/critic"].shape == (3,) and "loss/actor" not in metrics  # update 5: a critic step only
    obs = torch.tensor(np.stack([_scaled_observations(4, 30 + seed) for seed in range(3)]))
    actions = stacked.act(obs)
    template = _td3bc(seed=99)
    for seed, run in enumerate(alone):
        state = stacked.seed_training_state(seed, template)["modules"]
        assert torch.equal(state["normalizer.mean"], run.normalizer.mean)
        assert int(state["updates"]) == 5
        for key, value in run.state_dict().items():
            assert_close(state[key], value, rtol=1e-4, atol=1e-5, msg=key)
        assert_close(actions[seed], run.act(obs[seed]), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- configs
def test_defaults_are_the_authors_and_the_presets_resolve() -> None:
    assert ALGORITHMS["td3bc"] is TD3BC and algorithm_spec("td3bc").stackable
    assert load_config("td3bc", "task-without-file") == dataclasses.replace(
        TD3BCConfig(), algo="td3bc", task="task-without-file"
    )  # defaults.yaml mirrors the dataclass
    cfg = load_config("td3bc", "hopper-medium-v2")
    assert (cfg.epochs * cfg.steps_per_epoch, cfg.steps_per_epoch, cfg.eval_every, cfg.eval_episodes) == (
        1_000_000, 5000, 1, 10
    )  # fmt: skip
    assert (cfg.batch_size, cfg.gamma, cfg.tau, cfg.policy_noise, cfg.noise_clip, cfg.policy_freq) == (
        256, 0.99, 0.005, 0.2, 0.5, 2
    )  # fmt: skip
    assert (cfg.alpha, cfg.normalize, cfg.normalize_eps, cfg.actor_lr, cfg.critic_lr, cfg.hidden_dims) == (
        2.5, True, 1e-3, 3e-4, 3e-4, [256, 256]
    )  # fmt: skip
    assert not hasattr(cfg, "dynamics") and not hasattr(cfg, "rollout_length")
    assert not list((Path(__file__).parents[1] / "configs" / "td3bc").glob("*-v[0-9].yaml"))  # no per-task values
    quick = load_config("td3bc", "hopper-medium-gen", "quickstart")
    assert (quick.epochs, quick.steps_per_epoch, quick.eval_episodes) == (10, 200, 3)
    assert isinstance(build_algorithm(quick, 11, 3), TD3BC)


# ---------------------------------------------------------------------------------------------------- end to end
TASK = "hopper-random-gen"
# 21 updates per epoch: odd, so the policy delay's phase crosses the epoch boundary (and a resume).
TINY = ["epochs=2", "steps_per_epoch=21", "batch_size=32", "eval_episodes=2", "save_every=1", "hidden_dims=[32,32]"]


def _train(log_dir: Path, *extra: str) -> Path:
    return train_tiny("td3bc", TASK, log_dir, TINY, *extra)


@pytest.fixture(scope="module")
def run_dir(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_on(tiny_dataset_dir, "td3bc", TASK, tmp_path_factory.mktemp("log"), TINY)


def test_run_layout_statistics_and_clean_eval_reproduce_training(run_dir: Path, data_env: None) -> None:
    from envs import get_task, load_dataset

    assert not (run_dir / "dynamics.pt").exists()
    assert [int(r["epoch"]) for r in progress_rows(run_dir)] == [1, 2]
    assert "dynamics" not in yaml.safe_load((run_dir / "config.yaml").read_text())
    state = torch.load(run_dir / "checkpoints" / "checkpoint.pt", weights_only=False)["algo_state"]
    assert int(state["modules"]["updates"]) == 42
    observations = load_dataset(get_task(TASK)).observations.astype(np.float64)
    assert_close(state["modules"]["normalizer.mean"], torch.tensor(observations.mean(0), dtype=torch.float32))
    assert_close(state["modules"]["normalizer.std"], torch.tensor(observations.std(0) + 1e-3, dtype=torch.float32))
    (row,) = eval_run(run_dir, "--choice", "clean", "--episodes", "2")
    assert row["normalized_mean"] == pytest.approx(float(progress_rows(run_dir)[-1]["normalized_score_mean"]))
    cfg, algo = load_run(run_dir)
    assert isinstance(algo, TD3BC) and torch.equal(algo.normalizer.std, state["modules"]["normalizer.std"])


def test_sim2real_runs(run_dir: Path, data_env: None) -> None:
    rows = eval_run(run_dir, "--choice", "sim2real", "--episodes", "1", "--physics", "friction=0.5,1.5")
    assert [r["friction"] for r in rows] == [0.5, 1.5]
    assert (run_dir / "eval" / "sim2real_friction=0.5,1.5_ep1.csv").is_file()


def test_min_q_attack_and_zero_budget_is_clean(run_dir: Path, data_env: None) -> None:
    rows = eval_run(
        run_dir, "--choice", "attack", "--attack-mode", "min_Q", "--epsilons", "0,0.2", "--episodes", "2",
        "--num-candidates", "5",
    )  # fmt: skip
    clean = eval_run(run_dir, "--choice", "clean", "--episodes", "2")[0]
    assert [r["epsilon"] for r in rows] == [0.0, 0.2]
    assert rows[0]["return_mean"] == clean["return_mean"]
    eval_run(
        run_dir, "--choice", "attack", "--attack-mode", "min_Q", "--attack-steps", "1", "--epsilons", "0.1",
        "--episodes", "1", "--num-candidates", "3",
    )  # fmt: skip
    assert (run_dir / "eval" / "attack-min_Q_eps=0.1_cand3_pgd1_ep1.csv").is_file()


def test_action_diff_is_refused_in_one_line(run_dir: Path, cli_error) -> None:
    argv = ["--run", str(run_dir), "--choice", "attack", "--attack-mode", "action_diff"]
    err = cli_error(lambda: evaluate_cli.main(argv))
    assert "needs a stochastic (Gaussian) policy" in err and "random or min_Q" in err


def test_resumed_run_equals_uninterrupted_run(data_env: None, tmp_path: Path, same_tensors) -> None:
    """Killed after epoch 1 (21 updates: the next actor step is the 22nd), resumed to epoch 2: the same final state
    as a run that never stopped, so the delay counter and the statistics come back with the checkpoint."""
    straight = _train(tmp_path / "straight")
    one_epoch = _train(tmp_path / "resumed", "epochs=1")
    config = one_epoch / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 1\n", "epochs: 2\n"))
    train.main(["--resume", str(one_epoch), "--no-progress", "--threads", "1"])

    def final(run: Path) -> dict[str, object]:
        return torch.load(run / "checkpoints" / "checkpoint.pt", weights_only=False)["algo_state"]

    same_tensors(final(straight), final(one_epoch), "algo_state")
    assert [r["return_mean"] for r in progress_rows(one_epoch)] == [r["return_mean"] for r in progress_rows(straight)]


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("policy_freq=0", "policy_freq=0 (from --set policy_freq=0) must be > 0"),
        ("tau=0", "tau=0.0 (from --set tau=0) must be in (0, 1]"),
        ("gamma=1", "gamma=1.0 (from --set gamma=1) must be in [0, 1)"),
        ("alpha=-1", "alpha=-1.0 (from --set alpha=-1) must be >= 0"),
        ("noise_clip=-0.5", "noise_clip=-0.5 (from --set noise_clip=-0.5) must be >= 0"),
        ("normalize_eps=0", "normalize_eps=0.0 (from --set normalize_eps=0) must be > 0"),
        ("hidden_dims=[]", "must be a non-empty list of positive numbers"),
        ("normalize=maybe", "normalize"),
        ("rollout_length=5", "unknown config key 'rollout_length'"),
    ],
)
def test_bad_input_is_one_line(item: str, fragment: str, tmp_path: Path, cli_error) -> None:
    assert fragment in refused_by_train(cli_error, tmp_path, "td3bc", TASK, [item])


def test_plot_score_and_sweep_read_td3bc_runs(run_dir: Path, data_env: None, tmp_path: Path, capsys) -> None:
    (figure,) = plot.main([str(run_dir), "--out", str(tmp_path)])
    assert figure.name == f"{TASK}.png" and figure.stat().st_size > 0
    (row,) = score.main([str(run_dir), "--out", str(tmp_path / "scores.md")])
    assert row.algo == "td3bc" and row.values
    assert "td3bc" in (tmp_path / "scores.md").read_text()
    log_dir = run_dir.parents[2]  # log/<task>/td3bc/<run>
    argv = ["--tasks", TASK, "--algos", "td3bc", "--seeds", "1", "--set", *TINY, "--log-dir", str(log_dir)]
    capsys.readouterr()
    assert sweep.main([*argv, "--dry-run"]) == 0
    assert "1 already finished, 0 to resume, 0 to start" in capsys.readouterr().out  # a finished run is recognised
    assert sweep.main([*argv, "--grid", "alpha=1.0,4.0", "--dry-run"]) == 0
    assert "0 already finished, 0 to resume, 2 to start" in capsys.readouterr().out
