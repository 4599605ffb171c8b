"""Direct surrogate-gradient training of a spiking transformer (:mod:`snnconv.spikformer`), with optional DTS masks.

The loss is CE on the output averaged over the T steps, or with ``tet`` the TET loss as SEENN's code writes it,
``(1 - lambda) (1/T) sum_t CE(f_t, y) + lambda MSE(f, 1)`` (ALGORITHMS.md section 4). With ``masks``, every
LIF layer gets a :class:`~snnconv.neurons.time_mask.TimeMask` of length T (docs/dts.md) and the mask loss
``mask_weight * sum over the LIF layers of the chosen groups of sum_t TM[t]`` (paper Eq. 8) is added. The
paper's best groups (Table IV) are qkv and mlp, the default. Training runs through the shared loop.

After training, :func:`freeze_masks` turns each mask into the layer's T_l: the LIF then runs only its first T_l
steps and emits zeros after.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import _Plain
from ..data import LabeledData
from ..errors import ConfigError
from ..neurons.time_mask import TimeMask
from ..spikformer import GROUPS, Spikformer
from ..training import TrainConfig, TrainLog, fit

MASK_PREFIX = "masks."


def _direct_defaults() -> TrainConfig:
    return TrainConfig(epochs=3, batch_size=64, lr=1e-3, optimizer="adam", momentum=0.0, weight_decay=0.0)


@dataclass(frozen=True)
class DirectConfig(_Plain):
    time_steps: int = 4  # T (T_max when masks are on)
    tet: bool = False
    tet_weight: float = 1e-3  # lambda of TET's MSE term
    masks: bool = False
    mask_weight: float = 0.0  # lambda_m
    groups: tuple[str, ...] = ("qkv", "mlp")  # groups the mask loss penalizes
    mask_lr: float = 0.01
    initial_steps: int | None = None
    train: TrainConfig = field(default_factory=_direct_defaults)

    def __post_init__(self):
        if self.time_steps <= 0:
            raise ConfigError(f"Time steps T must be positive, got {self.time_steps}.")
        if not 0 <= self.tet_weight <= 1:
            raise ConfigError(f"TET weight must be in [0, 1], got {self.tet_weight}.")
        if not self.mask_weight >= 0:
            raise ConfigError(f"--mask-weight must be >= 0, got {self.mask_weight}.")
        object.__setattr__(self, "groups", tuple(self.groups))
        unknown = sorted(set(self.groups) - set(GROUPS))
        if unknown:
            raise ConfigError(f"Unknown mask-loss group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}.")
        if not self.mask_lr > 0:
            raise ConfigError(f"--mask-lr must be positive, got {self.mask_lr}.")
        if self.initial_steps is not None and not 0 <= self.initial_steps <= self.time_steps:
            raise ConfigError(f"--initial-steps must be within 0..{self.time_steps}, got {self.initial_steps}.")


class TrainableSpikformer(nn.Module):
    """The model plus its time masks (one per LIF layer, keyed by the layer name with '/' for '.')."""

    def __init__(self, model: Spikformer, time_steps: int, masks: bool, initial_steps: int | None = None):
        super().__init__()
        self.model, self.time_steps = model, time_steps
        self.masks = nn.ModuleDict()
        if masks:
            for name, (lif, _group) in model.lif_layers().items():
                mask = TimeMask(time_steps, initial_steps)
                self.masks[name.replace(".", "/")] = mask
                lif.mask = mask.__call__  # a callable, so the mask is not registered twice as a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.time_steps)

    def mask_steps(self, groups: tuple[str, ...]) -> list[torch.Tensor]:
        """TM of every masked LIF layer in ``groups``."""
        layers = self.model.lif_layers()
        return [mask() for key, mask in self.masks.items() if layers[key.replace("/", ".")][1] in groups]


def direct_loss(outputs: torch.Tensor, y: torch.Tensor, tet: bool, tet_weight: float) -> torch.Tensor:
    """CE of the step-averaged output, or TET over the per-step outputs [T, B, classes]."""
    if not tet:
        return F.cross_entropy(outputs.mean(0), y)
    per_step = torch.stack([F.cross_entropy(step, y) for step in outputs]).mean()
    return (1 - tet_weight) * per_step + tet_weight * F.mse_loss(outputs, torch.ones_like(outputs))


def train_direct(model: Spikformer, data: LabeledData, config: DirectConfig = DirectConfig(), *,
                 checkpoint: Path | None = None, resume: bool = False, progress=None) -> tuple[TrainableSpikformer, TrainLog]:
    """Train ``model`` (and its masks) in place; returns the wrapper holding the masks and the training log."""
    trainable = TrainableSpikformer(model, config.time_steps, config.masks, config.initial_steps)

    def loss(module: TrainableSpikformer, batch):
        x, y = batch
        value = direct_loss(module(x), y, config.tet, config.tet_weight)
        if config.masks and config.mask_weight > 0:
            value = value + config.mask_weight * sum(tm.sum() for tm in module.mask_steps(config.groups))
        return value

    torch.manual_seed(config.train.seed)
    log = fit(trainable, [data.x, data.y], loss, config.train, checkpoint=checkpoint, resume=resume,
              progress=progress, description=f"Training the spiking transformer (T={config.time_steps})",
              lr_scales={MASK_PREFIX: config.mask_lr / config.train.lr} if config.masks else None)
    model.eval()
    return trainable, log


def freeze_masks(trainable: TrainableSpikformer) -> dict[str, int]:
    """Replace every mask by its T_l: the LIF layer runs its first T_l steps and is silent after."""
    steps = {}
    layers = trainable.model.lif_layers()
    for key, mask in trainable.masks.items():
        name = key.replace("/", ".")
        lif = layers[name][0]
        lif.mask = None
        lif.active_steps = steps[name] = mask.steps()
    return steps


@dataclass
class DirectEvaluation:
    accuracy_pct: float  # top-1 of the output averaged over T steps
    accuracy_per_step_pct: list[float]  # read out after steps 1..t
    average_steps: float  # mean over LIF layers of the steps each ran (T_l, or T)
    layer_steps: dict[str, int]
    spikes_per_sample: float
    spiking_activity: float  # spikes / (LIF neurons x T): the paper's SA, as a fraction


def evaluate_direct(model: Spikformer, data: LabeledData, time_steps: int, batch_size: int = 256) -> DirectEvaluation:
    """Accuracy after every step, spikes and average T of a trained spiking transformer."""
    model.eval()
    layers = model.lif_layers()
    spikes = {name: 0.0 for name in layers}
    neurons = {name: 0 for name in layers}
    hooks = []
    for name, (lif, _group) in layers.items():
        def count(_module, _inputs, output, name=name):
            spikes[name] += float(output.sum())
            neurons[name] = output[0, 0].numel()
        hooks.append(lif.register_forward_hook(count))
    correct = torch.zeros(time_steps, dtype=torch.float64)
    try:
        with torch.no_grad():
            for x, y in data.batches(batch_size):
                running = model(x, time_steps).cumsum(0)
                correct += (running.argmax(-1) == y.unsqueeze(0)).sum(1).double()
    finally:
        for hook in hooks:
            hook.remove()
    n = len(data)
    layer_steps = {name: (lif.active_steps if lif.active_steps is not None else time_steps)
                   for name, (lif, _g) in layers.items()}
    total = sum(spikes.values())
    capacity = sum(neurons.values()) * time_steps
    return DirectEvaluation(
        accuracy_pct=100.0 * float(correct[-1]) / n, accuracy_per_step_pct=(100.0 * correct / n).tolist(),
        average_steps=sum(layer_steps.values()) / len(layer_steps), layer_steps=layer_steps,
        spikes_per_sample=total / n, spiking_activity=total / (capacity * n) if capacity else float("nan"))
