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

Signed spikes (an option, ``ConvertConfig.signed_spikes``): a neuron that has fired n > 0 spikes net may
also emit a negative spike, -theta, when its membrane falls below 0 (half a threshold under its theta/2
start), and then V <- V + theta, n <- n - 1. Its net count after t steps then tracks the charge
it has received so far, floor((v_init + sum of inputs) / theta) clamped to [0, t] whenever one spike per
step suffices, instead of keeping spikes that early inputs caused and later inputs cancelled (the
"unevenness" error of deep rate-coded networks; Wang et al. 2022 call this neuron a signed neuron with
memory). The readout and the synapses receive +-theta; spike counts and synaptic operations count both signs.

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


def if_step_(current: torch.Tensor, v: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor,
             compare: torch.Tensor | None = None) -> None:
    """The same step as :func:`if_step`, in place for the time engine's inner loop.

    Updates ``v`` and writes the layer's output theta * s into ``out``: four passes over memory
    instead of six, and no temporaries. ``compare``, when given, is the value ``v`` is tested against
    instead of ``threshold`` (the reset still subtracts ``threshold``): a membrane kept shifted by a
    known amount is tested against an equally shifted threshold.
    """
    v.add_(current)
    _fire_(v, threshold, out, compare)


def signed_if_step_(current: torch.Tensor, v: torch.Tensor, threshold: torch.Tensor, net: torch.Tensor,
                    out: torch.Tensor, compare: torch.Tensor | None = None) -> None:
    """One in-place step of the signed IF neuron (module docstring): updates ``v`` and the net spike count
    ``net`` (float, the shape of ``v``) and writes theta * s, s in {-1, 0, 1}, into ``out``.

    ``compare`` as in :func:`if_step_`: the membrane is tested against ``compare`` for a positive spike and
    against ``compare - threshold`` for a negative one."""
    v.add_(current)
    upper = threshold if compare is None else compare
    torch.ge(v, upper, out=out)
    out.sub_(((v < upper - threshold) & (net > 0)).to(out.dtype))
    net.add_(out)
    out.mul_(threshold)
    v.sub_(out)


def if_step_timed_(current: torch.Tensor, v: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor,
                   fraction: torch.Tensor, reading: str = "interpolate") -> None:
    """:func:`if_step_` that also writes each neuron's :func:`crossing_fraction` into ``fraction``.

    The spikes and the membrane are exactly those of :func:`if_step_`: the fraction is read between the
    integration and the threshold test.
    """
    v.add_(current)
    fraction.copy_(crossing_fraction(current, v, threshold, reading))
    _fire_(v, threshold, out)


def _fire_(v: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor, compare: torch.Tensor | None = None) -> None:
    # comparing straight into a float buffer is ~4x faster than via bool on CPU
    torch.ge(v, threshold if compare is None else compare, out=out)
    out.mul_(threshold)
    v.sub_(out)


CROSSING_READINGS = ("interpolate", "vfire")


def crossing_fraction(current: torch.Tensor, v_fire: torch.Tensor, threshold: torch.Tensor,
                      reading: str = "interpolate") -> torch.Tensor:
    """Fraction f in [0, 1] of the step at which the membrane crossed threshold: a spike emitted at step x
    has the sub-step time x + f (the TEAS slides' x_T; docs/teas.md, "5. Execute").

    ``v_fire`` is the membrane after integrating the step's ``current`` I, before the reset (V_fire >= theta
    where the neuron fires). Readings:

    - ``interpolate``: the step's charge arrives uniformly, so the membrane rises linearly from
      V_before = V_fire - I to V_fire and crosses theta at f = (theta - V_before) / I = 1 - (V_fire - theta) / I.
      These are the firing times of a continuous-time IF neuron fed the same current. A neuron that was
      already at or above theta when the step began (an IF neuron fires once per step, so a strong input
      leaves a backlog), or whose input was not positive, gets f = 0.
    - ``vfire``: the slides' x_T = x + Vth / Vfire read literally, f = theta / V_fire (= ``interpolate``
      when the step starts from V_before = 0).

    Where the neuron does not fire, f is meaningless (it moves no charge).
    """
    if reading == "vfire":
        return (threshold / v_fire.clamp_min(torch.finfo(v_fire.dtype).tiny)).clamp_(0.0, 1.0)
    if reading != "interpolate":
        raise ValueError(f"crossing reading must be one of {', '.join(CROSSING_READINGS)}, got '{reading}'.")
    rising = current > 0
    fraction = 1.0 - (v_fire - threshold) / torch.where(rising, current, torch.ones_like(current))
    return torch.where(rising, fraction.clamp_(0.0, 1.0), torch.zeros_like(fraction))


class IFNeuron(nn.Module):
    """Parameters of one IF layer; the time engine owns the membrane state and calls :func:`if_step`.

    ``threshold`` has shape [] (layer-wise) or [C] (channel-wise, channel = dim 1 of the activation).
    ``bias`` is a per-channel current added every step ([] or [C]); ``v_offset`` is added to the
    initial potential (shape [] or the activation's per-sample shape), as set by calibration.
    """

    def __init__(self, threshold: torch.Tensor, half_init: bool = True, signed: bool = False):
        super().__init__()
        threshold = torch.as_tensor(threshold, dtype=torch.float32).detach().clone()
        self.register_buffer("threshold", threshold)
        self.register_buffer("bias", torch.zeros_like(threshold))
        self.register_buffer("v_offset", torch.zeros(()))
        self.half_init = bool(half_init)
        self.signed = bool(signed)

    @property
    def kind(self) -> str:
        return "signed_if" if self.signed else "if"

    def config(self) -> dict:
        return {"half_init": self.half_init, "signed": self.signed,
                "channels": int(self.threshold.numel()) if self.threshold.dim() else 0}

    @classmethod
    def from_config(cls, config: dict) -> "IFNeuron":
        channels = int(config["channels"])
        shape = (channels,) if channels else ()
        return cls(torch.ones(shape), half_init=bool(config["half_init"]), signed=bool(config.get("signed", False)))

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
        return f"{mode} threshold, half_init={self.half_init}" + (", signed spikes" if self.signed else "")
