"""Leaky integrate-and-fire neuron with hard reset, as in Spikformer (Zhou et al. 2022, arXiv 2209.15425) and the
dynamic-time-step paper (Datta et al., arXiv 2311.16456, Eq. 1-2), for directly trained spiking transformers.

Per time step t, with membrane time constant tau, threshold theta and input current X[t] (the decay applies to
the input too, SpikingJelly's ``decay_input``, which Spikformer uses):

    H[t] = V[t-1] + (X[t] - V[t-1]) / tau
    S[t] = 1 if H[t] >= theta else 0
    V[t] = H[t] * (1 - S[t])                 (hard reset to 0)

with V[0] = 0. Training uses the triangle surrogate of :mod:`snnconv.neurons.surrogate` for dS/dH, with the
width ``width * theta``, and no gradient through the reset (SpikingJelly's ``detach_reset``, used by Spikformer). The module runs a whole [T, ...] sequence and, when given a time mask (DTS),
multiplies its output at step t by TM[t].
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .surrogate import triangle_spike


def lif_step(current: torch.Tensor, v: torch.Tensor, tau: float, threshold: float,
             width: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One LIF step: (spikes in {0, 1}, new membrane potential), differentiable through the surrogate."""
    h = v + (current - v) / tau
    spikes = triangle_spike((h - threshold) / (width * threshold))
    # the reset's path is left out of the gradient (SpikingJelly's detach_reset, as Spikformer trains)
    return spikes, h * (1.0 - spikes.detach())


class MultiStepLIF(nn.Module):
    """LIF over a [T, ...] input; ``mask`` (a callable returning TM [T_max]) gates the output per step."""

    def __init__(self, tau: float = 2.0, threshold: float = 1.0, width: float = 1.0):
        super().__init__()
        self.tau, self.threshold, self.width = float(tau), float(threshold), float(width)
        self.mask: Callable[[], torch.Tensor] | None = None  # DTS training: soft mask TM [T_max]
        self.active_steps: int | None = None  # DTS inference: run the first T_l steps, silent after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[0]
        run = steps if self.active_steps is None else min(self.active_steps, steps)
        v = torch.zeros_like(x[0])
        out = []
        for t in range(run):  # a masked layer's neuron does not run after T_l
            spikes, v = lif_step(x[t], v, self.tau, self.threshold, self.width)
            out.append(spikes)
        out += [torch.zeros_like(x[0])] * (steps - run)
        spikes = torch.stack(out)
        if self.mask is not None:
            spikes = spikes * self.mask()[:x.shape[0]].view(-1, *([1] * (x.dim() - 1)))
        return spikes

    def extra_repr(self) -> str:
        return f"tau={self.tau}, threshold={self.threshold}, active_steps={self.active_steps}"
