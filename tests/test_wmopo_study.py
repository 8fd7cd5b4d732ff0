"""WMOPO's Pendulum study (algos/wmopo_study.py, docs/wmopo.md): LSTD(λ) by hand and against its closed form on a
small chain, the gradient-correction term (live vs detached), the score by hand, the occupancy set's composition, the
model episodes' start states, warm-started refits with a fresh Adam, the weighted MLE, the study's model options, a
killed-and-resumed run against an uninterrupted one, and bad input. The authors' outputs: test_reference_wmopo.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import train
from algos.wmopo_study import (
    LSTDLambda,
    PendulumStudy,
    correction_loss,
    correction_vector,
    grad_log_density,
    log_likelihood_grads,
    lstd_features,
    occupancy_set,
    parameter_vector,
    pointwise_nll,
    study_dynamics,
    study_score,
)
from config import load_config
from envs import custom_pendulum as pendulum
from envs.tasks import get_task
from models.dynamics import EnsembleDynamics
from utils.errors import UserError

TASK = "CustomPendulum-v0"


# ---------------------------------------------------------------------------------------------------- LSTD(λ)
def test_lstd_statistics_by_hand() -> None:
    """One episode of two transitions s0 → s1 → s2 with scalar features φ = [x] and costs c1, c2 (γ = 0.5, λ = 0.5):
    e1 = φ(s1), e2 = γλ e1 + φ(s2); A = e1(φ(s1) − γφ(s0)) + e2(φ(s2) − γφ(s1)), b = γ(e1 c1 + e2 c2), over n = 2.
    A stopped episode (alive False) has no rows and adds nothing; its trace does not leak into the other's."""
    lstd = LSTDLambda(num_features=1, num_outputs=1, gamma=0.5, lam=0.5)
    phi = {0: 1.0, 1: 2.0, 2: 3.0}
    alive = torch.tensor([False, True])
    lstd.add(torch.tensor([[phi[0]]]), torch.tensor([[phi[1]]]), torch.tensor([[4.0]]), alive)
    lstd.add(torch.tensor([[phi[1]]]), torch.tensor([[phi[2]]]), torch.tensor([[-1.0]]), alive)
    e1, e2 = 2.0, 0.25 * 2.0 + 3.0
    assert float(lstd.a) == pytest.approx(e1 * (2.0 - 0.5) + e2 * (3.0 - 1.0))
    assert float(lstd.b) == pytest.approx(0.5 * (e1 * 4.0 + e2 * -1.0))
    assert float(lstd.c) == pytest.approx(1.0 + 4.0)
    assert float(lstd.phi_next_sum) == pytest.approx(5.0) and lstd.count == 2
    # One feature, no penalty: Θ = A⁻¹ b.
    assert float(lstd.solve(0.0)) == pytest.approx(float(lstd.b / lstd.a), rel=1e-6)


def test_lstd_trace_follows_each_episode_and_stopped_ones_add_nothing() -> None:
    """Two episodes, γ = λ = 0.5 (γλ = 0.25), scalar φ: A: φ 1 → 2 (c = 1), then stops; B: φ 3 → 1 (c = 2) → 2
    (c = −1). Step 1: e_A = 2, e_B = 1; step 2 (B alone): e_B = 0.25 · 1 + 2 = 2.25. A = 2(2 − ½) + 1(1 − 3/2) +
    2.25(2 − ½) = 5.875, b = ½(2 · 1 + 1 · 2 + 2.25 · −1) = 0.875, C = 1 + 9 + 1, Σφ(s') = 5, n = 3."""
    lstd = LSTDLambda(num_features=1, num_outputs=1, gamma=0.5, lam=0.5)
    lstd.add(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [1.0]]), torch.tensor([[1.0], [2.0]]),
             torch.tensor([True, True]))  # fmt: skip
    lstd.add(torch.tensor([[1.0]]), torch.tensor([[2.0]]), torch.tensor([[-1.0]]), torch.tensor([False, True]))
    assert (float(lstd.a), float(lstd.b), float(lstd.c)) == pytest.approx((5.875, 0.875, 11.0))
    assert float(lstd.phi_next_sum) == 5.0 and lstd.count == 3


