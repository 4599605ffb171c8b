"""Post-conversion calibration of Li et al. 2021 ("A Free Lunch From ANN", ICML), layer by layer.

Each neuron layer l, in network order, is simulated for T steps on a calibration batch with the
layers before it already calibrated; its time-averaged output s_l = (sum_t theta s_l[t]) / T is
compared with the ANN's activation a_l on the same batch.

- light (bias calibration):  b_l <- b_l - (mean_c(s_l) - mean_c(a_l)), means per channel over samples
  and positions; b_l is a current added to the neuron at every step, the same as shifting the bias of
  the layer feeding it.
- advanced (bias, then potential calibration): after the bias step, V_l(0) <- V_l(0) + T (mean_N(a_l) -
  mean_N(s_l)) per neuron (means over samples only), which corrects the charge a neuron is missing
  over the window.
- weights (weight, then bias, then potential calibration): before the bias step, the conv / linear layers
  feeding layer l are refitted to the ANN from the SNN's real inputs (stages/weight_calibration.py).
  The network's weights then differ from the ANN's; the caller keeps the ANN's (SpikingNetwork.ann_weights).

All are tied to the T they were computed for; the manifest records it. With per-layer windows T_l
(``layer_steps``, TEAS) each layer is calibrated over its own window: its rate is its summed output / T_l
and the potential correction is T_l (mean_N(a_l) - mean_N(s_l)). ``start`` names the first layer to
calibrate: the layers before it (in network order, so none of them reads its spikes) keep their corrections,
which TEAS uses when only the layers from the first cut one on see a different window.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.fx

from ..engine import Engine, TimePlan
from ..neurons import IFNeuron
from .weight_calibration import Segment, fit_layer_weights


def _ann_activations(graph: torch.fx.GraphModule, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ANN activation at every IF layer (the graph called directly computes the ANN)."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for node in graph.graph.nodes:
        if node.op == "call_module" and isinstance(graph.get_submodule(node.target), IFNeuron):
            handles.append(graph.get_submodule(node.target).register_forward_hook(
                lambda _m, _i, out, name=node.name: outputs.__setitem__(name, out.detach())))
    try:
        with torch.no_grad():
            graph(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _channel_mean(t: torch.Tensor) -> torch.Tensor:
    dims = [0] + list(range(2, t.dim()))
    return t.mean(dim=dims)


def _channel_gap(rate: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over channels of |mean_c(SNN rate) - mean_c(ANN activation)|, in activation units."""
    return float((_channel_mean(rate) - _channel_mean(target)).abs().mean())


def _neuron_gap(rate: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over neurons of |mean over samples of (SNN rate - ANN activation)|, in activation units."""
    return float((rate.mean(0) - target.mean(0)).abs().mean())


def calibrate(engine: Engine, x: torch.Tensor, time_steps: int, mode: str, chunk_steps: int = 8,
              progress: Callable[[int], None] | None = None, layer_steps: dict[str, int] | None = None,
              timing: str = "linear", reference: torch.fx.GraphModule | None = None, weight_steps: int = 200,
              weight_lr: float = 1e-3, start: str | None = None) -> list[dict]:
    """Calibrate the IF layers of ``engine.graph`` in place; returns per layer the channel gap before and after.

    ``timing``: how spikes are re-timed between the ``layer_steps`` windows (docs/teas.md, "5. Execute").
    ``reference``: the ANN the targets come from, when ``engine.graph``'s weights are no longer the ANN's.
    ``weight_steps`` / ``weight_lr``: Adam steps and peak learning rate of weight calibration.
    ``start``: the first layer calibrated (default: the first of the network); the log covers it and the rest."""
    x = x.to(engine.device)
    plan = TimePlan.per_layer(time_steps, layer_steps, chunk_steps, timing=timing)
    windows = engine.windows(plan)
    ann = _ann_activations(reference if reference is not None else engine.graph, x)
    layers = [op for op in engine.program.neuron_ops if op.kind == "neuron"]
    if start is not None:
        names = [op.name for op in layers]
        if start not in names:
            raise ValueError(f"calibrate: no IF layer named {start!r}")
        layers = layers[names.index(start):]
    nodes = {node.name: node for node in engine.graph.graph.nodes}

    def rates(*names: str) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # else every step's tensors stay alive in an autograd graph through the weights
            recorded = engine.run_batch(x, None, plan, record=names, until=names[-1])["recorded"]
        return {name: recorded[name] / windows[name] for name in names}

    log: list[dict] = []
    for index, op in enumerate(layers):
        neuron: IFNeuron = op.module
        target = ann[op.name]
        segment = Segment(engine.graph, nodes[op.name]) if mode == "weights" else None
        sources = [node.name for node in segment.sources] if segment is not None else []
        previous = [layers[index - 1].name] if index else []
        # one truncated run measures this layer before, the previous layer after its calibration, and the
        # inputs weight calibration fits to
        measured = rates(*dict.fromkeys(previous + sources + [op.name]))
        if index:
            _finish_entry(log[-1], measured[previous[0]], ann[previous[0]])
        rate = measured[op.name]
        entry = {"layer": op.name, "channel_gap_before": _channel_gap(rate, target),
                 "neuron_gap_before": _neuron_gap(rate, target)}
        log.append(entry)
        if segment is not None and segment.weighted:
            values = {name: measured[name] for name in sources} | {node.name: x for node in segment.inputs}
            entry.update(fit_layer_weights(segment, neuron, values, target, windows[op.name], weight_steps, weight_lr))
            rate = rates(op.name)[op.name]
        channels = target.shape[1]
        if neuron.bias.dim() == 0 or neuron.bias.numel() != channels:
            neuron.bias = neuron.bias.expand(channels).clone() if neuron.bias.dim() == 0 else neuron.bias
        neuron.bias -= _channel_mean(rate) - _channel_mean(target)
        if mode in ("advanced", "weights"):
            rate = rates(op.name)[op.name]
            neuron.v_offset = neuron.v_offset + windows[op.name] * (target.mean(0) - rate.mean(0))
        if progress is not None:
            progress(1)
    if layers:
        last = layers[-1].name
        _finish_entry(log[-1], rates(last)[last], ann[last])
    return log


def _finish_entry(entry: dict, rate: torch.Tensor, target: torch.Tensor) -> None:
    entry["channel_gap_after"] = _channel_gap(rate, target)
    entry["neuron_gap_after"] = _neuron_gap(rate, target)
