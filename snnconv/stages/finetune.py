"""Fine-tuning a converted SNN with its time steps fixed: surrogate-gradient backpropagation through time.

The time engine simulates the network exactly as at inference (its per-layer windows T_l, re-timing,
max-pool gates, calibration currents). Neurons spike as usual; in the backward pass the triangle surrogate
of :mod:`snnconv.neurons.surrogate` stands in for the spike's derivative. Only the weights and biases of
the convolution and linear layers train; thresholds, calibration currents and initial potentials stay.

Loss (ALGORITHMS.md section 6.2): ``CE(F_T / T, y) + lambda * P_r``, with F_T the output summed over the
readout window and ``P_r = sum_l w_l * r_l``: r_l the layer's spikes per neuron per step in the batch,
w_l its share of a per-layer cost (TEAS: #Act(l) x #Para(l), normalized to sum to 1). lambda = 0 trains
for accuracy only. ``loss="distill"`` (ours) replaces the cross-entropy by the mean squared error between
F_T / T and the outputs of the ANN the network was converted from: the SNN is trained towards what
conversion approximates, with a target for every output instead of one label per sample.
``ce-every-step`` and ``distill-every-step`` (ours; the first is the TET loss that SEENN trains its networks
with) apply the same losses to the running mean output F_t / t of every readout step t and average them over
t: the network is trained to be right early too, which is what an early exit reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import _Plain
from ..data import LabeledData
from ..engine import Engine
from ..errors import ConfigError
from ..network import SpikingNetwork
from ..training import TrainConfig, TrainLog, fit


FINETUNE_LOSSES = ("ce", "distill", "ce-every-step", "distill-every-step")


def _finetune_defaults() -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=32, lr=1e-4, optimizer="adam", momentum=0.0, weight_decay=0.0)


@dataclass(frozen=True)
class FinetuneConfig(_Plain):
    train: TrainConfig = field(default_factory=_finetune_defaults)
    activity_weight: float = 0.0  # lambda of the activity regularizer P_r
    surrogate_width: float = 1.0  # in thresholds: the surrogate gradient is non-zero within this of firing
    chunk_steps: int = 8
    loss: str = "ce"  # ce: cross-entropy on the labels; distill: squared error to the ANN's outputs; either on
    # F_T / T, or with the suffix -every-step, on F_t / t of every readout step, averaged over t

    def __post_init__(self):
        if self.loss not in FINETUNE_LOSSES:
            raise ConfigError(f"--finetune-loss must be one of {', '.join(FINETUNE_LOSSES)}, got '{self.loss}'.")
        if self.activity_weight < 0:
            raise ConfigError(f"--activity-weight must be >= 0, got {self.activity_weight}.")
        if not self.surrogate_width > 0:
            raise ConfigError(f"--surrogate-width must be positive, got {self.surrogate_width}.")
        if self.chunk_steps <= 0:
            raise ConfigError(f"Fine-tuning chunk steps must be positive, got {self.chunk_steps}.")


class SurrogateSNN(nn.Module):
    """The network's SNN as a differentiable module: x -> (output summed over T, spike rate per neuron layer);
    with ``every_step``, the output summed over steps 1..t for every readout step t, [T, batch, classes]."""

    def __init__(self, network: SpikingNetwork, width: float = 1.0, chunk_steps: int = 8):
        super().__init__()
        self.graph = network.graph
        device = next(network.graph.parameters()).device
        self.engine = Engine(network.graph, device, surrogate_width=width)
        self.plan = network.time_plan(chunk_steps)
        self.windows = self.engine.windows(self.plan)
        self.neurons = {op.name: op.module for op in self.engine.program.neuron_ops if op.kind == "neuron"}

    def forward(self, x: torch.Tensor, every_step: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outcome = self.engine.run_batch(x, None, self.plan, record=self.neurons, trace_output=every_step)
        rates = {}
        for name, summed in outcome["recorded"].items():
            neuron = self.neurons[name]
            spikes = summed / neuron.broadcast(neuron.threshold.clamp_min(1e-12), summed.dim())
            rates[name] = spikes.sum() / (spikes.numel() * self.windows[name])
        return outcome["output_trace" if every_step else "accumulated"], rates


def finetune(network: SpikingNetwork, data: LabeledData, config: FinetuneConfig = FinetuneConfig(), *,
             layer_costs: dict[str, float] | None = None, checkpoint: Path | None = None, resume: bool = False,
             progress=None) -> TrainLog:
    """Train ``network``'s weights in place on ``data`` through its SNN simulation (T and T_l fixed)."""
    model = SurrogateSNN(network, config.surrogate_width, config.chunk_steps)
    device = next(network.graph.parameters()).device
    steps = network.time_steps
    costs = {name: float((layer_costs or {}).get(name, 1.0)) for name in model.neurons}
    total = sum(costs.values())
    weights = {name: cost / total for name, cost in costs.items()} if total > 0 else {n: 0.0 for n in costs}

    ann = network.ann_snapshot()  # training moves weights and biases; the ANN stays the reference
    tensors = [data.x, data.y]
    every_step = config.loss.endswith("-every-step")
    readout_steps = torch.arange(1, steps + 1, dtype=torch.float32, device=device).view(-1, 1, 1)
    distill = config.loss.startswith("distill")
    if distill:  # the ANN's outputs, computed once before its weights start to move
        teacher = network.ann_graph().eval()
        with torch.no_grad():
            tensors.append(torch.cat([teacher(x.to(device)).cpu() for x, _ in data.batches(256)]))

    def loss(module, batch):
        x, target = batch[0], batch[-1]
        summed, rates = module(x, every_step)
        if every_step:  # F_t / t at every t against the same target, averaged over t
            mean = (summed / readout_steps).flatten(0, 1)
            target = target.expand(steps, *target.shape).flatten(0, 1)
        else:
            mean = summed / steps
        value = (F.mse_loss if distill else F.cross_entropy)(mean, target)
        if config.activity_weight > 0:
            value = value + config.activity_weight * sum(weights[name] * rate for name, rate in rates.items())
        return value

    torch.manual_seed(config.train.seed)
    log = fit(model, tensors, loss, config.train, checkpoint=checkpoint, resume=resume, progress=progress,
              description=f"Fine-tuning the SNN (BPTT, T={steps}, {config.loss} loss)",
              fingerprint={**config.to_dict(), "train": None})
    network.graph.eval()
    network.keep_ann(ann)
    return log
