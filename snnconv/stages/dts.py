"""Dynamic time steps (DTS): learned per-layer time-step masks, trained through the SNN (docs/dts.md).

Source: Datta, Liu, Li, Beerel, "Spiking neural networks with dynamic time steps for vision transformers"
(arXiv 2311.16456), read in ALGORITHMS.md section 3. Every masked neuron layer l gets a
:class:`~snnconv.neurons.time_mask.TimeMask` of length T_max (the network's T). Training runs the SNN
differentiably (surrogate-gradient BPTT through the time engine) with each layer's output at step t
multiplied by its mask TM_l[t], and minimizes (paper Eq. 8)::

    L = CE(F_T / T, y) + lambda_m * sum_{l in penalized groups} sum_t TM_l[t]

through the shared training loop. Afterwards each layer keeps its first T_l = sum_t TM_l[t] steps, and the
engine runs it for those steps only (prefix crossing, no re-timing).

Sensitivity analysis (paper Section III-B): for every neuron layer, the histogram of its input current at
the first step is compared with the histogram over the later steps (cosine similarity). A layer whose later
inputs look like its first ones gains little from more steps; those are suggested for the mask loss.
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
from ..engine import Engine, TimePlan
from ..errors import ConfigError
from ..network import SpikingNetwork
from ..neurons.time_mask import TimeMask
from ..training import ParamGroup, TrainConfig, TrainLog, fit

SENSITIVITY_VALUES_PER_STEP = 16384  # input values per layer and step kept for the histograms
MASK_PREFIX = "masks."  # parameter-name prefix of the masks inside MaskedSNN (their own learning rate)


def _dts_train_defaults() -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=32, lr=1e-3, optimizer="sgd", momentum=0.9, weight_decay=0.0)


@dataclass(frozen=True)
class DtsConfig(_Plain):
    """Options of ``snnconv compress --method dts``.

    ``groups``: fnmatch patterns over neuron-layer names; the layers they match are penalized by the mask
    loss (every layer is masked and can lose steps, only these are pushed to). ``mask_lr`` is the masks'
    learning rate (the weights use ``train.lr``). ``initial_steps``: steps each mask starts with (None: T).
    """

    mask_weight: float = 3e-3  # lambda_m
    groups: tuple[str, ...] = ("*",)
    mask_lr: float = 0.01
    initial_steps: int | None = None
    train: TrainConfig = field(default_factory=_dts_train_defaults)
    surrogate_width: float = 1.0  # in thresholds, as in TEAS fine-tuning
    chunk_steps: int = 8
    sensitivity_samples: int = 64
    histogram_bins: int = 64

    def __post_init__(self):
        if not self.mask_weight >= 0:
            raise ConfigError(f"--mask-weight must be >= 0, got {self.mask_weight}.")
        if isinstance(self.groups, str) or not all(isinstance(g, str) and g for g in self.groups):
            raise ConfigError(f"--groups takes layer-name patterns such as 'features_*', got {self.groups!r}.")
        object.__setattr__(self, "groups", tuple(self.groups))
        if not self.mask_lr > 0:
            raise ConfigError(f"--mask-lr must be positive, got {self.mask_lr}.")
        if self.initial_steps is not None and self.initial_steps < 1:  # a mask of no steps silences its layer
            raise ConfigError(f"--initial-steps must be 1 or more, got {self.initial_steps}.")
        if not self.surrogate_width > 0:
            raise ConfigError(f"DTS surrogate width must be positive, got {self.surrogate_width}.")
        if self.chunk_steps <= 0:
            raise ConfigError(f"DTS chunk steps must be positive, got {self.chunk_steps}.")
        if self.sensitivity_samples <= 0:
            raise ConfigError(f"DTS sensitivity samples must be positive, got {self.sensitivity_samples}.")
        if self.histogram_bins < 2:
            raise ConfigError(f"Sensitivity histograms need at least 2 bins, got {self.histogram_bins}.")

    def check_time_steps(self, steps: int) -> None:
        """Refuse what cannot apply to a network of T = ``steps``."""
        if self.initial_steps is not None and self.initial_steps > steps:
            raise ConfigError(f"--initial-steps {self.initial_steps} exceeds the network's T = {steps}.")


def penalized_layers(layers: list[str], patterns: tuple[str, ...]) -> list[str]:
    """The layers matched by any pattern, in network order; a pattern matching nothing is an error."""
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in layers):
            raise ConfigError(f"--groups pattern '{pattern}' matches no neuron layer; the layers are "
                              f"{', '.join(layers)}.")
    return [name for name in layers if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


class MaskedSNN(nn.Module):
    """The network's SNN with a time mask on every neuron layer: x -> output summed over T (differentiable)."""

    def __init__(self, network: SpikingNetwork, masks: dict[str, TimeMask], width: float = 1.0, chunk_steps: int = 8):
        super().__init__()
        self.graph = network.graph
        self.masks = nn.ModuleDict(masks)
        device = next(network.graph.parameters()).device
        self.engine = Engine(network.graph, device, surrogate_width=width, time_masks=dict(self.masks.items()))
        # training runs every step with the soft mask: the gradient of a masked-off step must still flow
        self.plan = TimePlan.per_layer(network.time_steps, network.layer_time_steps, chunk_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.engine.run_batch(x, None, self.plan)["accumulated"]


@dataclass
class LayerSensitivity:
    """How much a layer's input at later steps differs from its first step (paper Section III-B)."""

    name: str
    similarity: float  # cosine similarity of the histograms of step 1 and steps 2..T (1 = same distribution)
    suggested: bool  # suggested for the mask loss (similarity at or above the mean over layers)


@dataclass
class DtsResult:
    max_steps: int
    layer_steps: dict[str, int]  # learned T_l
    penalized: list[str]
    sensitivity: list[LayerSensitivity]
    log: TrainLog
    mask_parameters: dict[str, list[float]]
    initial_steps: int

    @property
    def average_steps(self) -> float:
        return sum(self.layer_steps.values()) / len(self.layer_steps) if self.layer_steps else float("nan")


def sensitivity(network: SpikingNetwork, data: LabeledData, *, samples: int = 64, bins: int = 64,
                chunk_steps: int = 8, device: str | torch.device = "cpu") -> list[LayerSensitivity]:
    """Cosine similarity of each neuron layer's input histogram at step 1 and over steps 2..T.

    One batch of ``samples`` images runs without masks. Each layer's histogram spans the range of its input
    over all steps, so the two histograms share bins; a constant input (the first layer under direct
    encoding) has similarity 1. Layers at or above the mean similarity are suggested for the mask loss.
    """
    engine = Engine(network.graph, device)
    sampler = StepValueSampler()
    with torch.no_grad():
        engine.run_batch(data.x[:samples].to(engine.device), None, network.time_plan(chunk_steps), input_probe=sampler)
    return compare_step_histograms([name for name, _ in network.neuron_layers()], sampler.first, sampler.later, bins)


class StepValueSampler:
    """Collects a fixed random subset of each layer's input values at step 1 and at every later step.

    Called as ``sampler(layer, first_step, inputs)`` with ``inputs`` [steps, ...] (the engine's input probe);
    the subset keeps memory flat whatever the layer size.
    """

    def __init__(self):
        self.first: dict[str, torch.Tensor] = {}
        self.later: dict[str, list[torch.Tensor]] = {}
        self._picks: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, t0: int, current: torch.Tensor) -> None:
        if name not in self._picks:
            generator = torch.Generator().manual_seed(len(self._picks))
            self._picks[name] = torch.randperm(current[0].numel(), generator=generator)[:SENSITIVITY_VALUES_PER_STEP]
        for i in range(current.shape[0]):
            values = current[i].detach().flatten()[self._picks[name].to(current.device)].float().cpu()
            if t0 + i == 0:
                self.first[name] = values
            else:
                self.later.setdefault(name, []).append(values)


