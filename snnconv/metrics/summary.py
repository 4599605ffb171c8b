"""Headline numbers, per-layer rows and the accuracy/cost sweep over t, as plain dicts for CSV and reports.

Keys carry their unit (``_pct``, ``_pj_per_sample``, ``_per_sample``) and are stable: docs/metrics.md
defines each one, and tests pin the lists. Counts are per evaluated sample; "steps 1..t" means the SNN
read out after t time steps.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..results import AnnResult, NeuronLayerStats, SimulationResult
from .energy import (NEUROMORPHIC_PLATFORMS, EnergyModel, check_time_step, energy_breakdown, layer_steps_at,
                     layer_active_steps, layer_work, mean_active_steps, neuromorphic_energy)

# Layers that forward spikes of an upstream neuron layer (they do not integrate a membrane); they get
# their own per-layer rows but are left out of the network's neuron, spike and membrane-update totals.
SPIKE_ROUTING_KINDS = frozenset({"maxpool_gate"})
SIGNED_KINDS = frozenset({"signed_if"})
EQUAL_ACCURACY_POINTS = 0.1  # "equal accuracy" in every report: within this many points
ROUNDING_POINTS = 1e-9  # slack for accuracies computed as float ratios of counts (first_step_within)

SUMMARY_KEYS = (
    "samples", "ann_accuracy_pct", "snn_accuracy_pct", "accuracy_drop_points", "time_steps", "avg_time_steps",
    "spikes_per_sample", "spikes_per_neuron", "neurons", "spike_values", "synaptic_ops_per_sample",
    "macs_per_sample_snn", "zero_checks_per_sample", "macs_per_sample_ann", "energy_preset", "energy_pj_per_sample_snn",
    "energy_pj_per_sample_ann", "energy_ratio_ann_over_snn", "membrane_updates_per_sample",
    "activation_sparsity", "exit_accuracy_pct", "avg_exit_time_steps",
)
LAYER_COLUMNS = (
    "layer", "type", "input", "neurons", "threshold", "time_steps", "firing_rate_spikes_per_neuron_per_step",
    "spikes_per_sample", "synaptic_ops_per_sample", "macs_per_sample", "zero_checks_per_sample",
    "energy_pj_per_sample",
)
SWEEP_COLUMNS = (
    "time_steps", "snn_accuracy_pct", "ann_accuracy_pct", "spikes_per_sample", "synaptic_ops_per_sample",
    "energy_pj_per_sample_snn", "energy_ratio_ann_over_snn",
) + tuple(f"neuromorphic_energy_{platform}_rel_full_t" for platform in NEUROMORPHIC_PLATFORMS)


def spiking_neuron_layers(sim: SimulationResult) -> list[NeuronLayerStats]:
    """Neuron layers that integrate and fire (max-pool gates excluded, see SPIKE_ROUTING_KINDS)."""
    return [layer for layer in sim.neuron_layers if layer.kind not in SPIKE_ROUTING_KINDS]


def layer_spikes_per_sample(sim: SimulationResult, layer: NeuronLayerStats, t: int) -> float:
    """Spikes one layer emitted while the readout ran steps 1..t, per sample."""
    steps = layer_steps_at(t, layer.time_steps, sim.time_steps)
    return float(np.asarray(layer.spikes_per_step)[:steps].sum()) / max(sim.samples, 1)


def spikes_per_sample(sim: SimulationResult, t: int) -> float:
    """Spikes of all integrate-and-fire layers during steps 1..t, per sample."""
    return sum(layer_spikes_per_sample(sim, layer, t) for layer in spiking_neuron_layers(sim))


def membrane_updates_per_sample(sim: SimulationResult, t: int) -> float:
    """Neurons x steps each layer ran (dense simulation: every membrane is updated at every step)."""
    return sum(layer.neurons * layer_active_steps(sim, t, layer) for layer in spiking_neuron_layers(sim))


def exceeds(value: float, limit: float) -> bool:
    """``value > limit`` by more than float rounding: a value equal to its limit meets it. A drop of exactly 0.1
    points computed from counts, 100 * 1803 / 2000 - 100 * 1801 / 2000 = 0.10000000000000853, does not exceed 0.1.
    The CLI's gates and the benchmarks' bars both judge by it."""
    return value > limit and not math.isclose(value, limit, rel_tol=1e-9, abs_tol=ROUNDING_POINTS)


def first_step_within(curve_pct: Sequence[float], accuracy_pct: float,
                      tolerance: float = EQUAL_ACCURACY_POINTS) -> int | None:
    """Smallest t whose accuracy ``curve_pct[t - 1]`` reaches ``accuracy_pct`` less ``tolerance`` points: the
    first t as accurate as the target, within the tolerance, or more accurate.

    A gap of exactly ``tolerance`` counts as within. Accuracies are ratios of counts in floating point, where
    for example 100 * 1852 / 2000 (92.6) is below 100 * 1854 / 2000 - 0.1 (92.7 - 0.1), so the comparison
    allows ROUNDING_POINTS; without it an equal-accuracy T came out one or more steps too high."""
    floor = accuracy_pct - tolerance - ROUNDING_POINTS
    return next((t for t, accuracy in enumerate(curve_pct, 1) if accuracy >= floor), None)


def steps_of_equal_accuracy(sim: SimulationResult, accuracy_pct: float,
                            tolerance: float = EQUAL_ACCURACY_POINTS) -> int | None:
    """Smallest t whose accuracy (readout after steps 1..t) is within ``tolerance`` points of ``accuracy_pct``."""
    return first_step_within(sim.accuracy_per_step.tolist(), accuracy_pct, tolerance)


def equal_accuracy_interval(baseline_correct, right, cost, *, resamples: int = 1000, level: float = 0.9,
                            seed: int = 0) -> tuple[float, float]:
    """How sure a reduction "baseline steps of equal accuracy / mean cost" is: its (1 - level) / 2 and
    (1 + level) / 2 percentiles over ``resamples`` bootstrap resamples of the samples.

    ``baseline_correct`` [N, T] says whether the baseline read out after t steps is right on sample i
    (SimulationResult.correct_by_sample), ``right`` [N] whether the compressed network is, and ``cost`` [N] what it
    spent on it (an exit step), or one number when every sample costs the same (an average T). Paired: each
    resample draws the same samples for both networks, so the interval shows how much the ratio owes to which
    samples were drawn, the noise its 0.1-point "equal accuracy" is read through. A resample whose baseline never
    comes within the tolerance counts as equal T = T (the ratio is then a lower bound)."""
    correct = torch.as_tensor(np.asarray(baseline_correct)).double()
    right = torch.as_tensor(np.asarray(right)).double()
    samples, steps = correct.shape
    draws = torch.randint(0, samples, (resamples, samples), generator=torch.Generator().manual_seed(seed))
    draws_of = torch.zeros(resamples, samples, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(resamples, samples, dtype=torch.float64))  # [R, N]: times each sample was drawn
    accuracy_pct = 100.0 * (draws_of @ right) / samples
    if np.ndim(cost) == 0:  # one cost for every sample is every resample's mean as it is
        mean_cost = torch.full((resamples,), float(cost), dtype=torch.float64)
    else:
        mean_cost = (draws_of @ torch.as_tensor(np.asarray(cost, dtype=np.float64))) / samples
    curves_pct = 100.0 * (draws_of @ correct) / samples  # [R, T]
    reaches = curves_pct >= (accuracy_pct - EQUAL_ACCURACY_POINTS - ROUNDING_POINTS).unsqueeze(1)
    equal_t = torch.where(reaches.any(1), reaches.int().argmax(1) + 1, torch.tensor(steps))
    tails = torch.tensor([(1.0 - level) / 2, (1.0 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(equal_t.double() / mean_cost, tails).tolist()
    return low, high


def lost_points_bounds(right_before, right_after, confidence: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """One-sided bounds, each at ``confidence``, on the points lost, "before - after", by a network right on
    ``right_after`` [N] (or [N, A] for A alternatives) against one right on ``right_before`` [N]: (lower, upper).

    The loss is (b - c) / N, b the samples only the first network gets right and c those only the second does. The
    upper bound is b's Wilson score upper bound minus c's lower bound, each at 1 - (1 - confidence) / 2, so it holds
    with at least ``confidence`` whatever b and c are; the lower bound is the mirror image. Together they are a
    2 confidence - 1 interval (0.95: a 90 % interval). Unlike a bootstrap, the bounds stay honest when no sample
    disagrees: 500 samples with b = c = 0 bound the loss at 0.76 points, not 0."""
    before = torch.as_tensor(np.asarray(right_before)).bool()
    after = torch.as_tensor(np.asarray(right_after)).bool()
    before = before.view(-1, *([1] * (after.dim() - 1)))
    samples = before.shape[0]
    lost = (before & ~after).double().sum(0)
    gained = (~before & after).double().sum(0)
    z = float(torch.special.ndtri(torch.tensor(1.0 - (1.0 - confidence) / 2, dtype=torch.float64)))
    lost_low, lost_high = _wilson(lost, samples, z)
    gained_low, gained_high = _wilson(gained, samples, z)
    return 100.0 * (lost_low - gained_high), 100.0 * (lost_high - gained_low)


def _wilson(count: torch.Tensor, samples: int, z: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Wilson score bounds (lower, upper) of a proportion count / samples with normal quantile ``z``."""
    share = count / samples
    scale = 1.0 + z * z / samples
    center = (share + z * z / (2 * samples)) / scale
    half = z / scale * torch.sqrt(share * (1 - share) / samples + z * z / (4 * samples * samples))
    return (center - half).clamp(min=0.0), (center + half).clamp(max=1.0)


