"""A directly trained spiking transformer with what an artifact records about it (family ``spikformer``).

Converted networks are :class:`~snnconv.network.SpikingNetwork`; a Spikformer is trained as a spiking network
from the start (attention does not convert from ReLU to IF), so it has no source ANN and no conversion record.
It is saved and loaded by :mod:`snnconv.artifacts`, evaluated by :mod:`snnconv.engine.direct`, and DTS masks
freeze into its LIF layers' ``active_steps``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .spikformer import Spikformer

FAMILY = "spikformer"


@dataclass
class DirectNetwork:
    model: Spikformer
    time_steps: int  # T it was trained for (T_max under DTS masks); evaluate runs it by default
    input_shape: tuple[int, ...]  # per sample, e.g. (1, 28, 28)
    num_classes: int
    source: dict  # {"source": how it was made, "family": "spikformer"}
    input_normalization: dict = field(default_factory=dict)  # {"mean": [...] | None, "std": [...] | None}
    training: dict = field(default_factory=dict)  # resolved training configuration and epoch losses
    time_mask_parameters: dict[str, list[float]] = field(default_factory=dict)  # DTS: TP of every LIF layer

    @property
    def coverage(self) -> list:
        """Conversion coverage rows: none, nothing was converted."""
        return []

    @property
    def layer_steps(self) -> dict[str, int]:
        """T_l of every LIF layer: its DTS prefix, or the whole T."""
        return {name: (lif.active_steps if lif.active_steps is not None else self.time_steps)
                for name, (lif, _group) in self.model.lif_layers().items()}

    def set_layer_steps(self, steps: dict[str, int]) -> None:
        """Freeze DTS prefixes: each named LIF layer runs its first T_l steps and is silent after."""
        layers = self.model.lif_layers()
        unknown = sorted(set(steps) - set(layers))
        if unknown:
            raise KeyError(f"no LIF layer named {', '.join(unknown)}")
        for name, (lif, _group) in layers.items():
            lif.active_steps = int(steps[name]) if name in steps and steps[name] < self.time_steps else None

    def to(self, device: torch.device | str) -> "DirectNetwork":
        self.model.to(device)
        return self
