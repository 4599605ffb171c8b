"""Surrogate gradients for training through integrate-and-fire neurons (backpropagation through time).

The spike is a step function of the membrane potential, whose derivative is zero almost everywhere. For
training, the forward pass keeps the exact step, and the backward pass uses the triangle surrogate
``max(0, 1 - |u|) / width`` of ``u = (V - theta) / (width * theta)``. The surrogate is non-zero within
``width`` thresholds of the firing point. So the trained network spikes exactly as the time engine does,
and only the gradients are approximate.
"""
from __future__ import annotations

import torch


class _TriangleSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(u)
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (u,) = ctx.saved_tensors
        return grad * (1.0 - u.abs()).clamp_(min=0.0)


def triangle_spike(u: torch.Tensor) -> torch.Tensor:
    """1[u >= 0] forward, ``max(0, 1 - |u|)`` backward; u is the membrane's distance to threshold in widths."""
    return _TriangleSpike.apply(u)


def _scale(threshold: torch.Tensor, width: float) -> torch.Tensor:
    # a zero threshold (a channel that never fired in calibration) would divide by zero; its output is 0 anyway
    return width * threshold.clamp_min(1e-12)


def _fire(v: torch.Tensor, threshold: torch.Tensor, width: float) -> torch.Tensor:
    """1[V >= theta] forward, the triangle around theta backward."""
    return triangle_spike((v - threshold) / _scale(threshold, width))


def if_step_surrogate(current: torch.Tensor, v: torch.Tensor, threshold: torch.Tensor,
                      width: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One differentiable IF step: (output theta * s, new potential); spikes identical to :func:`if_step`."""
    v = v + current
    out = _fire(v, threshold, width) * threshold
    return out, v - out


def signed_if_step_surrogate(current: torch.Tensor, v: torch.Tensor, threshold: torch.Tensor, net: torch.Tensor,
                             width: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One differentiable signed IF step: (output theta * s, new potential, new net count); s in {-1, 0, 1}
    exactly as :func:`snnconv.neurons.signed_if_step_`. The retraction fires below 0 and gets the same
    triangle surrogate around 0, so the output's derivative is positive near either boundary; the net count
    only gates the retraction and carries no gradient."""
    v = v + current
    retract = (1.0 - triangle_spike(v / _scale(threshold, width))) * (net > 0).to(v.dtype)  # 1[V < 0], n > 0
    spikes = _fire(v, threshold, width) - retract
    out = spikes * threshold
    return out, v - out, net + spikes.detach()