def _chain_closed_form(
    mu0: np.ndarray, transition: np.ndarray, cost: np.ndarray, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Expected A, b, C and Σφ(s') per episode for one-hot features on a finite chain whose episodes stop after each
    transition with probability 1 − γ (derivation in the test below), and the expected number of transitions."""
    n = len(mu0)
    eye = np.eye(n)
    occupancy = mu0 @ np.linalg.inv(eye - gamma * transition)  # v = Σ_k γ^k μ0 P^k
    next_occupancy = occupancy @ transition  # u = Σ_k γ^k μ0 P^(k+1)
    trace_sum = np.linalg.inv(eye - gamma**2 * lam * transition)  # M = Σ_j (γ²λ P)^j
    a = (
        np.diag(next_occupancy) @ trace_sum
        - gamma * (np.diag(occupancy) @ transition).T
        - gamma**3 * lam * np.diag(next_occupancy) @ trace_sum
    )
    reverse_cost = np.einsum("s,st,stk->tk", occupancy, transition, cost)  # R[s'] = Σ_s v(s) P(s, s') c(s, s')
    mean_cost = np.einsum("st,stk->sk", transition, cost)  # c̄(s) = Σ_s' P(s, s') c(s, s')
    b = gamma * (reverse_cost + gamma**2 * lam * np.diag(next_occupancy) @ trace_sum @ mean_cost)
    return a, b, np.diag(occupancy), next_occupancy


@pytest.mark.parametrize("lam", [0.0, 0.9])
def test_lstd_lambda_on_a_chain_matches_the_closed_form(lam: float) -> None:
    """Three states, one-hot φ, a 2-dim cost c(s, s'). With the trace e_t = Σ_{k≤t} (γλ)^(t−k) φ(s_{k+1}) and
    transition t present with probability γ^t, the expected statistics per episode are

        A = diag(u) M − γ (diag(v) P)ᵀ − γ³λ diag(u) M,    b = γ [R + γ²λ diag(u) M c̄],    C = diag(v),

    v = μ0 (I − γP)⁻¹, u = v P, M = (I − γ²λ P)⁻¹, R[s'] = Σ_s v(s) P(s, s') c(s, s'), c̄(s) = Σ_s' P(s, s') c(s, s').
    Sampled over 40 000 episodes, the solved Θ (with and without the constraint) matches the closed form's."""
    torch.manual_seed(0)
    gamma = 0.8
    mu0 = np.array([0.6, 0.3, 0.1])
    transition = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.3, 0.3, 0.4]])
    cost = np.arange(18, dtype=np.float64).reshape(3, 3, 2) / 9.0 - 1.0
    cost[..., 1] = np.sin(cost[..., 1] * 3)
    a, b, c, phi_next = _chain_closed_form(mu0, transition, cost, gamma, lam)
    transitions_per_episode = 1.0 / (1.0 - gamma)

    episodes = 40_000
    lstd = LSTDLambda(3, 2, gamma, lam)
    eye = torch.eye(3)
    p, cost_t = torch.as_tensor(transition, dtype=torch.float32), torch.as_tensor(cost, dtype=torch.float32)
    state = torch.multinomial(torch.as_tensor(mu0, dtype=torch.float32), episodes, replacement=True)
    alive = torch.ones(episodes, dtype=torch.bool)
    while alive.any():
        next_state = torch.multinomial(p[state], 1).squeeze(1)
        lstd.add(eye[state][alive], eye[next_state][alive], cost_t[state, next_state][alive], alive)
        state = next_state
        alive &= torch.rand(episodes) < gamma
    assert lstd.count / episodes == pytest.approx(transitions_per_episode, rel=0.03)

    def solve(a: np.ndarray, b: np.ndarray, c: np.ndarray, phi: np.ndarray, penalty: float) -> np.ndarray:
        c_inv = np.linalg.inv(c)
        return np.linalg.solve(a.T @ c_inv @ a + penalty * np.outer(phi, phi), a.T @ c_inv @ b)

    scale = 1.0 / transitions_per_episode  # the estimator divides by the transition count
    for penalty in (0.0, 0.1):
        expected = solve(a * scale, b * scale, c * scale, phi_next * scale, penalty)
        sampled = lstd.solve(penalty).double().numpy()
        assert np.abs(sampled - expected).max() < 0.06 * np.abs(expected).max(), (penalty, sampled, expected)
    # Without the constraint it is the plain LSTD solution A⁻¹b, the fixed point g(s') = γ E[g(s) + c | s'] in the
    # λ = 0 case.
    assert np.allclose(solve(a, b, c, phi_next, 0.0), np.linalg.solve(a, b))


def test_features_are_one_state_and_its_squares() -> None:
    assert lstd_features(torch.tensor([[2.0, -3.0]])).tolist() == [[1.0, 2.0, -3.0, 4.0, 9.0]]


# ---------------------------------------------------------------------------------------------------- the model
def _model(seed: int = 0) -> EnsembleDynamics:
    torch.manual_seed(seed)
    return EnsembleDynamics(2, 1, study_dynamics())


def test_log_likelihood_grads_match_autograd_row_by_row() -> None:
    """The vmapped per-row ∇_θ log N(s' | s + μ, σ²) equals autograd on each row alone, flattened like θ."""
    model = _model()
    obs, act, next_obs = torch.randn(5, 2), torch.randn(5, 1), torch.randn(5, 2)
    batched = log_likelihood_grads(model, obs, act, next_obs)
    assert batched.shape == (5, parameter_vector(model).numel())
    for row in range(5):
        model.zero_grad()
        log_likelihood = -(pointwise_nll(model, obs[row : row + 1], act[row : row + 1], next_obs[row : row + 1]))
        log_likelihood.sum().backward()
        expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        assert torch.allclose(batched[row], expected, atol=1e-5)


def test_pointwise_nll_by_hand() -> None:
    """ℓ = ½ Σ_d [(μ_d − Δs_d)² / σ²_d + log σ²_d] + log 2π for 2 dims; with μ = 0 (zeroed output layer) and
    log σ² = (0, log 4): ½ [(1 + 4/4) + log 4] + log 2π for Δs = (1, 2)."""
    model = _model()
    with torch.no_grad():
        model.net.output.weight.zero_()
        model.net.output.bias.zero_()
        model.logvar.copy_(torch.tensor([0.0, math.log(4.0)]).view(1, 1, 2))
    with torch.no_grad():
        nll = pointwise_nll(model, torch.zeros(1, 2), torch.zeros(1, 1), torch.tensor([[1.0, 2.0]]))
    assert float(nll) == pytest.approx(0.5 * (2.0 + math.log(4.0)) + math.log(2 * math.pi))


def test_correction_vector_by_hand() -> None:
    """g = Σ_j w_j ℓ_j φ(s_j)ᵀΘ / Σ_j w_j on two rows with a 5 x 1 Θ."""
    theta = torch.tensor([[1.0], [0.0], [1.0], [0.0], [0.5]])  # φᵀΘ = 1 + s_2 + ½ s_2²
    obs = torch.tensor([[0.0, 2.0], [5.0, -1.0]])
    nll, weights = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 3.0])
    per_row = torch.tensor([1 + 2 + 2.0, 1 - 1 + 0.5])
    expected = (weights * nll * per_row).sum() / weights.sum()
    assert correction_vector(theta, obs, nll, weights).tolist() == pytest.approx([float(expected)])


