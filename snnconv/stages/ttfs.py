"""TTFS coding of a converted network: balance, fit the temporal kernels, optionally fine-tune them.

1. Balance (ALGORITHMS 2A step 1): thresholds theta_l from the 99.9th percentile of each layer's positive
   ANN activations (layer-wise by default), so a neuron's value z / theta lies mostly in (0, 1]. The
   rate-coding calibration currents of the source artifact are dropped: they correct rate quantization.
2. Kernel fitting (2A step 5, T2FSNN): per layer, tc and td follow the gradient of the precision loss
   1/2 (x - x^)^2 (x the ANN value, x^ the value of the TTFS spike) and of the minimum-value loss
   1/2 (x_min - x^_min)^2 (x_min the 2nd percentile of each sample's positive values, x^_min the smallest
   value the window represents); td moves so that the earliest spike of a sample lands at local time 0.
   The SNN is re-run after every update, so each layer is fitted to the spikes it really receives.
3. Fine-tuning (2B, Park & Yoon): the surrogate model replaces every neuron with dec(enc(z)) and trains
   weights and kernels through a straight-through ceil on the one training loop. Loss CE + w_bn L_BN +
   w_kr R_tk, with stochastic relaxation (each layer uses dec(enc(.)) with a probability that grows
   linearly to 1, otherwise ReLU). Each term can be switched off for the ablation.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BalanceConfig, _Plain
from ..data import LabeledData
from ..engine.ttfs import TTFSEngine
from ..errors import ConfigError
from ..network import SpikingNetwork
from ..neurons import IFNeuron
from ..neurons.ttfs import TemporalKernel, TTFSCoding, encode_decode
from ..training import TrainConfig, TrainLog, fit
from .balance import layer_thresholds
from .observe import collect_statistics


def _finetune_defaults() -> TrainConfig:
    return TrainConfig(epochs=3, batch_size=64, lr=1e-3, optimizer="adam", momentum=0.0, weight_decay=1e-4)


@dataclass(frozen=True)
class TTFSFinetuneConfig(_Plain):
    train: TrainConfig = field(default_factory=_finetune_defaults)
    relaxation: bool = True  # SR: stochastic relaxation
    relaxation_fraction: float = 0.5  # SR: share of the iterations over which p grows linearly to 1
    kernel_regularization: float = 1e-5  # TR: weight of sum_l (tc_l - tc_init)^2 + (td_l - td_init)^2; 0 = off
    bn_loss: float = 1e-5  # TB: weight of the temporal-kernel-aware BN loss; 0 = off

    def __post_init__(self):
        if not 0 < self.relaxation_fraction <= 1:
            raise ConfigError(f"--relaxation-fraction must be in (0, 1], got {self.relaxation_fraction}.")
        if self.kernel_regularization < 0 or self.bn_loss < 0:
            raise ConfigError("--kernel-reg and --bn-loss weights must be >= 0.")


@dataclass(frozen=True)
class TTFSConfig(_Plain):
    window: int = 32  # T_w, steps of each layer's fire window
    fire_start: int | None = None  # T_s; None = T_w (no early firing)
    tc: float = 8.0  # initial time constant (steps)
    target_range: float = 1.0  # A: td_init = tc ln(A); the largest value a spike represents is A
    percentile: float = 99.9
    granularity: str = "layer"
    fit_epochs: int = 2  # passes of kernel fitting over the calibration data; 0 = keep the initial kernels
    fit_batch: int = 100
    rho_tc: tuple[float, float] = (10.0, 100.0)  # rho1 (precision), rho2 (minimum value)
    rho_td: float = 1.0
    finetune: bool = False
    tuning: TTFSFinetuneConfig = field(default_factory=TTFSFinetuneConfig)

    def __post_init__(self):
        if self.window <= 1:
            raise ConfigError(f"--window must be at least 2 steps, got {self.window}.")
        if self.fire_start is not None and not 0 < self.fire_start <= self.window:
            raise ConfigError(f"--fire-start must be in 1..--window ({self.window}), got {self.fire_start}.")
        if not self.tc > 0:
            raise ConfigError(f"--tc must be positive, got {self.tc}.")
        if not self.target_range > 0:
            raise ConfigError(f"--target-range must be positive, got {self.target_range}.")
        if self.fit_epochs < 0 or self.fit_batch <= 0:
            raise ConfigError("--fit-epochs must be >= 0 and the fit batch positive.")
        BalanceConfig(method="percentile", percentile=self.percentile, granularity=self.granularity)

    def check_time_steps(self, steps: int) -> None:
        """Every method's config checks its options against the artifact's T; TTFS's windows are its own, so
        any T will do."""

    @property
    def td_init(self) -> float:
        return self.tc * math.log(self.target_range)

    @property
    def steps_between_layers(self) -> int:
        return self.fire_start or self.window

    @classmethod
    def from_dict(cls, data: dict):
        data = dict(data)
        if "rho_tc" in data:
            data["rho_tc"] = tuple(data["rho_tc"])
        return super().from_dict(data)


# ---------------------------------------------------------------------------- balance

def ann_activations(network: SpikingNetwork, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every neuron layer's ANN activation (the ReLU output) on ``x``."""
    found: dict[str, torch.Tensor] = {}
    handles = [module.register_forward_hook(lambda _m, _i, out, name=name: found.__setitem__(name, out.detach()))
               for name, module in network.neuron_layers()]
    try:
        with torch.no_grad():
            network.graph(x)
    finally:
        for handle in handles:
            handle.remove()
    return found


