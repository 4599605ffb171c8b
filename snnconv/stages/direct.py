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

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import _Plain
from ..data import LabeledData
from ..errors import ConfigError
from ..neurons.time_mask import TimeMask
from .dts import LayerSensitivity, StepValueSampler, compare_step_histograms
from ..spikformer import GROUPS, Spikformer
from ..training import ParamGroup, TrainConfig, TrainLog, fit
from ..training.loop import OPTIMIZERS

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
    # the LIF layers the mask loss penalizes: fnmatch patterns over group names (sps, qkv, attn, mlp) or layer names
    groups: tuple[str, ...] = ("qkv", "mlp")
    mask_lr: float = 0.01
    mask_optimizer: str = "sgd"  # the masks' own optimizer (momentum 0.9), whatever trains the weights
    initial_steps: int | None = None
    train: TrainConfig = field(default_factory=_direct_defaults)

    def __post_init__(self):
        if self.time_steps <= 0:
            raise ConfigError(f"Time steps T must be positive, got {self.time_steps}.")
        if not 0 <= self.tet_weight <= 1:
            raise ConfigError(f"TET weight must be in [0, 1], got {self.tet_weight}.")
        if not self.mask_weight >= 0:
            raise ConfigError(f"--mask-weight must be >= 0, got {self.mask_weight}.")
        if isinstance(self.groups, str) or not all(isinstance(g, str) and g for g in self.groups):
            raise ConfigError(f"--groups takes group names ({', '.join(GROUPS)}) or layer-name patterns, "
                              f"got {self.groups!r}.")
        object.__setattr__(self, "groups", tuple(self.groups))
        if self.mask_optimizer not in OPTIMIZERS:
            raise ConfigError(f"Mask optimizer '{self.mask_optimizer}' is unknown; choose from {', '.join(OPTIMIZERS)}.")
        if not self.mask_lr > 0:
            raise ConfigError(f"--mask-lr must be positive, got {self.mask_lr}.")
        if self.initial_steps is not None and not 1 <= self.initial_steps <= self.time_steps:
            raise ConfigError(f"--initial-steps must be within 1..{self.time_steps}, got {self.initial_steps}.")


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

    def mask_steps(self, layers: list[str]) -> list[torch.Tensor]:
        """TM of the named LIF layers."""
        return [self.masks[name.replace(".", "/")]() for name in layers]


def penalized_lif_layers(model: Spikformer, patterns: tuple[str, ...]) -> list[str]:
    """LIF layers whose group or name matches a pattern, in model order; a pattern matching nothing is an error."""
    layers = {name: group for name, (_lif, group) in model.lif_layers().items()}

    def hit(name: str, pattern: str) -> bool:
        return fnmatch.fnmatchcase(layers[name], pattern) or fnmatch.fnmatchcase(name, pattern)

    for pattern in patterns:
        if not any(hit(name, pattern) for name in layers):
            raise ConfigError(f"--groups pattern '{pattern}' matches no LIF layer or group; the groups are "
                              f"{', '.join(GROUPS)}.")
    return [name for name in layers if any(hit(name, p) for p in patterns)]


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
    penalized = penalized_lif_layers(model, config.groups) if config.masks and config.mask_weight > 0 else []

    def loss(module: TrainableSpikformer, batch):
        x, y = batch
        value = direct_loss(module(x), y, config.tet, config.tet_weight)
        if penalized:
            value = value + config.mask_weight * sum(tm.sum() for tm in module.mask_steps(penalized))
        return value

    torch.manual_seed(config.train.seed)
    log = fit(trainable, [data.x, data.y], loss, config.train, checkpoint=checkpoint, resume=resume,
              progress=progress, description=f"Training the spiking transformer (T={config.time_steps})",
              param_groups=(ParamGroup(MASK_PREFIX, config.mask_lr, config.mask_optimizer),) if config.masks else (),
              fingerprint={**config.to_dict(), "train": None})
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


def lif_input_sensitivity(model: Spikformer, data: LabeledData, time_steps: int, *, samples: int = 64,
                          bins: int = 64) -> list[LayerSensitivity]:
    """The paper's Section III-B analysis on a spiking transformer: per LIF layer, the cosine similarity of the
    histograms of its input at step 1 and at steps 2..T (one batch of ``samples`` images, no masks)."""
    layers = model.lif_layers()
    sampler = StepValueSampler()
    hooks = [lif.register_forward_pre_hook(lambda _m, inputs, name=name: sampler(name, 0, inputs[0]))
             for name, (lif, _group) in layers.items()]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(data.x[:samples].to(next(model.parameters()).device), time_steps)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return compare_step_histograms(list(layers), sampler.first, sampler.later, bins)


def mask_parameters(trainable: TrainableSpikformer) -> dict[str, list[float]]:
    """TP of every LIF layer's mask, by layer name (what an artifact keeps beside the frozen T_l)."""
    return {key.replace("/", "."): mask.tp().detach().cpu().tolist() for key, mask in trainable.masks.items()}