def test_live_correction_changes_the_gradient_and_the_detached_one_does_not() -> None:
    """⟨θ − θ_i, g⟩ through live parameters adds exactly g to the gradient; the official detached version adds its
    value to the loss but nothing to the gradient."""
    model = _model()
    obs, act, next_obs = torch.randn(8, 2), torch.randn(8, 1), torch.randn(8, 2)
    anchor = parameter_vector(model).detach().clone()
    g = torch.randn_like(anchor)
    with torch.no_grad():  # move θ away from the anchor so the term has a value
        for p in model.parameters():
            p.add_(0.1)

    def gradient(extra: Any | None) -> torch.Tensor:
        model.zero_grad()
        loss = pointwise_nll(model, obs, act, next_obs).mean()
        if extra is not None:
            loss = loss + extra()
        loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    plain = gradient(None)
    live = correction_loss(model, anchor, g, live=True)
    detached = correction_loss(model, anchor, g, live=False)
    assert torch.allclose(gradient(live), plain + g, atol=1e-5)
    assert torch.equal(gradient(detached), plain)
    # The proximal term 2κ(θ − θ_i) is live in both.
    offset = parameter_vector(model).detach() - anchor
    proximal = correction_loss(model, anchor, None, live=False, proximal_coef=0.5)
    assert torch.allclose(gradient(proximal), plain + offset, atol=1e-5)
    with torch.no_grad():
        value, expected = float(detached()), float(((parameter_vector(model) - anchor) * g).sum())
    assert value == pytest.approx(expected, rel=1e-5) and value != 0.0


