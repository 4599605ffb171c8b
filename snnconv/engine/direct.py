"""Simulate a directly trained spiking transformer (:mod:`snnconv.spikformer`) and measure it like a converted SNN.

The model runs as it trains (tensors [T, B, ...], LIF layers looping over T); forward hooks count what every
layer did at every step, into the same :class:`~snnconv.results.SimulationResult` the time engine fills, so
reports, energy and gates are shared (docs/spikformer.md, "Measurement"):

- LIF layers: spikes per step; ``active_steps`` = T_l under a DTS mask (the neuron stops after it).
- Convolutions and linear layers fed by spikes: one accumulate per nonzero input element and outgoing synapse
  (exact fan-out, borders included), per step. The first convolution reads the analog image, the same at every
  step (direct encoding): it is computed once per sample, as dense MACs.
- The attention product ``(q k^T) v``: ``q k^T`` adds one for every coincidence q[i, d] = k[j, d] = 1, so its
  accumulates are ``sum_d nnz(q[:, d]) nnz(k[:, d])``; ``A v`` adds A[i, j] for every v[j, c] = 1 and every
  nonzero A[i, j], so ``sum_j nnz(v[j, :]) nnz(A[:, j])``. Per head, per step. Its dense MACs (for the
  same-architecture ANN) are ``2 N^2 D``.
- The readout is the head's output averaged over the steps; accuracy is recorded after every step.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data import LabeledData
from ..errors import ConfigError
from ..neurons.lif import MultiStepLIF
from ..results import NeuronLayerStats, SimulationResult, SynapticLayerStats
from ..spikformer import SpikeAttentionProduct, Spikformer
from .fanout import dense_macs, input_fanout

ProgressFn = Callable[[int], None]  # called with the number of samples finished


def attention_accumulates(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Accumulates of ``(q k^T) v`` on spikes [T, B, heads, N, d], per step [T] (summed over samples and heads)."""
    qk = (torch.count_nonzero(q, dim=-2) * torch.count_nonzero(k, dim=-2)).sum((1, 2, 3))
    attention = q @ k.transpose(-2, -1)  # [T, B, heads, N_i, N_j]
    av = (torch.count_nonzero(attention, dim=-2) * torch.count_nonzero(v, dim=-1)).sum((1, 2, 3))
    return (qk + av).to(torch.float64)


class _Recorder:
    """Forward hooks on every LIF, weighted layer and attention product of one model; totals over batches."""

    def __init__(self, model: Spikformer, time_steps: int):
        self.model, self.time_steps = model, time_steps
        self.spikes: dict[str, torch.Tensor] = {}
        self.neurons: dict[str, int] = {}
        self.ops: dict[str, torch.Tensor] = {}
        self.spiking_input: dict[str, bool] = {}
        self.input_elements: dict[str, int] = {}
        self.dense: dict[str, int] = {}
        self.kind: dict[str, str] = {}
        self._fanout: dict[str, torch.Tensor] = {}
        self._probing = False  # measuring a fan-out runs the layer once more: its hook must not count that
        self._hooks = []
        analog = "sps.conv1.conv"  # the only layer that reads the image
        for name, module in model.named_modules():
            if isinstance(module, MultiStepLIF):
                self._hooks.append(module.register_forward_hook(self._lif_hook(name)))
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                self.kind[name] = "conv" if isinstance(module, nn.Conv2d) else "linear"
                self.spiking_input[name] = name != analog
                self._hooks.append(module.register_forward_hook(self._synapse_hook(name)))
            elif isinstance(module, SpikeAttentionProduct):
                self.kind[name], self.spiking_input[name] = "attention", True
                self._hooks.append(module.register_forward_hook(self._attention_hook(name)))

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()

    def _lif_hook(self, name: str):
        def hook(_module, _inputs, out):
            steps = out.shape[0]
            self.neurons[name] = int(out[0, 0].numel())
            per_step = out.reshape(steps, -1).sum(1, dtype=torch.float64)
            self.spikes[name] = self.spikes.get(name, 0) + per_step
        return hook

    def _synapse_hook(self, name: str):
        def hook(module, inputs, out):
            if self._probing:
                return
            x = inputs[0]
            steps = self.time_steps
            per_sample_in = x.shape[1:] if isinstance(module, nn.Conv2d) else x.shape[2:]
            per_sample_out = out.shape[1:] if isinstance(module, nn.Conv2d) else out.shape[2:]
            if name not in self.dense:
                self.dense[name] = dense_macs(module, per_sample_out)
                self.input_elements[name] = int(per_sample_in.numel())
            if not self.spiking_input[name]:
                return
            if name not in self._fanout:
                self._probing = True
                try:
                    self._fanout[name] = input_fanout(module, per_sample_in).reshape(-1).to(x.device)
                finally:
                    self._probing = False
            nonzero = (x.reshape(steps, -1, per_sample_in.numel()) != 0).to(torch.float32)
            per_step = (nonzero @ self._fanout[name]).sum(1, dtype=torch.float64)
            self.ops[name] = self.ops.get(name, 0) + per_step
        return hook

    def _attention_hook(self, name: str):
        def hook(_module, inputs, _out):
            q, k, v = inputs
            if name not in self.dense:
                heads, tokens, width = q.shape[2:]
                self.dense[name] = 2 * heads * tokens * tokens * width
                self.input_elements[name] = 3 * heads * tokens * width
            self.ops[name] = self.ops.get(name, 0) + attention_accumulates(q, k, v)
        return hook