def percentile_thresholds(network: SpikingNetwork, data: LabeledData, config: TTFSConfig,
                          batch_size: int = 256) -> dict[str, torch.Tensor]:
    device = next(network.graph.parameters()).device
    stats = collect_statistics(network.graph, (x.to(device) for x, _y in data.batches(batch_size)), module_type=IFNeuron)
    balance = BalanceConfig(method="percentile", percentile=config.percentile, granularity=config.granularity)
    return {name: layer_thresholds(histogram, balance, half_init=False) for name, histogram in stats.layers.items()}


def build_ttfs(network: SpikingNetwork, calibration: LabeledData, config: TTFSConfig) -> SpikingNetwork:
    """A TTFS copy of ``network``: percentile thresholds, no calibration currents, initial kernels."""
    ttfs = copy.deepcopy(network)
    ttfs.restore_ann_weights()  # weights calibrated for rate coding at T are not TTFS weights
    ttfs.exit_policy = None
    ttfs.layer_time_steps, ttfs.layer_prefix_steps, ttfs.time_mask_parameters = {}, {}, {}  # rate-coding windows
    thresholds = percentile_thresholds(ttfs, calibration, config)
    for name, neuron in ttfs.neuron_layers():
        neuron.threshold = thresholds[name].to(neuron.threshold.device)
        neuron.bias = torch.zeros_like(neuron.threshold)
        neuron.v_offset = torch.zeros((), device=neuron.threshold.device)
    kernels = {name: TemporalKernel(config.tc, config.td_init) for name, _ in ttfs.neuron_layers()}
    ttfs.ttfs = TTFSCoding(fire_start=config.steps_between_layers, window=config.window, kernels=kernels)
    ttfs.time_steps = TTFSEngine(ttfs.graph, ttfs.ttfs).latency
    return ttfs


# ---------------------------------------------------------------------------- kernel fitting

@dataclass
class KernelFit:
    """One layer's fit on the calibration data, before and after (threshold units; see docs/ttfs.md)."""

    layer: str
    tc: float
    td: float
    precision_error: float  # 1/2 mean (x - x^)^2 over the positive ANN values
    min_error: float  # x_min - x^_min: mean 2nd percentile of a sample's positive values minus the smallest representable
    max_error: float  # x_max - x^_max: mean largest value of a sample minus the largest representable
    below_range_pct: float  # positive ANN values that produce no spike
    initial_precision_error: float | None = None


