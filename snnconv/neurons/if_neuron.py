"""Integrate-and-fire neuron with reset by subtraction (the rate-coding neuron of ANN-to-SNN conversion).

Per time step t, for a layer with threshold theta (per layer or per channel), input current I[t] and
a constant bias current b (zero unless calibration set one):

    V[t]   = V[t-1] + I[t] + b
    s[t]   = 1 if V[t] >= theta else 0
    V[t]  <- V[t] - theta * s[t]            (reset by subtraction keeps the residue)
    out[t] = theta * s[t]                   (what the next layer receives)

with V[0] = v_init, by default theta / 2 (Bu et al. 2022, QCFS; Li et al. 2021 call the same
shift "enable_shift"). Fed a constant z >= 0 for T steps from V[0] = theta/2 the neuron fires exactly
floor(clamp(z*T/theta + 1/2, 0, T)) times, so its rate rounds z/theta to the nearest 1/T instead of
flooring it.

The dynamics are a pure function; the module only binds parameters (threshold, bias, v_init).
"""
from __future__ import annotations

import torch
from torch import nn


def if_step(current: torch.Tensor, v: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One IF step. Returns (spikes in {0, 1}, new membrane potential); both have the shape of ``v``."""
    v = v + current
    spikes = (v >= threshold).to(v.dtype)
    return spikes, v - spikes * threshold


def if_step_(current: torch.Tensor, v: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor) -> None:
    """The same step as :func:`if_step`, in place for the time engine's inner loop.

    Updates ``v`` and writes the layer's output theta * s into ``out``: four passes over memory
    instead of six, and no temporaries.
    """
    v.add_(current)
    torch.ge(v, threshold, out=out)  # comparing straight into a float buffer is ~4x faster than via bool on CPU
    out.mul_(threshold)
    v.sub_(out)


class IFNeuron(nn.Module):
    """Parameters of one IF layer; the time engine owns the membrane state and calls :func:`if_step`.

    ``threshold`` has shape [] (layer-wise) or [C] (channel-wise, channel = dim 1 of the activation).
    ``bias`` is a per-channel current added every step ([] or [C]); ``v_offset`` is added to the
    initial potential (shape [] or the activation's per-sample shape), as set by calibration.
    """

    kind = "if"

    def __init__(self, threshold: torch.Tensor, half_init: bool = True):
        super().__init__()
        threshold = torch.as_tensor(threshold, dtype=torch.float32).detach().clone()
        self.register_buffer("threshold", threshold)
        self.register_buffer("bias", torch.zeros_like(threshold))
        self.register_buffer("v_offset", torch.zeros(()))
        self.half_init = bool(half_init)

    def config(self) -> dict:
        return {"half_init": self.half_init, "channels": int(self.threshold.numel()) if self.threshold.dim() else 0}

    @classmethod
    def from_config(cls, config: dict) -> "IFNeuron":
        channels = int(config["channels"])
        shape = (channels,) if channels else ()
        return cls(torch.ones(shape), half_init=bool(config["half_init"]))

    def broadcast(self, value: torch.Tensor, ndim: int) -> torch.Tensor:
        """Shape a per-channel parameter to broadcast against a [N, C, ...] activation of rank ``ndim``."""
        if value.dim() == 1:
            return value.view(1, -1, *([1] * (ndim - 2)))
        return value

    def initial_potential(self, per_sample_shape: torch.Size, batch: int) -> torch.Tensor:
        ndim = len(per_sample_shape) + 1
        theta = self.broadcast(self.threshold, ndim)
        v0 = (0.5 * theta if self.half_init else torch.zeros_like(theta)) + self.v_offset
        return v0.expand(batch, *per_sample_shape).clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ANN semantics (used before the engine takes over): the ReLU this neuron replaces."""
        return torch.relu(x)

    def extra_repr(self) -> str:
        mode = "channel-wise" if self.threshold.dim() else "layer-wise"
        return f"{mode} threshold, half_init={self.half_init}"
