"""Learned time-step masks of dynamic time steps (DTS; Datta, Liu, Li, Beerel, arXiv 2311.16456, Section III-A).

A masked neuron layer l has a trainable vector TP_l >= 0 of length T_max. Its score is the paper's
``TS_l = TP_l . coeff`` (Eq. 4) with coeff the all-ones lower-triangular T_max x T_max matrix and TP_l a row
vector, which makes each score a suffix sum::

    TS[t] = sum_{j >= t} TP[j]        (non-increasing in t because TP >= 0)
    TM[t] = 1 if TS[t] >= 1 else 0     (Eq. 5)
    dTM/dTS = 1 if 0 < TS < 2 else 0   (Eq. 6, the surrogate used in the backward pass)

A non-increasing score crosses 1 at most once, so the mask always keeps a prefix of steps: the layer runs
its first T_l = sum_t TM[t] steps and is silent after (docs/dts.md explains every choice made here).
"""
from __future__ import annotations

import torch
from torch import nn


class _MaskStep(torch.autograd.Function):
    """Heaviside at 1 forward; the paper's box surrogate (1 on 0 < TS < 2) backward."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scores)
        return (scores >= 1).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (scores,) = ctx.saved_tensors
        return grad * ((scores > 0) & (scores < 2)).to(grad.dtype)


class _ProjectNonNegative(torch.autograd.Function):
    """max(raw, 0) forward; backward passes the gradient except where it would push a zero entry lower.

    This keeps TP >= 0 (the prefix property needs it) without a step after the optimizer, and unlike a plain
    clamp an entry that reached 0 can still grow again when the loss asks for it.
    """

    @staticmethod
    def forward(ctx, raw: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(raw)
        return raw.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (raw,) = ctx.saved_tensors
        blocked = (raw <= 0) & (grad > 0)  # descent would move raw further below zero
        return grad.masked_fill(blocked, 0.0)


def coefficient_matrix(steps: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The paper's all-ones lower-triangular ``coeff`` (Eq. 4)."""
    return torch.ones(steps, steps, dtype=dtype, device=device).tril()


def mask_scores(tp: torch.Tensor) -> torch.Tensor:
    """TS = TP . coeff for a row vector TP: TS[t] = sum_{j >= t} TP[j]."""
    return tp @ coefficient_matrix(tp.shape[-1], tp.dtype, tp.device)


def binary_mask(scores: torch.Tensor) -> torch.Tensor:
    """TM[t] = 1[TS[t] >= 1], differentiable through the surrogate of Eq. 6."""
    return _MaskStep.apply(scores)


def initial_parameters(max_steps: int, initial_steps: int) -> torch.Tensor:
    """TP whose scores fall linearly by 1/T_max per step and cross 1 between steps k-1 and k (k = ``initial_steps``).

    TS[t] = 1 + (k - t - 0.5) / T_max lies in (0, 2) for every t, so every step starts inside the surrogate's
    support and can be switched on or off; with k = T_max all steps start on. Equal spacing means the steps
    are dropped one at a time, last step first, as the scores fall.
    """
    if not 0 <= initial_steps <= max_steps:
        raise ValueError(f"initial steps {initial_steps} outside 0..{max_steps}")
    t = torch.arange(max_steps, dtype=torch.float32)
    scores = 1 + (initial_steps - t - 0.5) / max_steps
    return scores - torch.cat([scores[1:], scores.new_zeros(1)])  # TP[j] = TS[j] - TS[j + 1]


class TimeMask(nn.Module):
    """The DTSS mask of one neuron layer: ``forward()`` returns TM [T_max], binary, with surrogate gradients."""

    def __init__(self, max_steps: int, initial_steps: int | None = None, tp: torch.Tensor | None = None):
        super().__init__()
        if tp is None:
            tp = initial_parameters(max_steps, max_steps if initial_steps is None else initial_steps)
        if tuple(tp.shape) != (max_steps,):
            raise ValueError(f"time-mask parameters have shape {tuple(tp.shape)}, expected ({max_steps},)")
        self.raw = nn.Parameter(tp.detach().clone().float())

    @property
    def max_steps(self) -> int:
        return self.raw.shape[0]

    def tp(self) -> torch.Tensor:
        """TP >= 0 (the raw parameter projected)."""
        return _ProjectNonNegative.apply(self.raw)

    def scores(self) -> torch.Tensor:
        return mask_scores(self.tp())

    def forward(self) -> torch.Tensor:
        return binary_mask(self.scores())

    def steps(self) -> int:
        """T_l: the number of steps the mask keeps (always its first T_l)."""
        with torch.no_grad():
            return int(self.forward().sum())