def _layer_errors(x: torch.Tensor, represented: torch.Tensor, kernel: TemporalKernel, window: int) -> dict:
    """Errors of one layer's batch: x the ANN values, ``represented`` the TTFS values (threshold units)."""
    per_sample = x.flatten(1)
    positive = per_sample > 0
    error = 0.5 * ((per_sample - represented.flatten(1))[positive] ** 2).mean() if positive.any() else torch.zeros(())
    mins, maxs = [], []
    for row, mask in zip(per_sample, positive):
        if mask.any():
            mins.append(torch.quantile(row[mask].float(), 0.02))
            maxs.append(row[mask].max())
    x_min = float(torch.stack(mins).mean()) if mins else 0.0
    x_max = float(torch.stack(maxs).mean()) if maxs else 0.0
    silent = (represented.flatten(1) == 0) & positive
    return {"precision_error": float(error), "min_error": x_min - kernel.smallest_value(window),
            "max_error": x_max - kernel.largest_value(),
            "below_range_pct": 100.0 * float(silent.sum()) / max(int(positive.sum()), 1), "x_min": x_min}


def _snn_values(engine: TTFSEngine, spike_times: dict[str, torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(local first-spike times, represented values) of one layer, threshold units."""
    kernel = engine.coding.kernels[name]
    local = spike_times[name] - engine.fire_window[name].start
    return local, torch.exp(-(local - kernel.td) / kernel.tc)


def measure_fit(network: SpikingNetwork, data: LabeledData, batch_size: int = 256) -> dict[str, dict]:
    """Per-layer fit errors of ``network``'s current kernels, averaged over the batches of ``data``."""
    engine = TTFSEngine(network.graph, network.ttfs, next(network.graph.parameters()).device)
    totals: dict[str, dict] = {}
    batches = 0
    for x, _y in data.batches(batch_size):
        x = x.to(engine.device)
        spikes = engine.run_batch(x)["spike_times"]
        activations = ann_activations(network, x)
        batches += 1
        for name, neuron in network.neuron_layers():
            theta = neuron.broadcast(neuron.threshold, activations[name].dim())
            _local, represented = _snn_values(engine, spikes, name)
            errors = _layer_errors(activations[name] / theta, represented, network.ttfs.kernels[name],
                                   network.ttfs.window)
            for key, value in errors.items():
                totals.setdefault(name, {}).setdefault(key, 0.0)
                totals[name][key] += value
    return {name: {key: value / batches for key, value in errors.items()} for name, errors in totals.items()}


# Kernel updates the defaults make (1000 calibration samples, 2 passes, batches of 100). Fewer leave the kernels near
# their initial tc, which costs accuracy where that tc suits the window badly: on the default model at --window 16,
# 2 / 4 / 10 / 20 updates gave 42 / 54 / 83 / 91 % (docs/ttfs.md).
FEW_KERNEL_UPDATES = 20


def kernel_updates(samples: int, config: TTFSConfig) -> int:
    """How many (tc, td) updates fitting makes on ``samples`` calibration samples: one per batch per pass."""
    return config.fit_epochs * math.ceil(samples / config.fit_batch)


def fit_kernels(network: SpikingNetwork, data: LabeledData, config: TTFSConfig, progress=None) -> list[KernelFit]:
    """T2FSNN's gradient updates of (tc, td) per layer, on ``network`` in place (ALGORITHMS 2A step 5)."""
    before = measure_fit(network, data)
    coding = network.ttfs
    window = coding.window
    rho1, rho2 = config.rho_tc
    device = next(network.graph.parameters()).device
    advance = (progress or (lambda _d, _t: (lambda _n: None)))(
        "Fitting TTFS kernels", kernel_updates(len(data), config))
    generator = torch.Generator().manual_seed(0)
    engine = TTFSEngine(network.graph, coding, device)  # reads coding.kernels live, so updates apply at once
    for _epoch in range(config.fit_epochs):
        order = torch.randperm(len(data), generator=generator)
        for first in range(0, len(data), config.fit_batch):
            x = data.x[order[first:first + config.fit_batch]].to(device)
            spikes = engine.run_batch(x)["spike_times"]
            activations = ann_activations(network, x)
            targets = {}
            for name, neuron in network.neuron_layers():
                theta = neuron.broadcast(neuron.threshold, activations[name].dim())
                targets[name] = (activations[name] / theta).double()
            for name, _neuron in network.neuron_layers():  # time constants first, then delays (as T2FSNN)
                kernel = coding.kernels[name]
                local, represented = _snn_values(engine, spikes, name)
                x_true, fired = targets[name], torch.isfinite(local)
                positive = x_true > 0
                timing = torch.where(fired, local, torch.zeros_like(local)) - kernel.td
                precision = ((x_true - represented) * represented * timing)[positive].mean() if positive.any() else 0.0
                x_min = _layer_errors(x_true, represented, kernel, window)["x_min"]
                smallest = kernel.smallest_value(window)
                step = (rho1 * float(precision) + rho2 * (x_min - smallest) * smallest * (window - 1 - kernel.td)) / kernel.tc ** 2
                coding.kernels[name] = TemporalKernel(max(kernel.tc + step, 0.5), kernel.td)
            for name, _neuron in network.neuron_layers():
                kernel = coding.kernels[name]
                local, _represented = _snn_values(engine, spikes, name)
                earliest = local.flatten(1).min(1).values
                earliest = earliest[torch.isfinite(earliest)]
                if earliest.numel() == 0:
                    continue
                x_max = torch.exp(-(earliest - kernel.td) / kernel.tc)
                largest = kernel.largest_value()
                step = config.rho_td * float(((x_max - largest) * largest / kernel.tc).mean())
                coding.kernels[name] = TemporalKernel(kernel.tc, kernel.td + step)
            advance(1)
    after = measure_fit(network, data)
    return [KernelFit(layer=name, tc=coding.kernels[name].tc, td=coding.kernels[name].td,
                      precision_error=after[name]["precision_error"], min_error=after[name]["min_error"],
                      max_error=after[name]["max_error"], below_range_pct=after[name]["below_range_pct"],
                      initial_precision_error=before[name]["precision_error"])
            for name, _ in network.neuron_layers()]


# ---------------------------------------------------------------------------- surrogate-model fine-tuning

class EncodeDecode(nn.Module):
    """A neuron of the surrogate model: theta * dec(enc(z / theta)) with the layer's trainable kernel."""

    def __init__(self, neuron: IFNeuron, kernel: TemporalKernel, window: int, relaxation_iterations: int | None,
                 seed: int = 0):
        super().__init__()
        self.seed = seed  # relaxation draws depend on (seed, iteration) only, so a resumed run repeats them
        self.neuron = neuron  # keeps the threshold; not trained
        self.tc = nn.Parameter(torch.tensor(float(kernel.tc)))
        self.td = nn.Parameter(torch.tensor(float(kernel.td)))
        self.window = window
        self.relaxation_iterations = relaxation_iterations
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self.bn_statistics: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        theta = self.neuron.broadcast(self.neuron.threshold, z.dim())
        normalized = z / theta
        if self.training:
            reduce = [d for d in range(normalized.dim()) if d != 1]
            self.bn_statistics = (normalized.mean(reduce), normalized.std(reduce))
            self.iteration += 1
            if self.relaxation_iterations:
                probability = min(1.0, float(self.iteration) / self.relaxation_iterations)
                draw = torch.rand((), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.iteration)))
                if float(draw) >= probability:
                    return torch.relu(z)
        return theta * encode_decode(normalized, self.tc.clamp_min(0.1), self.td, self.window)

    def kernel_aware_bn_loss(self) -> torch.Tensor:
        """ALGORITHMS 2B step 6 (the reference code's polynomial), with the BN output's per-channel mean
        beta and standard deviation gamma measured on the batch (BN is folded into the weights here)."""
        beta, gamma = self.bn_statistics
        tc = self.tc.clamp_min(0.1)
        x_t = torch.exp(-(self.window - 1 - self.td) / tc)
        poly = (0.5 * (gamma ** 2 / 3 + gamma + 1) * beta ** 3 - 0.5 * x_t * beta ** 2
                - 0.5 * (x_t ** 2 * gamma + 2) * beta - (x_t ** 2 * gamma ** 2 + 6) / 6 * x_t)
        return -poly.sum()


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, child = target.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