def test_study_score_by_hand() -> None:
    """score = −mean_D[w · ℓ] with ℓ = ½ Σ_d [(μ_d − Δs_d)² / σ²_d + log σ²_d] + log 2π: μ = 0, log σ² = 0, rows
    with Δs = (1, 0) and (0, 2) give ℓ = ½ + log 2π and 2 + log 2π; weights (1.5, 0.5) make the score
    −(1.5 (½ + log 2π) + 0.5 (2 + log 2π)) / 2."""
    model = _model()
    with torch.no_grad():
        model.net.output.weight.zero_()
        model.net.output.bias.zero_()
    obs, act = torch.zeros(2, 2), torch.zeros(2, 1)
    next_obs = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    log_2pi = math.log(2 * math.pi)
    expected = -(1.5 * (0.5 + log_2pi) + 0.5 * (2.0 + log_2pi)) / 2
    assert study_score(model, obs, act, next_obs, torch.tensor([1.5, 0.5])) == pytest.approx(expected, rel=1e-6)


def _scripted_episodes(lengths: list[int]) -> tuple[Any, Any, list[int]]:
    """starts(1) gives episode k the state (k, 0), and goes_on ends episode k after lengths[k] transitions."""
    calls: list[int] = []
    flags = iter([step < length for length in lengths for step in range(1, length + 1)])

    def starts(num: int) -> torch.Tensor:
        calls.append(num)
        return torch.tensor([[float(len(calls) - 1), 0.0]]).expand(num, 2)

    def goes_on(size: int) -> torch.Tensor:
        return torch.tensor([next(flags)] * size)

    return starts, goes_on, calls


def test_occupancy_set_is_whole_episodes_one_after_another() -> None:
    """The original's `get_sim_data`: one episode at a time, each from starts(1), until at least `num` rows exist
    (the last episode whole), then `num` of those rows at random. States (k, t) count the episode and its step, the
    action is 10·t. Lengths 4, 2, 5, 3 and num = 9: three episodes (11 rows) run, the fourth never starts, and 9 of
    the 11 rows are drawn; with num = 11 the set is exactly those three episodes."""

    def transition(states: torch.Tensor, torques: torch.Tensor) -> torch.Tensor:
        return states + torch.tensor([0.0, 1.0])

    def policy(states: torch.Tensor) -> torch.Tensor:
        return 10 * states[:, 1:]

    lengths = [4, 2, 5, 3]
    episodes = {(k, t) for k in range(3) for t in range(lengths[k])}
    for num in (9, 11):
        starts, goes_on, calls = _scripted_episodes(lengths)
        sim = occupancy_set(transition, policy, starts, 0.5, num, goes_on=goes_on)
        assert calls == [1, 1, 1]
        rows = {(int(k), int(t)) for k, t, _ in sim.tolist()}
        assert len(rows) == len(sim) == num and rows <= episodes
        assert torch.equal(sim[:, 2], 10 * sim[:, 1])
    assert rows == episodes


# ---------------------------------------------------------------------------------------------------- weighted MLE
def _pendulum_data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return pendulum.random_data(n, torch.Generator().manual_seed(0))


def _fit(weights: torch.Tensor | None, epochs: int = 30) -> EnsembleDynamics:
    obs, act, next_obs = _pendulum_data()
    model = _model(1)
    model.cfg.max_epochs = epochs
    torch.manual_seed(2)
    model.fit(obs, act, next_obs, None, weights=weights, progress=False)
    return model


def test_weighted_mle_with_unit_weights_is_erm_and_moves_toward_upweighted_data() -> None:
    """w ≡ 1 gives bit-identical parameters to the unweighted fit; weighting up the rows with θ̇ > 0 lowers the NLL
    there relative to the unweighted fit, and raises it on the rest."""
    plain, ones = _fit(None), _fit(torch.ones(256))
    for a, b in zip(plain.parameters(), ones.parameters()):
        assert torch.equal(a, b)
    obs, act, next_obs = _pendulum_data()
    favoured = obs[:, 1] > 0
    weights = torch.where(favoured, 10.0, 0.1)
    weighted = _fit(weights / weights.mean())
    with torch.no_grad():
        nll_plain = pointwise_nll(plain, obs, act, next_obs)
        nll_weighted = pointwise_nll(weighted, obs, act, next_obs)
    assert float(nll_weighted[favoured].mean()) < float(nll_plain[favoured].mean())
    assert float(nll_weighted[~favoured].mean()) > float(nll_plain[~favoured].mean())