REDUCTION_KEY = "avg_time_steps_reduction_vs_equal_accuracy_x"


def reduction_at_equal_accuracy(baseline: SimulationResult, right, cost, matching: int | None) -> dict:
    """The reduction keys of TEAS, DTS and SEENN reports: ``matching`` (the baseline's steps of equal accuracy) over
    the compressed network's mean ``cost`` (an average T, or each sample's exit step), with its 90 % interval
    (:func:`equal_accuracy_interval` on ``right`` [N]); all None when there is no equal-accuracy T or no cost."""
    mean_cost = float(np.mean(cost))
    if not matching or not mean_cost:
        return dict.fromkeys((REDUCTION_KEY, f"{REDUCTION_KEY}_p5", f"{REDUCTION_KEY}_p95"))
    low, high = equal_accuracy_interval(baseline.correct_by_sample, right, cost)
    return {REDUCTION_KEY: matching / mean_cost, f"{REDUCTION_KEY}_p5": low, f"{REDUCTION_KEY}_p95": high}


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def spike_values(sim: SimulationResult) -> str:
    """"signed" when some layer may emit negative spikes (each counted as one spike), else "binary".

    Reports name the signed mode because it buys accuracy with extra spikes (SPEC section 5)."""
    return "signed" if any(layer.kind in SIGNED_KINDS for layer in sim.neuron_layers) else "binary"


