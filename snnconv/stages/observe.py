"""Observe: one pass of the ANN over calibration data, collecting what balancing needs.

For every ReLU (future neuron layer) the pass keeps the exact maximum, per channel, and a histogram of
the positive activations per channel on a shared, growing range. Memory is O(channels x bins) per
layer whatever the number of calibration samples; activations are never stored. When a batch exceeds
the current range, the range doubles and pairs of bins merge, so counts stay exact at the coarser
resolution. Percentiles and the MSE-optimal threshold are read from the histograms.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.fx
from torch import nn

DEFAULT_BINS = 2048


@dataclass
class LayerHistogram:
    """Positive activations of one layer, per channel, on bins of [0, upper)."""

    channels: int
    bins: int = DEFAULT_BINS
    upper: float = 0.0  # the range covered by the bins; 0 until the first positive value
    counts: torch.Tensor | None = None  # [channels, bins] float64
    channel_max: torch.Tensor | None = None  # [channels]
    zeros: int = 0  # activations exactly 0 (not in the histogram)
    total: int = 0  # all activations seen

    def update(self, activation: torch.Tensor) -> None:
        """``activation``: [N, C, ...] or [N, C] post-ReLU values."""
        values = activation.detach().transpose(0, 1).reshape(self.channels, -1).float()
        if self.counts is None:
            self.counts = torch.zeros(self.channels, self.bins, dtype=torch.float64, device=values.device)
            self.channel_max = torch.zeros(self.channels, dtype=torch.float64, device=values.device)
        per_channel = values.shape[1]
        self.total += values.numel()
        batch_max = values.max(dim=1).values.double()
        self.channel_max = torch.maximum(self.channel_max, batch_max)
        top = float(batch_max.max())
        if top <= 0:
            self.zeros += values.numel()
            return
        if self.upper == 0.0:
            self.upper = top * (1 + 1e-6)
        while top >= self.upper:
            self.counts = torch.cat([self.counts.view(self.channels, self.bins // 2, 2).sum(-1),
                                     torch.zeros_like(self.counts[:, : self.bins // 2])], dim=1)
            self.upper *= 2
        # Zeros land in bin 0 with the smallest positives; count them apart (float compare: fast on CPU)
        positive = torch.empty_like(values)
        torch.gt(values, 0, out=positive)
        zeros = per_channel - positive.sum(1).double()
        self.zeros += int(zeros.sum())
        index = (values * (self.bins / self.upper)).long().clamp_(0, self.bins - 1)
        index += torch.arange(self.channels, device=values.device).unsqueeze(1) * self.bins
        counts = torch.bincount(index.reshape(-1), minlength=self.channels * self.bins).view(self.channels, self.bins)
        self.counts += counts
        self.counts[:, 0] -= zeros

    @property
    def bin_centers(self) -> torch.Tensor:
        width = self.upper / self.bins
        return (torch.arange(self.bins, dtype=torch.float64) + 0.5) * width

    def merged(self) -> tuple[torch.Tensor, float]:
        """Layer-wise histogram [bins] and maximum."""
        if self.counts is None:
            return torch.zeros(self.bins, dtype=torch.float64), 0.0
        return self.counts.sum(0).cpu(), float(self.channel_max.max())


@dataclass
class ActivationStatistics:
    """Per neuron layer (keyed by the ReLU node's name): histograms of its activations."""

    layers: dict[str, LayerHistogram] = field(default_factory=dict)
    samples: int = 0

    def layer_max(self, name: str) -> float:
        return self.layers[name].merged()[1]


def layer_nodes(gm: torch.fx.GraphModule, module_type: type = nn.ReLU) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), module_type)]


def collect_statistics(gm: torch.fx.GraphModule, batches: Iterable[torch.Tensor], *, bins: int = DEFAULT_BINS,
                       progress: Callable[[int], None] | None = None,
                       module_type: type = nn.ReLU) -> ActivationStatistics:
    """Run the (normalized) ANN over ``batches`` once and histogram the output of every ``module_type`` layer:
    the ReLUs before conversion; after it, ``IFNeuron`` (a converted graph called directly computes the ANN)."""
    stats = ActivationStatistics()
    handles = []
    for node in layer_nodes(gm, module_type):
        module = gm.get_submodule(node.target)

        def hook(_module, _inputs, output, name=node.name):
            if name not in stats.layers:
                stats.layers[name] = LayerHistogram(channels=output.shape[1], bins=bins)
            stats.layers[name].update(output)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for x in batches:
                gm(x)
                stats.samples += x.shape[0]
                if progress is not None:
                    progress(x.shape[0])
    finally:
        for handle in handles:
            handle.remove()
    return stats