def test_study_model_options() -> None:
    """The study's model: no variance head (one free log σ² per output, starting at 0, shared by all rows), raw
    inputs, Adam with L2 on every parameter, and a fit that stops after 21 epochs without a lower training loss."""
    model = _model()
    assert model.net.output.out_features == 2 and model.logvar.shape == (1, 1, 2)
    assert not hasattr(model, "max_logvar")
    mean, logvar = model(torch.randn(4, 2) * 10, torch.randn(4, 1))
    assert torch.equal(logvar, torch.zeros(1, 4, 2))
    optimizer = model.optimizer()
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["weight_decay"] == 1e-4
    assert len(optimizer.param_groups[0]["params"]) == len(list(model.parameters()))
    obs, act, next_obs = _pendulum_data()
    model.cfg.lr = 0.05  # a large step makes the loss plateau and bounce, so the patience rule ends the fit
    metrics = model.fit(obs, act, next_obs, None, progress=False)
    assert 21 < metrics["dynamics/epochs"] < model.cfg.max_epochs
    x = torch.cat([obs, act], dim=-1)
    assert torch.equal(model.input_scaler(x), x)


# ---------------------------------------------------------------------------------------------------- runs
class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def policy_file(study_policy_file: Path) -> Path:
    """The study's target policy: conftest's small untrained actor."""
    return study_policy_file


class _NoLogger:
    def scalars(self, metrics: dict[str, float], step: int) -> None:
        pass

    def evaluation(self, *args: Any, **kwargs: Any) -> None:
        pass


def _study(policy: Path, run_dir: Path, algo: str, *overrides: str) -> PendulumStudy:
    """A study object at toy size (no run directory machinery)."""
    cfg = load_config(algo, TASK, overrides=[f"policy_path={policy}", "data_transitions=64", *overrides])
    return PendulumStudy(cfg, get_task(TASK), _NoLogger(), run_dir)  # type: ignore[arg-type]