def compare_step_histograms(layers: list[str], first: dict[str, torch.Tensor], later: dict[str, list[torch.Tensor]],
                            bins: int) -> list[LayerSensitivity]:
    """Cosine similarity of each layer's histogram of input values at step 1 (``first``) and at later steps.

    Both histograms span the range of the layer's input over all steps, so they share bins; a constant input
    has similarity 1, and a layer without later steps NaN. Layers at or above the mean similarity are suggested.
    """
    results = []
    for name in layers:
        if name not in first or name not in later:  # a layer of one step has nothing to compare
            results.append(LayerSensitivity(name, float("nan"), False))
            continue
        rest = torch.cat(later[name])
        lo, hi = float(min(first[name].min(), rest.min())), float(max(first[name].max(), rest.max()))
        if hi <= lo:
            results.append(LayerSensitivity(name, 1.0, False))
            continue
        h1 = torch.histc(first[name], bins, lo, hi).double()
        h2 = torch.histc(rest, bins, lo, hi).double()
        results.append(LayerSensitivity(name, float(F.cosine_similarity(h1, h2, dim=0)), False))
    finite = [r.similarity for r in results if r.similarity == r.similarity]
    mean = sum(finite) / len(finite) if finite else float("nan")
    for r in results:
        r.suggested = r.similarity == r.similarity and r.similarity >= mean
    return results


