"""Batched ensemble layers: all members in one kernel instead of a Python loop over members."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def soft_clamp(x: torch.Tensor, low: torch.Tensor | float, high: torch.Tensor | float) -> torch.Tensor:
    """Clamp to about [low, high] with softplus edges, so values outside still get a gradient (and learned bounds
    too): high − softplus(high − x), then low + softplus(· − low)."""
    x = high - F.softplus(high - x)
    return low + F.softplus(x - low)


class EnsembleLinear(nn.Module):
    """E independent linear layers computed as one batched matmul with weight [E, in, out].

    Input [E, B, in] gives [E, B, out]; input [B, in] is shared by all members (broadcast, no copy). `members`
    (indices, possibly a subset) evaluates only those members: input [M, B, in] or shared [B, in] gives [M, B, out].
    """

    def __init__(self, num_members: int, in_features: int, out_features: int, init: str = "truncated_normal") -> None:
        super().__init__()
        self.num_members, self.in_features, self.out_features = num_members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, out_features))
        if init == "truncated_normal":
            # MBPO/MOPO dynamics init: std 1 / (2 sqrt(fan_in)), truncated at 2 std as TF does.
            std = 1.0 / (2.0 * math.sqrt(in_features))
            nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)
        elif init == "uniform":
            # torch.nn.Linear's default, which SAC critics in OfflineRL-Kit/CORL start from.
            bound = 1.0 / math.sqrt(in_features)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)
        elif init == "xavier_uniform":
            # Glorot uniform per member, zero bias (the SAC networks of PMDB/MAGO).
            bound = math.sqrt(6.0 / (in_features + out_features))
            nn.init.uniform_(self.weight, -bound, bound)
        else:
            raise ValueError(f"unknown init {init!r}")

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        weight, bias = (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        if x.dim() == 2:
            return torch.matmul(x, weight) + bias
        return torch.baddbmm(bias, x, weight)

    def extra_repr(self) -> str:
        return f"members={self.num_members}, in={self.in_features}, out={self.out_features}"


class EnsembleMLP(nn.Module):
    """E independent MLPs evaluated together; used for dynamics ensembles and critic ensembles."""

    def __init__(
        self,
        num_members: int,
        in_dim: int,
        out_dim: int,
        hidden_dims: Sequence[int],
        activation: type[nn.Module] = nn.ReLU,
        init: str = "truncated_normal",
    ) -> None:
        super().__init__()
        dims = [in_dim, *hidden_dims]
        self.hidden = nn.ModuleList(EnsembleLinear(num_members, a, b, init) for a, b in zip(dims[:-1], dims[1:]))
        self.output = EnsembleLinear(num_members, dims[-1], out_dim, init)
        self.activation = activation()

    @property
    def layers(self) -> list[EnsembleLinear]:
        return [*self.hidden, self.output]

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """All members, or only `members` (see EnsembleLinear)."""
        for layer in self.hidden:
            x = self.activation(layer(x, members))
        return self.output(x, members)