class _SurrogateModel(nn.Module):
    """The network's graph with its neurons swapped for :class:`EncodeDecode` (restored by ``restore``)."""

    def __init__(self, network: SpikingNetwork, relaxation_iterations: int | None, seed: int = 0):
        super().__init__()
        self.graph = network.graph
        self.swapped: dict[str, tuple[str, IFNeuron]] = {}
        self.activations = nn.ModuleDict()
        for node in network.graph.graph.nodes:
            if node.op == "call_module" and isinstance(network.graph.get_submodule(node.target), IFNeuron):
                neuron = network.graph.get_submodule(node.target)
                activation = EncodeDecode(neuron, network.ttfs.kernels[node.name], network.ttfs.window,
                                          relaxation_iterations, seed=seed * 1_009 + len(self.swapped))
                self.swapped[node.name] = (node.target, neuron)
                self.activations[node.name] = activation
                _set_submodule(network.graph, node.target, activation)
        for neuron_name, (_target, neuron) in self.swapped.items():
            for buffer in neuron.buffers():
                buffer.requires_grad_(False)

    def forward(self, x):
        return self.graph(x)

    def restore(self) -> dict[str, TemporalKernel]:
        kernels = {}
        for name, (target, neuron) in self.swapped.items():
            activation = self.activations[name]
            kernels[name] = TemporalKernel(float(activation.tc.detach().clamp_min(0.1)), float(activation.td.detach()))
            _set_submodule(self.graph, target, neuron)
        return kernels