def summarize(sim: SimulationResult, ann: AnnResult, model: EnergyModel, t: int | None = None) -> dict:
    """The headline numbers of the SNN read out after ``t`` steps (default: all T), with the ANN beside it."""
    t = check_time_step(sim, t)
    energy = energy_breakdown(sim, ann, model, t)
    layers = spiking_neuron_layers(sim)
    neurons = sum(layer.neurons for layer in layers)
    spikes = spikes_per_sample(sim, t)
    updates = membrane_updates_per_sample(sim, t)
    snn_accuracy = sim.accuracy_at(t)
    exited = sim.exit_steps is not None and len(sim.exit_steps) > 0
    return {
        "samples": sim.samples,
        "ann_accuracy_pct": ann.accuracy,
        "snn_accuracy_pct": snn_accuracy,
        "accuracy_drop_points": ann.accuracy - snn_accuracy,
        "time_steps": t,
        "avg_time_steps": (float(np.mean([mean_active_steps(sim, t, layer.time_steps, layer.active_steps)
                                          for layer in layers]))
                           if layers else math.nan),
        "spikes_per_sample": spikes,
        "spikes_per_neuron": _ratio(spikes, neurons),
        "neurons": neurons,
        "spike_values": spike_values(sim),
        "synaptic_ops_per_sample": energy.acs_snn,
        "macs_per_sample_snn": round(energy.macs_snn),  # dense MACs: an integer count
        "zero_checks_per_sample": energy.zero_checks_snn,
        "macs_per_sample_ann": round(energy.macs_ann),
        "energy_preset": model.name,
        "energy_pj_per_sample_snn": energy.energy_pj_snn,
        "energy_pj_per_sample_ann": energy.energy_pj_ann,
        "energy_ratio_ann_over_snn": energy.ratio_ann_over_snn,
        "membrane_updates_per_sample": updates,
        "activation_sparsity": 1.0 - _ratio(spikes, updates),
        "exit_accuracy_pct": (100.0 * sim.exit_correct / sim.samples
                              if exited and sim.exit_correct is not None else None),
        "avg_exit_time_steps": float(np.minimum(np.asarray(sim.exit_steps), t).mean()) if exited else None,
    }