def train_time_masks(network: SpikingNetwork, data: LabeledData, config: DtsConfig = DtsConfig(), *,
                     checkpoint: Path | None = None, resume: bool = False, progress=None) -> DtsResult:
    """Learn a time mask per neuron layer jointly with the weights, then give ``network`` the learned prefixes.

    Sets ``network.layer_prefix_steps`` (T_l of every layer whose mask dropped a step) and
    ``network.time_mask_parameters`` (TP of every layer); the weights are trained in place.
    """
    if network.layer_time_steps:
        raise ConfigError("This network already runs per-layer windows (TEAS); learn DTS masks on the artifact it "
                          "was made from.")
    steps = network.time_steps
    config.check_time_steps(steps)
    initial = steps if config.initial_steps is None else config.initial_steps
    layers = [name for name, _ in network.neuron_layers()]
    penalized = penalized_layers(layers, config.groups)
    device = next(network.graph.parameters()).device
    report = sensitivity(network, data, samples=config.sensitivity_samples, bins=config.histogram_bins,
                         chunk_steps=config.chunk_steps, device=device)
    masks = {name: TimeMask(steps, initial).to(device) for name in layers}
    model = MaskedSNN(network, masks, config.surrogate_width, config.chunk_steps)

    def loss(module: MaskedSNN, batch):
        x, y = batch
        value = F.cross_entropy(module(x) / steps, y)
        if config.mask_weight > 0:
            value = value + config.mask_weight * sum(module.masks[name]().sum() for name in penalized)
        return value

    ann = network.ann_snapshot()  # the weights train with the masks; the ANN stays the reference
    torch.manual_seed(config.train.seed)
    log = fit(model, [data.x, data.y], loss, config.train, checkpoint=checkpoint, resume=resume, progress=progress,
              description=f"Training time masks (DTS, BPTT, T_max={steps})",
              param_groups=(ParamGroup(MASK_PREFIX, config.mask_lr),),
              fingerprint={**config.to_dict(), "train": None, "penalized": penalized})
    network.graph.eval()
    network.keep_ann(ann)
    learned = {name: mask.steps() for name, mask in masks.items()}
    network.layer_prefix_steps = {name: t for name, t in learned.items() if t < steps}
    network.time_mask_parameters = {name: mask.tp().detach().cpu().tolist() for name, mask in masks.items()}
    return DtsResult(max_steps=steps, layer_steps=learned, penalized=penalized, sensitivity=report, log=log,
                     mask_parameters=network.time_mask_parameters, initial_steps=initial)