def surrogate_predictions(network: SpikingNetwork, x: torch.Tensor) -> torch.Tensor:
    """The surrogate model's logits (every neuron dec(enc(.)), no relaxation): what fine-tuning optimizes."""
    model = _SurrogateModel(network, relaxation_iterations=None)
    try:
        model.eval()
        with torch.no_grad():
            return model(x)
    finally:
        model.restore()


def finetune_ttfs(network: SpikingNetwork, data: LabeledData, config: TTFSConfig, *, checkpoint: Path | None = None,
                  resume: bool = False, progress=None) -> TrainLog:
    """Train weights and kernels of the TTFS ``network`` in place through its surrogate model (ALGORITHMS 2B)."""
    tuning = config.tuning
    iterations = math.ceil(len(data) / tuning.train.batch_size) * tuning.train.epochs
    ramp = max(1, round(tuning.relaxation_fraction * iterations)) if tuning.relaxation else None
    model = _SurrogateModel(network, ramp, seed=tuning.train.seed)
    init = torch.tensor([config.tc, config.td_init])

    def loss(module, batch):
        x, y = batch
        value = F.cross_entropy(module(x), y)
        activations = list(module.activations.values())
        if tuning.bn_loss > 0:
            value = value + tuning.bn_loss * sum(a.kernel_aware_bn_loss() for a in activations
                                                 if a.bn_statistics is not None)
        if tuning.kernel_regularization > 0:
            value = value + tuning.kernel_regularization * sum((a.tc - init[0]) ** 2 + (a.td - init[1]) ** 2
                                                               for a in activations)
        return value

    ann = network.ann_snapshot()  # training moves the weights; the ANN stays the reference
    torch.manual_seed(tuning.train.seed)
    try:
        log = fit(model, [data.x, data.y], loss, tuning.train, checkpoint=checkpoint, resume=resume,
                  progress=progress, description="Fine-tuning TTFS kernels and weights (surrogate model)")
    finally:
        network.ttfs = replace(network.ttfs, kernels=model.restore())
    network.graph.eval()
    network.keep_ann(ann)
    return log