def layer_rows(sim: SimulationResult, ann: AnnResult, model: EnergyModel, t: int | None = None) -> list[dict]:
    """One row per neuron layer, then one per weighted layer, each list in the simulation's order.

    Empty cells (None) where a column does not apply: neurons and spikes for weighted layers,
    operations and energy for neuron layers.
    """
    t = check_time_step(sim, t)
    rows = []
    for layer in sim.neuron_layers:
        spikes = layer_spikes_per_sample(sim, layer, t)
        steps = layer_active_steps(sim, t, layer)
        threshold = layer.threshold_mean
        rows.append(_layer_row(
            layer=layer.name, type=layer.kind, input="", neurons=layer.neurons,
            threshold=None if threshold is None or not math.isfinite(threshold) else threshold,
            time_steps=layer.time_steps if layer.active_steps is None else layer.active_steps,
            firing_rate_spikes_per_neuron_per_step=_ratio(spikes, layer.neurons * steps) if layer.neurons else None,
            spikes_per_sample=spikes))
    energy = {row.name: row for row in energy_breakdown(sim, ann, model, t).layers}
    for layer in sim.synaptic_layers:
        macs, acs, zero_checks = layer_work(sim, layer, t)
        rows.append(_layer_row(
            layer=layer.name, type=layer.kind, input="spikes" if layer.spiking_input else "analog",
            time_steps=layer.time_steps if layer.active_steps is None else layer.active_steps,
            synaptic_ops_per_sample=acs if layer.spiking_input else None,
            macs_per_sample=None if layer.spiking_input else round(macs),
            zero_checks_per_sample=zero_checks if layer.spiking_input else None,
            energy_pj_per_sample=energy[layer.name].energy_pj))
    return rows


def _layer_row(**values) -> dict:
    return {column: values.get(column) for column in LAYER_COLUMNS}


def sweep_rows(sim: SimulationResult, ann: AnnResult, model: EnergyModel) -> list[dict]:
    """One row per t = 1..T: accuracy and cost of reading the SNN out after t steps.

    The neuromorphic columns weigh spikes and steps run (mean exit step under an exit policy) against
    the same network read out after all T steps (coefficients from Park et al. DAC 2019, arXiv 1809.03142,
    not re-verified).
    """
    full_spikes = spikes_per_sample(sim, sim.time_steps)
    full_steps = mean_active_steps(sim, sim.time_steps, sim.time_steps)
    rows = []
    for t in range(1, sim.time_steps + 1):
        energy = energy_breakdown(sim, ann, model, t)
        spikes = spikes_per_sample(sim, t)
        steps = mean_active_steps(sim, t, sim.time_steps)
        row = {
            "time_steps": t,
            "snn_accuracy_pct": sim.accuracy_at(t),
            "ann_accuracy_pct": ann.accuracy,
            "spikes_per_sample": spikes,
            "synaptic_ops_per_sample": energy.acs_snn,
            "energy_pj_per_sample_snn": energy.energy_pj_snn,
            "energy_ratio_ann_over_snn": energy.ratio_ann_over_snn,
        }
        for platform in NEUROMORPHIC_PLATFORMS:
            row[f"neuromorphic_energy_{platform}_rel_full_t"] = (
                neuromorphic_energy(spikes, steps, full_spikes, full_steps, platform) if full_spikes > 0 else None)
        rows.append(row)
    return rows
