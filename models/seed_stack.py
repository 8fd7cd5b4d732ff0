"""S seeds' copies of one network computed as one batched call, and S seeds' random streams.

Small MLPs leave a CPU or GPU mostly idle; S independent runs of them in one process turn S small kernels into one
larger one. `SeedStack` holds the S copies' parameters stacked along a new leading dimension ([S, ...]) and evaluates
the unchanged network class under `torch.func.vmap`, so per-seed state dicts stay the ordinary ones (a seed's run
dir, checkpoint and exported policy are those of a run trained alone). Inputs and outputs carry the seed dimension
first: `[S, B, ...]`.

Seeds stay independent: every optimiser update acts elementwise (Adam) on each seed's slice, losses are summed over
seeds (so a seed's gradient is its own loss's), and every random draw of seed s comes from its own generator
(`SeedGenerators`), started where that seed's run alone would stand, so a stacked run draws the same numbers as the
S runs trained alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from models.actor_critic import TanhGaussianActor, squashed_gaussian_sample


def _key(name: str) -> str:
    """Parameter names with dots cannot be registered directly; '.' becomes '__'."""
    return name.replace(".", "__")


class _Method(nn.Module):
    """Calls `method` of the wrapped module through `forward`, so functional_call can evaluate any method."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.inner, self.method = module, method

    def forward(self, *args: Any) -> Any:
        return getattr(self.inner, self.method)(*args)


class SeedStack(nn.Module):
    """S structurally identical modules as one: parameters and buffers [S, ...], calls vmapped over the seeds."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        if not modules:
            raise ValueError("SeedStack needs at least one module")
        self.num_seeds = len(modules)
        params, buffers = stack_module_state(list(modules))
        self._names = list(params)
        self._buffer_names = list(buffers)
        self.stacked = nn.ParameterDict({_key(k): nn.Parameter(v.detach().clone()) for k, v in params.items()})
        for name, value in buffers.items():
            self.register_buffer(f"buffer__{_key(name)}", value.clone())
        # The template holds the structure only (no memory); a list keeps it out of this module's parameters.
        self._template = [copy.deepcopy(modules[0]).to("meta")]
        self._calls: dict[str, Callable[..., Any]] = {}

    def _state(self, prefix: str) -> dict[str, torch.Tensor]:
        state = {f"{prefix}{name}": self.stacked[_key(name)] for name in self._names}
        for name in self._buffer_names:
            state[f"{prefix}{name}"] = getattr(self, f"buffer__{_key(name)}")
        return state

    def call(self, method: str, *args: torch.Tensor) -> Any:
        """`module.method(*args)` for every seed at once; each argument carries the seed dimension first."""
        if method not in self._calls:
            target = self._template[0] if method == "forward" else _Method(self._template[0], method)

            def one_seed(state: dict[str, torch.Tensor], *inputs: torch.Tensor) -> Any:
                return functional_call(target, state, inputs)

            self._calls[method] = vmap(one_seed)
        prefix = "" if method == "forward" else "inner."
        return self._calls[method](self._state(prefix), *args)

    def forward(self, *args: torch.Tensor) -> Any:
        return self.call("forward", *args)

    def unstack(self) -> list[dict[str, torch.Tensor]]:
        """Each seed's ordinary `state_dict` (copies), loadable into the unstacked module class."""
        state = self._state("")
        return [{name: value[seed].detach().clone() for name, value in state.items()} for seed in range(self.num_seeds)]

    @torch.no_grad()
    def load_seed_states(self, states: Sequence[dict[str, torch.Tensor]]) -> None:
        """Load S ordinary state dicts (the inverse of `unstack`)."""
        if len(states) != self.num_seeds:
            raise ValueError(f"expected {self.num_seeds} state dicts, got {len(states)}")
        for name, value in self._state("").items():
            value.copy_(torch.stack([state[name] for state in states]))


class SeedGenerators:
    """One torch.Generator per seed; each draw returns the S seeds' samples stacked [S, *shape].

    `capture(seed)` after building a seed's networks under `torch.manual_seed(seed)` starts that seed's stream where
    the global stream of the same seed's run alone would stand, so both runs draw the same numbers.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.generators: list[torch.Generator] = []

    def capture(self) -> None:
        """Add a stream continuing the global generator's current state (call right after building a seed)."""
        generator = torch.Generator(self.device)
        global_state = torch.get_rng_state() if self.device.type == "cpu" else torch.cuda.get_rng_state(self.device)
        generator.set_state(global_state)
        self.generators.append(generator)

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=dtype) for g in self.generators])

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.stack([torch.rand(shape, generator=g, device=self.device, dtype=dtype) for g in self.generators])

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        return torch.stack([torch.randint(high, shape, generator=g, device=self.device) for g in self.generators])

    def get_state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def set_state(self, states: Sequence[torch.Tensor]) -> None:
        for generator, state in zip(self.generators, states, strict=True):
            generator.set_state(state)


class SeedStackedActor(SeedStack):
    """S tanh-Gaussian actors: one vmapped network call, each seed's sampling noise from its own generator."""

    def __init__(self, actors: Sequence[TanhGaussianActor], rng: SeedGenerators) -> None:
        super().__init__(actors)
        if len(rng) != self.num_seeds:
            raise ValueError(f"{self.num_seeds} actors but {len(rng)} random streams")
        self.rng, self.max_action = rng, actors[0].max_action

    def distribution_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.call("distribution_params", obs)

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions [S, B, act_dim] and log-probabilities [S, B, 1] for observations [S, B, obs_dim]."""
        mean, log_std = self.distribution_params(obs)
        noise = torch.zeros_like(mean) if deterministic else self.rng.randn(*mean.shape[1:], dtype=mean.dtype)
        return squashed_gaussian_sample(mean, log_std, noise, self.max_action)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self(obs, deterministic)[0]