def test_model_episodes_start_where_the_originals_do(
    policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Occupancy samples (one episode per draw) and LSTD(λ) episodes (all at once) start from N((π, 0), 0.5²·I) by
    default, the original's `reset`: every draw goes through `pendulum.evaluation_reset` with std 0.5, the starts
    have that mean and spread, and the occupancy set's states include them (γ = 0.5: short episodes, many starts)."""
    study = _study(policy_file, tmp_path, "wmopo-alg1", "sim_samples=300", "ratio.max_epochs=1", "eval_episodes=4",
                   "lstd_episodes=50", "gamma=0.5")  # fmt: skip
    assert load_config("wmopo-alg1", TASK).model_eval_reset_std == 0.5
    torch.manual_seed(0)
    drawn: list[tuple[int, float, torch.Tensor]] = []
    original = pendulum.evaluation_reset

    def recorded(num: int, std: float, generator: Any = None) -> torch.Tensor:
        drawn.append((num, std, original(num, std, generator)))
        return drawn[-1][2]

    monkeypatch.setattr(pendulum, "evaluation_reset", recorded)
    study.score_current()
    assert {num for num, _, _ in drawn} == {1, 4} and all(std == 0.5 for _, std, _ in drawn)  # episodes, returns
    starts = torch.cat([starts for num, _, starts in drawn if num == 1])
    assert len(starts) > 100
    assert torch.allclose(starts.mean(0), torch.tensor([math.pi, 0.0]), atol=0.15)
    assert torch.allclose(starts.std(0), torch.tensor([0.5, 0.5]), atol=0.1)
    sim = np.load(tmp_path / "figures" / "iter0.npz")["sim"]
    assert len(set(map(tuple, starts.tolist())) & set(map(tuple, sim[:, :2].tolist()))) > 50
    drawn.clear()
    grad_log_density(study.model, study.policy, study.cfg)
    assert [(num, std) for num, std, _ in drawn] == [(50, 0.5)]


def test_training_and_evaluation_starts_are_separate_keys(
    policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`model_start_std` moves the simulated episodes of training (occupancy samples, LSTD) and nothing else;
    `model_eval_reset_std` moves only the model's evaluation episodes."""
    study = _study(policy_file, tmp_path, "wmopo-alg1", "sim_samples=100", "ratio.max_epochs=1", "eval_episodes=4",
                   "lstd_episodes=20", "gamma=0.5", "model_start_std=0.3", "model_eval_reset_std=0.7")  # fmt: skip
    drawn: list[tuple[int, float]] = []
    original = pendulum.evaluation_reset

    def recorded(num: int, std: float, generator: Any = None) -> torch.Tensor:
        drawn.append((num, std))
        return original(num, std, generator)

    monkeypatch.setattr(pendulum, "evaluation_reset", recorded)
    study.score_current()
    assert {std for num, std in drawn if num == 1} == {0.3} and [d for d in drawn if d[0] == 4] == [(4, 0.7)]
    drawn.clear()
    grad_log_density(study.model, study.policy, study.cfg)
    assert drawn == [(20, 0.3)]


def test_matched_start_evaluation_measures_the_model_alone(
    policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the real pendulum as the model and a deterministic policy, the matched-start error (the model's episodes
    from the real episodes' own starts) is exactly 0, while the authors' protocol (real starts σ = 1, model starts
    σ = 0.5) still reports an error: the start mismatch alone. Both are in the result."""
    study = _study(policy_file, tmp_path, "wmopo-erm", "eval_episodes=200")
    real_pendulum = lambda states, torques, noise=None: pendulum.step(states, torques)  # noqa: E731
    monkeypatch.setattr("algos.wmopo_study.model_transition", lambda model: real_pendulum)
    study.policy = lambda states: -0.5 * states[..., 1:]  # type: ignore[method-assign]
    study.scores, study.models = [0.0], [study.model.state_dict()]
    (tmp_path / "figures").mkdir()
    torch.manual_seed(0)
    result = study.evaluate()
    assert result["evaluation_error_matched"] == 0.0
    assert result["sim_return_matched"] == result["real_return"]
    assert result["evaluation_error"] > 0.01
    assert result["evaluation_error"] == abs(result["real_return"] - result["sim_return"])


def test_refit_warm_starts_with_a_fresh_adam(policy_file: Path, tmp_path: Path) -> None:
    """Each refit starts from θ_i (not a new initialisation) with a new Adam, as the original's `train_model`: with
    one batch per epoch and one epoch, θ_{i+1} = θ_i − lr · ĝ / (|ĝ| + 1e-8), Adam's first step, where ĝ is the
    gradient of mean(w · ℓ) plus the coupled L2 1e-4 · θ_i; a second refit takes the same kind of step again."""
    study = _study(policy_file, tmp_path, "wmopo-alg2", "dynamics.batch_size=64", "refit_epochs=1",
                   "refit_lr=0.01")  # fmt: skip
    weights = torch.linspace(0.5, 1.5, 64)
    for _ in range(2):
        before = {name: p.detach().clone() for name, p in study.model.named_parameters()}
        study.model.zero_grad()
        x = study.model.input_scaler(torch.cat([study.obs, study.act], dim=-1))
        study.model.training_loss(x, study.next_obs - study.obs, weights, include_decay=False).backward()
        grads = {name: p.grad + 1e-4 * p.detach() for name, p in study.model.named_parameters()}
        study.refit(weights)
        for name, p in study.model.named_parameters():
            expected = before[name] - 0.01 * grads[name] / (grads[name].abs() + 1e-8)
            assert torch.allclose(p.detach(), expected, atol=1e-6), name


def _study_args(log_dir: Path, policy: Path, algo: str = "wmopo-alg1") -> list[str]:
    return [
        "--task", TASK, "--algo", algo, "--seed", "1", "--log-dir", str(log_dir), "--no-progress", "--set",
        f"policy_path={policy}", "iterations=2", "data_transitions=200", "sim_samples=200", "lstd_episodes=50",
        "refit_epochs=15", "dynamics.max_epochs=30", "eval_episodes=10", "ratio.max_epochs=10",
    ]  # fmt: skip


def _study_dir(log_dir: Path, algo: str = "wmopo-alg1") -> Path:
    (run_dir,) = (log_dir / TASK / algo).iterdir()
    return run_dir


@pytest.fixture(scope="module")
def study_runs(policy_file: Path, tmp_path_factory: pytest.TempPathFactory, checkpoint_of: Any) -> dict[str, Path]:
    log_dir = tmp_path_factory.mktemp("study_runs")
    train.main(_study_args(log_dir / "straight", policy_file))
    original = PendulumStudy.refit

    def refit_then_die(self: PendulumStudy, weights: torch.Tensor) -> None:
        if self.iteration == 1:
            raise Killed
        original(self, weights)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        patch.setattr(PendulumStudy, "refit", refit_then_die)
        train.main(_study_args(log_dir / "resumed", policy_file))
    resumed = _study_dir(log_dir / "resumed")
    assert checkpoint_of(resumed)["epoch"] == 1
    train.main(["--resume", str(resumed), "--no-progress"])
    return {"straight": _study_dir(log_dir / "straight"), "resumed": resumed}


def test_resumed_study_matches_the_uninterrupted_one(
    study_runs: dict[str, Path], same_tensors: Any, checkpoint_of: Any
) -> None:
    """Killed inside iteration 1 (checkpoint after iteration 0), resumed: the final checkpoint (models, scores,
    ratio network, result, RNG) and progress.csv equal the uninterrupted run's."""
    same_tensors(checkpoint_of(study_runs["straight"]), checkpoint_of(study_runs["resumed"]))
    rows = [(run / "progress.csv").read_text().splitlines() for run in study_runs.values()]
    assert [line.rsplit(",", 1)[0] for line in rows[0]] == [line.rsplit(",", 1)[0] for line in rows[1]]


def test_study_killed_in_its_erm_fit_resumes_from_its_step_0_checkpoint(
    study_runs: dict[str, Path], policy_file: Path, tmp_path: Path, same_tensors: Any, checkpoint_of: Any
) -> None:
    """Every train.py loop checkpoints before training (`RunRunner.start`): a study killed inside its first model fit
    has a checkpoint (phase "erm"), and resuming it ends as the uninterrupted run."""

    def fit_then_die(*args: Any, **kwargs: Any) -> None:
        raise Killed

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        patch.setattr(EnsembleDynamics, "fit", fit_then_die)
        train.main(_study_args(tmp_path, policy_file))
    run_dir = _study_dir(tmp_path)
    state = checkpoint_of(run_dir)
    assert (state["phase"], state["epoch"]) == ("erm", 0)
    train.main(["--resume", str(run_dir), "--no-progress"])
    same_tensors(checkpoint_of(study_runs["straight"]), checkpoint_of(run_dir))


def test_study_run_records_scores_weights_and_the_result(study_runs: dict[str, Path], checkpoint_of: Any) -> None:
    """Three scored models (ERM and two refits), the best one chosen, figure data per iteration, and the result's
    evaluation error |real − simulated|."""
    state = checkpoint_of(study_runs["straight"])
    assert state["phase"] == "done" and len(state["scores"]) == 3 and len(state["models"]) == 3
    result = state["result"]
    assert result["chosen_iteration"] == int(np.argmax(state["scores"]))
    assert result["evaluation_error"] == pytest.approx(abs(result["real_return"] - result["sim_return"]))
    figure = np.load(study_runs["straight"] / "figures" / "iter2.npz")
    assert figure["data"].shape == (200, 3) and figure["sim"].shape == (200, 3)
    assert float(figure["weights"].mean()) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--task", "hopper-medium-gen", "--algo", "wmopo-alg1"], ["custom_pendulum tasks only"]),
        (["--task", "Hopper-v4", "--algo", "wmopo-erm"], ["custom_pendulum tasks only", "--task CustomPendulum-v0"]),
        (["--task", TASK, "--algo", "wmopo-alg1", "--set", "correction=full"], ["correction='full'", "one of"]),
        (
            ["--task", TASK, "--algo", "wmopo-alg2", "--set", "policy_path=/nowhere/p.pt"],
            ["policy_path", "collect.py train --env custom_pendulum"],
        ),
        (["--task", TASK, "--algo", "wmopo-alg2", "--set", "dynamics.num_ensemble=3"], ["study fits one model"]),
    ],
    ids=["dataset-task", "other-env", "bad-correction", "missing-policy", "ensemble"],
)
def test_bad_input_is_one_line(
    extra: list[str], expected: list[str], policy_file: Path, tmp_path: Path, cli_error: Any
) -> None:
    """Each mistake is one line naming the bad value and the fix, exit code 2, and no run directory."""
    argv = ["--set", f"policy_path={policy_file}", *extra, "--log-dir", str(tmp_path / "log"), "--no-progress"]
    err = cli_error(lambda: train.main(argv))
    for text in expected:
        assert text in err, (text, err)
    assert not (tmp_path / "log").exists()


def test_a_study_run_is_not_a_policy_for_eval(study_runs: dict[str, Path]) -> None:
    from algos import load_run

    with pytest.raises(UserError, match="trains none"):
        load_run(study_runs["straight"])


def test_plot_draws_the_study_figures(study_runs: dict[str, Path], tmp_path: Path) -> None:
    """plot.py --figures wmopo-states: Figure 1 per run (visited states over the data, data coloured by weight);
    --figures wmopo: the per-iteration curves over seeds, against the iteration."""
    import plot

    written = plot.main([str(study_runs["straight"]), "--figures", "wmopo-states", "--out", str(tmp_path)])
    assert [path.name for path in written] == [f"{TASK}_wmopo-alg1_seed1_states.png"]
    assert written[0].stat().st_size > 10_000
    curves = plot.main([str(study_runs["straight"]), "--figures", "wmopo", "--out", str(tmp_path), "--smooth", "1"])
    assert sorted(path.name for path in curves) == sorted(
        f"{TASK}_{name}.png" for name in ("sim-return", "score", "weights-ess")
    )
    assert plot.x_unit(TASK, "wmopo-alg1", "study/score") == "Iteration i (model θ_i)"


def test_score_tables_any_logged_metric(study_runs: dict[str, Path], tmp_path: Path, checkpoint_of: Any) -> None:
    """score.py --metric result/evaluation_error reads the study's result per seed; --raw with --metric is refused."""
    import score

    (table,) = score.main(
        [str(study_runs["straight"]), "--metric", "result/evaluation_error", "--out", str(tmp_path / "s.md")]
    )
    expected = checkpoint_of(study_runs["straight"])["result"]["evaluation_error"]
    assert table.algo == "wmopo-alg1" and table.values == pytest.approx((expected,), rel=1e-6)
    with pytest.raises(UserError, match="pass one of them"):
        score.main([str(study_runs["straight"]), "--metric", "x", "--raw", "--out", str(tmp_path / "t.md")])


def test_sweeps_see_a_finished_study_as_finished(study_runs: dict[str, Path]) -> None:
    """The checkpoint's counter reaches iterations + 1 only after the final evaluation, which is what sweeps and
    resumes look for."""
    from utils.launch import run_status

    assert run_status(study_runs["straight"]) == (3, 3)


def test_a_diverged_refit_ends_the_study_with_the_models_scored(
    policy_file: Path, tmp_path: Path, checkpoint_of: Any
) -> None:
    """A refit that leaves a model whose every episode goes non-finite (the live correction's refit can run away)
    ends the iterations: θ_0 and θ_1 are scored, θ_2 is not, the chosen model is the better of the two, and the run
    counts as finished. θ_2 here has finite, huge parameters: its first step overflows."""
    from utils.launch import run_status

    original = PendulumStudy.refit

    def refit_diverging_at_1(self: PendulumStudy, weights: torch.Tensor) -> None:
        original(self, weights)
        if self.iteration == 1:
            with torch.no_grad():
                self.model.net.output.bias.fill_(3e38)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PendulumStudy, "refit", refit_diverging_at_1)
        train.main(_study_args(tmp_path, policy_file))
    run_dir = _study_dir(tmp_path)
    state = checkpoint_of(run_dir)
    assert len(state["scores"]) == 2 and state["phase"] == "done"
    assert state["result"]["models_scored"] == 2
    assert state["result"]["chosen_iteration"] == int(np.argmax(state["scores"]))
    assert math.isfinite(state["result"]["sim_return"])
    assert run_status(run_dir) == (3, 3)


def test_the_states_figure_picks_the_chosen_model(study_runs: dict[str, Path], tmp_path: Path) -> None:
    """Figure 1's right panel is the best-scoring model, iterations told apart by number (iter10 sorts before iter2
    as a file name)."""
    import shutil

    import utils.plotting
    from algos.wmopo_study import states_figure

    run_dir = tmp_path / "run"
    shutil.copytree(study_runs["straight"], run_dir)
    first = dict(np.load(run_dir / "figures" / "iter0.npz"))
    np.savez(run_dir / "figures" / "iter10.npz", **{**first, "score": 1e9})
    titles: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            utils.plotting, "state_scatter_panels", lambda path, panels, *rest: titles.extend(p[0] for p in panels)
        )
        states_figure(run_dir, tmp_path / "fig.png", "wmopo-alg1 seed 1")
    assert titles[-1] == "weights of θ_10 (chosen)"
