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

Cost: each measurement resumes from the recorded output of the finished prefix (engine/replay.py) instead of
simulating from the input, so a calibration simulates each layer a fixed number of times: linear in depth.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.fx

from ..engine import Engine, Resume, TimePlan
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
    every = [op for op in engine.program.neuron_ops if op.kind == "neuron"]
    names = [op.name for op in every]
    if start is not None and start not in names:
        raise ValueError(f"calibrate: no IF layer named {start!r}")
    first = names.index(start) if start is not None else 0
    layers = every[first:]
    nodes = {node.name: node for node in engine.graph.graph.nodes}
    segments = {op.name: Segment(engine.graph, nodes[op.name]) for op in layers} if mode == "weights" else {}
    sources = {name: [node.name for node in segment.sources] for name, segment in segments.items()}
    resume_points = _resume_points(engine, layers, every[first - 1].name if first else None, segments)
    order = {op.name: index for index, op in enumerate(engine.program.ops)}

    def still_read(index: int) -> set[str]:
        """Weight calibration reads its sources' rates: a source a resume point has passed stays in its traces."""
        return {name for op in layers[index:] for name in sources.get(op.name, [])}

    resume = None
    if resume_points[0] is not None:
        resume, _ = engine.resume_after(x, plan, resume_points[0], keep=still_read(0))

    def rates(resume: Resume | None, *names: str) -> dict[str, torch.Tensor]:
        """The time-averaged outputs of the neuron layers ``names``, from the traces or a run to the last one."""
        replayed = resume.traces if resume is not None else {}
        run = [name for name in names if name not in replayed]
        with torch.no_grad():  # else every step's tensors stay alive in an autograd graph through the weights
            recorded = engine.run_batch(x, None, plan, record=run, until=run[-1], resume=resume)["recorded"]
        summed = {name: replayed[name].total() if name in replayed else recorded[name] for name in names}
        return {name: summed[name] / windows[name] for name in names}

    log: list[dict] = []
    for index, op in enumerate(layers):
        neuron: IFNeuron = op.module
        target = ann[op.name]
        segment = segments.get(op.name)
        measured = rates(resume, *dict.fromkeys(sources.get(op.name, []) + [op.name]))
        rate = measured[op.name]
        entry = {"layer": op.name, "channel_gap_before": _channel_gap(rate, target),
                 "neuron_gap_before": _neuron_gap(rate, target)}
        log.append(entry)
        if segment is not None and segment.weighted:
            values = {name: measured[name] for name in sources[op.name]} | {node.name: x for node in segment.inputs}
            entry.update(fit_layer_weights(segment, neuron, values, target, windows[op.name], weight_steps, weight_lr))
            rate = rates(resume, op.name)[op.name]
        channels = target.shape[1]
        if neuron.bias.dim() == 0 or neuron.bias.numel() != channels:
            neuron.bias = neuron.bias.expand(channels).clone() if neuron.bias.dim() == 0 else neuron.bias
        neuron.bias -= _channel_mean(rate) - _channel_mean(target)
        if mode in ("advanced", "weights"):
            rate = rates(resume, op.name)[op.name]
            neuron.v_offset = neuron.v_offset + windows[op.name] * (target.mean(0) - rate.mean(0))
        # the calibrated layer measured once more, in the run that records what the next layer resumes from
        following = resume_points[index + 1] if index + 1 < len(layers) else None
        if following is None:  # the last layer, or the next one runs from the input
            after = rates(resume, op.name)[op.name]
            resume = None
        else:
            # resuming before the current point (a refitted synapse computed early) needs a run from the input
            forward = resume is None or order[following] >= order[resume.after]
            resume, recorded = engine.resume_after(x, plan, following, resume if forward else None,
                                                   keep=still_read(index + 1), record=[op.name], until=op.name)
            after = recorded[op.name] / windows[op.name]
        _finish_entry(entry, after, target)
        if progress is not None:
            progress(1)
    return log


def _resume_points(engine: Engine, layers: list, before_first: str | None, segments: dict[str, Segment]
                   ) -> list[str | None]:
    """Per layer to calibrate, the op after which its measurements resume (None: from the input).

    Everything up to the previous neuron layer is final when a layer is calibrated, so that is the point; when
    weight calibration refits a temporal synapse the program computes before it, the point moves back to just
    before that synapse (a static one is computed again by every run anyway). Static ops (constants can sit
    anywhere in the program) are stepped back over, down to a neuron layer at worst."""
    ops = engine.program.ops
    order = {op.name: index for index, op in enumerate(ops)}
    points: list[str | None] = []
    previous = before_first
    for op in layers:
        refitted = [order[node.name] for node in segments[op.name].weighted if not ops[order[node.name]].static] \
            if op.name in segments else []
        point = -1 if previous is None else min([order[previous]] + [index - 1 for index in refitted])
        while point >= 0 and ops[point].static:  # a resume point is a temporal op (constants sit anywhere)
            point -= 1
        points.append(ops[point].name if point >= 0 else None)
        previous = op.name
    return points


def _finish_entry(entry: dict, rate: torch.Tensor, target: torch.Tensor) -> None:
    entry["channel_gap_after"] = _channel_gap(rate, target)
    entry["neuron_gap_after"] = _neuron_gap(rate, target)
