"""Balance: a firing threshold per neuron layer (or per channel) from activation statistics.

Setting theta_l to a robust maximum lambda_l of layer l's ANN activations is equivalent to the weight
normalization of Rueckauer et al. 2017 (W_l <- W_l lambda_{l-1}/lambda_l, theta = 1) but keeps the
weights untouched; every value crossing a residual add stays in activation units, so both branches of
a residual block are balanced consistently by construction.

Methods:
- ``max``:        the largest activation seen on the calibration data.
- ``percentile``: the p-th percentile of the positive activations (Rueckauer et al. 2017; p = 99.99 by default).
- ``mse``:        the threshold minimizing the mean squared error between activations and their T-step
                  spiking quantization, over the grid V_i = max * (1 - 0.01 i), i = 0..94 (Li et al. 2021).
                  With initial potential theta/2 the quantizer rounds, clamp(floor(a T/V + 1/2), 0, T) V/T;
                  without it, it floors.
"""
from __future__ import annotations

import torch

from ..config import BalanceConfig
from .observe import ActivationStatistics, LayerHistogram

MSE_GRID = torch.tensor([1.0 - 0.01 * i for i in range(95)], dtype=torch.float64)


def _percentile(counts: torch.Tensor, upper: float, percentile: float) -> torch.Tensor:
    """Percentile per row of a [rows, bins] histogram with linear interpolation inside the bin."""
    bins = counts.shape[-1]
    total = counts.sum(-1, keepdim=True)
    cumulative = counts.cumsum(-1)
    target = total * (percentile / 100.0)
    index = torch.searchsorted(cumulative, target).clamp(max=bins - 1)
    below = torch.where(index > 0, cumulative.gather(-1, (index - 1).clamp(min=0)), torch.zeros_like(target))
    inside = counts.gather(-1, index).clamp(min=1e-12)
    fraction = ((target - below) / inside).clamp(0, 1)
    return ((index.to(torch.float64) + fraction) * (upper / bins)).squeeze(-1)


def _mse_threshold(counts: torch.Tensor, centers: torch.Tensor, maximum: torch.Tensor, time_steps: int,
                   half_init: bool, rows_per_block: int = 16) -> torch.Tensor:
    """MSE-optimal threshold per row of a [rows, bins] histogram (rows evaluated in blocks to bound memory)."""
    shift = 0.5 if half_init else 0.0
    result = torch.empty(counts.shape[0], dtype=torch.float64)
    values = centers.view(1, 1, -1)
    for start in range(0, counts.shape[0], rows_per_block):
        block = slice(start, start + rows_per_block)
        candidates = (maximum[block].view(-1, 1, 1) * MSE_GRID.view(1, -1, 1)).clamp(min=1e-12)  # [rows, 95, 1]
        quantized = torch.clamp(torch.floor(values * time_steps / candidates + shift), 0, time_steps)
        error = ((values - quantized * candidates / time_steps) ** 2 * counts[block].unsqueeze(1)).sum(-1)
        result[block] = candidates.squeeze(-1).gather(1, error.argmin(1, keepdim=True)).squeeze(1)
    return result


def layer_thresholds(histogram: LayerHistogram, config: BalanceConfig, half_init: bool) -> torch.Tensor:
    """Threshold(s) for one layer: a scalar tensor, or [C] when channel-wise."""
    if histogram.counts is None:
        counts = torch.zeros(1, histogram.bins, dtype=torch.float64)
        maximum = torch.zeros(1, dtype=torch.float64)
    elif config.granularity == "channel":
        counts, maximum = histogram.counts.cpu(), histogram.channel_max.cpu()
    else:
        merged, top = histogram.merged()
        counts, maximum = merged.unsqueeze(0), torch.tensor([top], dtype=torch.float64)
    if config.method == "max":
        thresholds = maximum.clone()
    elif config.method == "percentile":
        thresholds = torch.minimum(_percentile(counts, histogram.upper, config.percentile), maximum)
    else:
        thresholds = _mse_threshold(counts, histogram.bin_centers, maximum, config.time_steps, half_init)
    # a layer (or channel) that never fired in calibration: any positive threshold is as good as another
    fallback = float(maximum.max()) if float(maximum.max()) > 0 else 1.0
    thresholds = torch.where(thresholds > 0, thresholds, torch.full_like(thresholds, fallback)).to(torch.float32)
    return thresholds if config.granularity == "channel" else thresholds.reshape(())


def compute_thresholds(stats: ActivationStatistics, config: BalanceConfig, half_init: bool) -> dict[str, torch.Tensor]:
    return {name: layer_thresholds(histogram, config, half_init) for name, histogram in stats.layers.items()}
