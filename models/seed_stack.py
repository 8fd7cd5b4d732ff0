"""S seeds' copies of one network computed as one batched call, and S seeds' random streams.

Small MLPs leave a CPU or GPU mostly idle; S independent runs of them in one process turn S small kernels into one
larger one. `SeedStack` holds the S copies' parameters stacked along a new leading dimension ([S, ...]) and evaluates
the unchanged network class under `torch.func.vmap`, so per-seed state dicts stay the ordinary ones (a seed's run
dir, checkpoint and exported policy are those of a run trained alone). Inputs and outputs carry the seed dimension
first: `[S, B, ...]`.

Seeds stay independent: every optimiser update acts elementwise (Adam) on each seed's slice, losses are summed over
seeds (so a seed's gradient is its own loss's), and every random draw of seed s comes from its own generator
(`SeedStreams`), started where that seed's run alone would stand, so a stacked run draws the same numbers as the
S runs trained alone.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from models.actor_critic import DeterministicActor, TanhGaussianActor, squashed_gaussian_sample


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
        self.stacked = nn.ParameterDict()
        for name, value in params.items():  # one by one: a dict argument would be sorted, reordering the parameters
            self.stacked[_key(name)] = nn.Parameter(value.detach().clone())
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

    def __getattr__(self, name: str) -> Any:
        """The wrapped class's other methods, stacked: `stack.decode(z)` is `stack.call("decode", z)`, so code written
        for the module runs unchanged on its stack (nn.Module's own attributes come first)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            template = self.__dict__.get("_template")
            if template is None or not callable(getattr(type(template[0]), name, None)) or name.startswith("_"):
                raise
            return lambda *args: self.call(name, *args)

    def seed_call(self, seed: int, method: str, *args: Any) -> Any:
        """`module.method(*args)` of one seed alone (no seed dimension): the unchanged module code on that seed's
        slice of the parameters, e.g. to act in one seed's rollouts or evaluation."""
        target = self._template[0] if method == "forward" else _Method(self._template[0], method)
        prefix = "" if method == "forward" else "inner."
        return functional_call(target, {name: value[seed] for name, value in self._state(prefix).items()}, args)

    def unstack(self) -> list[dict[str, torch.Tensor]]:
        """Each seed's ordinary `state_dict` (copies), loadable into the unstacked module class."""
        state = self._state("")
        return [{name: value[seed].detach().clone() for name, value in state.items()} for seed in range(self.num_seeds)]

    def state_names(self) -> list[str]:
        """The wrapped module's ordinary parameter and buffer names."""
        return [*self._names, *self._buffer_names]

    @torch.no_grad()
    def write_seed(self, seed: int, name: str, value: torch.Tensor) -> None:
        """Overwrite seed `seed`'s slice of one parameter or buffer (its ordinary name)."""
        self._state("")[name][seed].copy_(value)


class SeedStreams:
    """Each seed's random streams (torch, numpy, Python), so seed s draws exactly what its run alone would.

    Stacked computations draw from `generators` (one torch.Generator per seed; draws come back stacked [S, ...]).
    Per-seed code (rollouts, evaluation) runs unchanged inside `active(s)`, which swaps seed s's states into the
    global generators for its duration. `capture()` right after building a seed's run under `seed_everything(seed)`
    adds a seed whose streams continue where that run alone would stand.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.generators: list[torch.Generator] = []
        self._host_states: list[dict[str, Any]] = []  # numpy and Python `random` states, per seed

    def capture(self) -> None:
        """Add a seed continuing the global generators' current states."""
        generator = torch.Generator(self.device)
        generator.set_state(self._global_torch_state())
        self.generators.append(generator)
        self._host_states.append({"numpy": np.random.get_state(), "python": random.getstate()})

    def _global_torch_state(self) -> torch.Tensor:
        return torch.get_rng_state() if self.device.type == "cpu" else torch.cuda.get_rng_state(self.device)

    def _set_global_torch_state(self, state: torch.Tensor) -> None:
        if self.device.type == "cpu":
            torch.set_rng_state(state)
        else:
            torch.cuda.set_rng_state(state, self.device)

    @contextmanager
    def active(self, seed: int) -> Iterator[None]:
        """Seed `seed`'s streams as the global ones; the caller's global states come back afterwards."""
        outer = (self._global_torch_state(), np.random.get_state(), random.getstate())
        self._set_global_torch_state(self.generators[seed].get_state())
        np.random.set_state(self._host_states[seed]["numpy"])
        random.setstate(self._host_states[seed]["python"])
        try:
            yield
        finally:
            self.generators[seed].set_state(self._global_torch_state())
            self._host_states[seed] = {"numpy": np.random.get_state(), "python": random.getstate()}
            self._set_global_torch_state(outer[0])
            np.random.set_state(outer[1])
            random.setstate(outer[2])

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=dtype) for g in self.generators])


class SeedStackedActor(SeedStack):
    """S tanh-Gaussian actors: one vmapped network call, each seed's sampling noise from its own generator."""

    def __init__(self, actors: Sequence[TanhGaussianActor], rng: SeedStreams) -> None:
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


class SeedStackedDeterministicActor(SeedStack):
    """S deterministic actors (behaviour cloning's): (actions [S, B, act_dim], None) like the actor's own call."""

    def forward(self, obs: torch.Tensor, deterministic: bool = True) -> tuple[torch.Tensor, None]:
        return self.call("action", obs), None

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self(obs)[0]


def stack_modules(modules: Sequence[nn.Module], rng: SeedStreams) -> SeedStack:
    """The seed-stacked form of S copies of one network: actors get the wrapper that samples from each seed's
    streams (or returns no log-probability), every other network a plain `SeedStack`."""
    if isinstance(modules[0], TanhGaussianActor):
        return SeedStackedActor(cast(Sequence[TanhGaussianActor], modules), rng)
    if isinstance(modules[0], DeterministicActor):
        return SeedStackedDeterministicActor(modules)
    return SeedStack(modules)
