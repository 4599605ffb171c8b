"""Time-to-first-spike (TTFS) coding with an exponential temporal kernel (T2FSNN; Park & Yoon 2021).

Every neuron fires at most once. A layer with kernel (tc, td) and fire window T_w represents a value by
the local time tau of its single spike:

    value(tau)     = exp(-(tau - td) / tc)              (decoding; 0 when there is no spike)
    threshold(tau) = Vth0 * exp(-(tau - td) / tc)       (the dynamic threshold the neuron fires against)

with Vth0 = 1 in threshold units (snnconv keeps weights and scales by the layer's threshold theta, so a
membrane potential z / theta is compared). A membrane that holds a constant z from the start of the fire
window first crosses the falling threshold at

    tau = max(0, ceil(td - tc * ln(z)))                 (encoding; no spike when tau >= T_w or z <= 0)

so dec(enc(z)) is a log-domain quantization of z: z itself at the kernel's grid points, clipped to the
largest value exp(td / tc) (a spike at tau = 0) and zero below the smallest, exp(-(T_w - 1 - td) / tc).

These are pure functions; the TTFS engine (:mod:`snnconv.engine.ttfs`) and the surrogate model that
trains the kernels (:mod:`snnconv.stages.ttfs`) both call them, so they cannot disagree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError

NO_SPIKE = math.inf  # the first-spike time of a neuron that never fires


@dataclass
class TemporalKernel:
    """One layer's exponential kernel: time constant ``tc`` (> 0, steps) and delay ``td`` (steps)."""

    tc: float
    td: float = 0.0

    def __post_init__(self):
        if not self.tc > 0:
            raise ConfigError(f"A temporal kernel needs a positive time constant tc, got {self.tc}.")

    def largest_value(self) -> float:
        """The value of a spike at local time 0: exp(td / tc), in threshold units."""
        return math.exp(self.td / self.tc)

    def smallest_value(self, window: int) -> float:
        """The value of a spike at the window's last step, T_w - 1."""
        return math.exp(-(window - 1 - self.td) / self.tc)


@dataclass
class TTFSCoding:
    """How a network is TTFS-coded: windows and one kernel per neuron layer.

    ``fire_start`` is T_s, the steps between the fire windows of consecutive layers (the integration
    duration); ``window`` is T_w, the length of each fire window. T_s < T_w is early firing: a layer starts
    firing before its inputs have all arrived.
    """

    fire_start: int
    window: int
    kernels: dict[str, TemporalKernel] = field(default_factory=dict)

    def __post_init__(self):
        if self.window <= 0:
            raise ConfigError(f"--window (T_w) must be a positive number of steps, got {self.window}.")
        if not 0 < self.fire_start <= self.window:
            raise ConfigError(f"--fire-start (T_s) must be in 1..T_w={self.window}, got {self.fire_start}.")

    def to_dict(self) -> dict:
        return {"fire_start": self.fire_start, "window": self.window,
                "kernels": {name: {"tc": k.tc, "td": k.td} for name, k in self.kernels.items()}}

    @classmethod
    def from_dict(cls, plain: dict) -> "TTFSCoding":
        return cls(fire_start=int(plain["fire_start"]), window=int(plain["window"]),
                   kernels={name: TemporalKernel(float(k["tc"]), float(k["td"]))
                            for name, k in plain["kernels"].items()})


def decode(spike_time: torch.Tensor, tc, td) -> torch.Tensor:
    """The value each first-spike time represents; 0 where there is no spike (time = inf)."""
    return torch.exp(-(spike_time - td) / tc)  # exp(-inf) = 0


def dynamic_threshold(tau: int, tc: float, td: float) -> float:
    return math.exp(-(tau - td) / tc)


def encode(z: torch.Tensor, tc: float, td: float, window: int) -> torch.Tensor:
    """Closed-form first-spike time of a membrane held at ``z`` (threshold units) for the whole window.

    Computed in float64; ``inf`` where the neuron does not fire within the window.
    """
    z = z.double()
    safe = torch.where(z > 0, z, torch.ones_like(z))
    tau = torch.ceil(td - tc * torch.log(safe)).clamp_min(0)
    return torch.where((z > 0) & (tau < window), tau, torch.full_like(tau, NO_SPIKE))


class _CeilStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.ceil(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def encode_decode(z: torch.Tensor, tc: torch.Tensor, td: torch.Tensor, window: int) -> torch.Tensor:
    """dec(enc(z)) with a straight-through ceil: the activation of the surrogate model (ALGORITHMS 2B).

    ``z`` in threshold units; ``tc`` and ``td`` may be trainable scalars. The forward value is exactly what
    the deployed neuron represents with T_s = T_w; gradients reach z, tc and td through the continuous
    spike time td - tc * ln(z).
    """
    positive = z > 0
    safe = torch.where(positive, z, torch.ones_like(z))
    tau = torch.relu(_CeilStraightThrough.apply(td - tc * torch.log(safe)))
    value = torch.exp((td - tau) / tc)
    fires = positive & (tau < window)
    return torch.where(fires, value, torch.zeros_like(value))