def _active_steps(model: Spikformer) -> dict[str, int | None]:
    """Steps each LIF layer runs (its DTS T_l), None when it runs the whole window."""
    return {name: lif.active_steps for name, (lif, _group) in model.lif_layers().items()}


def _synapse_active_steps(model: Spikformer, lif_steps: dict[str, int | None], time_steps: int) -> dict[str, int | None]:
    """A layer fed only by masked LIF layers receives nothing after the last of them stops."""
    active = {}
    for layer, sources in model.spike_sources().items():
        steps = [lif_steps.get(source) for source in sources]
        if all(s is not None for s in steps):
            live = min(steps) if layer.endswith(".product") else max(steps)  # a product needs q, k and v
            active[layer] = live if live < time_steps else None
    return active


def simulate_spikformer(model: Spikformer, data: LabeledData, time_steps: int, *, batch_size: int = 256,
                        device: torch.device | str = "cpu", progress: ProgressFn | None = None) -> SimulationResult:
    """Run ``model`` for ``time_steps`` steps on ``data``: accuracy after every step, spikes and work per layer."""
    if time_steps <= 0:
        raise ConfigError(f"Time steps T must be positive, got {time_steps}.")
    device = torch.device(device)
    model.eval().to(device)
    recorder = _Recorder(model, time_steps)
    by_sample = []  # [batch, T] bool per batch: right from the readout after steps 1..t
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for x, y in data.batches(batch_size):
                x, y = x.to(device), y.to(device)
                running = model(x, time_steps).cumsum(0)  # the argmax of the mean equals that of the sum
                by_sample.append((running.argmax(-1) == y.unsqueeze(0)).T.cpu())
                if progress is not None:
                    progress(len(y))
    finally:
        recorder.remove()
    wall = time.perf_counter() - start
    lif_steps = _active_steps(model)
    synapse_steps = _synapse_active_steps(model, lif_steps, time_steps)
    lifs = dict(model.lif_layers())
    neuron_layers = [
        NeuronLayerStats(name=name, kind="lif", neurons=recorder.neurons[name], threshold_mean=lifs[name][0].threshold,
                         time_steps=time_steps, spikes_per_step=recorder.spikes[name].cpu().numpy(),
                         active_steps=None if lif_steps[name] is None else min(lif_steps[name], time_steps))
        for name in recorder.spikes]
    synaptic_layers = [
        SynapticLayerStats(name=name, kind=recorder.kind[name], spiking_input=recorder.spiking_input[name],
                           macs_per_sample_dense=recorder.dense[name], input_elements=recorder.input_elements[name],
                           time_steps=time_steps,
                           ops_per_step=(recorder.ops[name].cpu().numpy() if name in recorder.ops
                                         else np.zeros(time_steps)),
                           active_steps=synapse_steps.get(name))
        for name in recorder.dense]
    correct_by_sample = torch.cat(by_sample).numpy() if by_sample else np.zeros((0, time_steps), dtype=bool)
    return SimulationResult(samples=len(data), time_steps=time_steps, correct_per_step=correct_by_sample.sum(0),
                            neuron_layers=neuron_layers, synaptic_layers=synaptic_layers, wall_time_s=wall,
                            correct_by_sample=correct_by_sample)
