"""Spiking max pooling gated by accumulated input (Rueckauer et al. 2017; T2FSNN's spike_max_pool).

A max over spike trains is not the spike train of the max. The gate keeps, per input position, the
input accumulated so far; at each step every pooling window passes through the current input of the
position whose accumulated input is largest (ties go to the first position). Over T steps the
output's rate converges to the max of the input rates. The input is the previous layer's output
theta*s, so within a channel the accumulated input is proportional to the spike count.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def maxpool_gate_step(x: torch.Tensor, accumulated: torch.Tensor, pool: nn.MaxPool2d) -> tuple[torch.Tensor, torch.Tensor]:
    """One gate step. Returns (pooled output, new accumulated input)."""
    accumulated = accumulated + x
    _, index = F.max_pool2d(
        accumulated, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
        ceil_mode=pool.ceil_mode, return_indices=True,
    )
    flat = x.flatten(2)
    out = flat.gather(2, index.flatten(2)).view_as(index)
    return out, accumulated


class MaxPoolGate(nn.Module):
    """Binds the pooling geometry; the engine owns the accumulated-input state."""

    kind = "maxpool_gate"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)

    @classmethod
    def from_maxpool(cls, pool: nn.MaxPool2d) -> "MaxPoolGate":
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)

    def config(self) -> dict:
        p = self.pool
        return {"kernel_size": p.kernel_size, "stride": p.stride, "padding": p.padding,
                "dilation": p.dilation, "ceil_mode": p.ceil_mode}

    @classmethod
    def from_config(cls, config: dict) -> "MaxPoolGate":
        return cls(**config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ANN semantics: the max pooling this gate replaces."""
        return self.pool(x)
