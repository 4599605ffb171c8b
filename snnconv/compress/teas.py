"""TEAS inside `snnconv compress`: allocate per-layer T_l, evaluate, and write ``teas.csv`` / ``teas.md``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..api import Evaluation, evaluate
from ..engine import Engine
from ..metrics import load_energy_model, summarize
from ..metrics.summary import (EQUAL_ACCURACY_POINTS, exceeds, layer_spikes_per_sample,
                               reduction_at_equal_accuracy, steps_of_equal_accuracy)
from ..stages.finetune import finetune
from ..stages.teas import TeasConfig, TeasResult, consumer_synapses, teas
from .tables import quantity_table, write_csv

TEAS_COLUMNS = (
    "layer", "neurons", "activity_spikes_per_neuron_per_step", "first_spike_step", "consumer_params",
    "cost_spikes_x_params", "cut_drop_points", "cut_divergence", "noise_drop_points", "noise_divergence",
    "time_steps_uniform", "time_steps_teas", "threshold_retuned", "spikes_per_sample_uniform", "spikes_per_sample_teas",
    "synaptic_ops_per_sample_uniform", "synaptic_ops_per_sample_teas",
)


def uniform_steps_matching(evaluation: Evaluation, accuracy: float,
                           tolerance: float = EQUAL_ACCURACY_POINTS) -> int | None:
    """Smallest uniform t whose accuracy is within ``tolerance`` points of ``accuracy`` (None if no t is)."""
    return steps_of_equal_accuracy(evaluation.simulation, accuracy, tolerance)


def apply_teas(context, config: TeasConfig, *, checkpoint: Path | None = None, resume: bool = False):
    """Allocate T_l on the calibration data, optionally fine-tune with them fixed, and evaluate the network
    (see snnconv.compress)."""
    from . import MethodOutcome
    network, simulation = context.network, context.simulation
    result = teas(network, context.calibration, config, holdout=context.holdout, time_steps=network.time_steps,
                  batch_size=simulation.batch_size, chunk_steps=simulation.chunk_steps, device=str(context.device),
                  progress=context.note)
    network.layer_time_steps = {k: v for k, v in result.layer_time_steps.items() if v != network.time_steps}
    network.timing = config.timing
    tuned = {}
    if config.finetune:
        allocated = evaluate(network, context.evaluation_data, simulation, progress=context.progress)
        context.note(f"fine-tuning with T_l fixed on {len(context.calibration)} calibration samples")
        log = finetune(network, context.calibration, config.tuning, layer_costs={p.name: p.cost for p in result.profiles},
                       checkpoint=checkpoint, resume=resume, progress=context.progress)
        before = summarize(allocated.simulation, allocated.ann, load_energy_model(context.energy))
        tuned = {"teas_accuracy_before_finetune_pct": before["snn_accuracy_pct"],
                 "teas_synaptic_ops_per_sample_before_finetune": before["synaptic_ops_per_sample"],
                 "finetune_epochs": config.tuning.train.epochs, "finetune_samples": len(context.calibration),
                 "finetune_loss": config.tuning.loss,
                 "finetune_loss_first_epoch": log.epoch_losses[0] if log.epoch_losses else None,
                 "finetune_loss_last_epoch": log.epoch_losses[-1] if log.epoch_losses else None}
    compressed = evaluate(network, context.evaluation_data, simulation, progress=context.progress)
    rows = teas_rows(network, result, context.uniform, compressed)
    extra = {**teas_summary(result, context.uniform, compressed, rows, load_energy_model(context.energy)),
             "teas_finetuned": config.finetune, **tuned}
    extra["teas_accuracy_budget_points"] = None if config.avg_steps_budget is not None else config.accuracy_budget
    extra["teas_budget_exceeded"] = (extra["teas_accuracy_budget_points"] is not None
                                     and exceeds(extra["teas_holdout_lost_points"], config.accuracy_budget))
    if extra["teas_budget_exceeded"]:
        context.note(budget_exceeded_text(extra))
    return MethodOutcome(network=network, evaluation=compressed, rows=rows, extra_summary=extra,
                         write_tables=lambda directory: write_teas_tables(directory, rows, extra, result),
                         details=result)


def _synapse_ops(evaluation: Evaluation) -> dict[str, float]:
    sim = evaluation.simulation
    return {layer.name: layer.synaptic_ops / max(sim.samples, 1) for layer in sim.synaptic_layers}


def teas_rows(network, result: TeasResult, uniform: Evaluation, compressed: Evaluation) -> list[dict]:
    consumers = consumer_synapses(Engine(network.graph, next(network.graph.parameters()).device))
    ops_before, ops_after = _synapse_ops(uniform), _synapse_ops(compressed)
    before = {layer.name: layer for layer in uniform.simulation.neuron_layers}
    after = {layer.name: layer for layer in compressed.simulation.neuron_layers}
    rows = []
    for prof in result.profiles:
        rows.append({
            "layer": prof.name, "neurons": prof.neurons, "activity_spikes_per_neuron_per_step": prof.activity,
            "first_spike_step": prof.first_spike_step, "consumer_params": prof.params,
            "cost_spikes_x_params": prof.cost, "cut_drop_points": prof.cut_drop_points,
            "cut_divergence": prof.cut_divergence, "noise_drop_points": prof.noise_drop_points,
            "noise_divergence": prof.noise_divergence, "time_steps_uniform": result.base_steps,
            "time_steps_teas": prof.time_steps,
            "threshold_retuned": prof.name in result.retuned_thresholds,
            "spikes_per_sample_uniform": layer_spikes_per_sample(uniform.simulation, before[prof.name],
                                                                 uniform.simulation.time_steps),
            "spikes_per_sample_teas": layer_spikes_per_sample(compressed.simulation, after[prof.name],
                                                              compressed.simulation.time_steps),
            "synaptic_ops_per_sample_uniform": sum(ops_before.get(s, 0.0) for s in consumers[prof.name]),
            "synaptic_ops_per_sample_teas": sum(ops_after.get(s, 0.0) for s in consumers[prof.name]),
        })
    return rows


def teas_summary(result: TeasResult, uniform: Evaluation, compressed: Evaluation, rows: list[dict], model) -> dict:
    before = summarize(uniform.simulation, uniform.ann, model)
    after = summarize(compressed.simulation, compressed.ann, model)
    weights = np.array([r["synaptic_ops_per_sample_uniform"] for r in rows], dtype=np.float64)
    steps = np.array([r["time_steps_teas"] for r in rows], dtype=np.float64)
    weighted = float((weights * steps).sum() / weights.sum()) if weights.sum() > 0 else float("nan")
    matching = uniform_steps_matching(uniform, after["snn_accuracy_pct"])
    reduction = reduction_at_equal_accuracy(uniform.simulation, compressed.simulation.correct_by_sample[:, -1],
                                            after["avg_time_steps"], matching)
    low, high = result.holdout_lost_points_interval
    return {
        "uniform_time_steps": result.base_steps,
        "uniform_snn_accuracy_pct": before["snn_accuracy_pct"],
        "uniform_synaptic_ops_per_sample": before["synaptic_ops_per_sample"],
        "uniform_energy_pj_per_sample_snn": before["energy_pj_per_sample_snn"],
        "teas_avg_time_steps_op_weighted": weighted,
        "uniform_steps_of_equal_accuracy": matching,
        **reduction,
        "teas_holdout_accuracy_uniform_pct": result.uniform_accuracy_pct,
        "teas_holdout_accuracy_pct": result.final_accuracy_pct,
        "teas_holdout_lost_points": result.uniform_accuracy_pct - result.final_accuracy_pct,
        "teas_holdout_lost_points_lower": low,
        "teas_holdout_lost_points_upper": high,
        "teas_holdout_samples": result.holdout_samples,
        "teas_holdout_data": result.holdout_data,
        "teas_allocation_simulations": result.evaluations,
        "teas_recalibrated": result.recalibrated,
        "teas_calibrated_trials": result.calibrated_trials,
        "teas_retuned_layers": len(result.retuned_thresholds),
        "teas_timing": result.timing,
        "teas_crossings": len(result.crossings),
        "teas_crossings_linear": sum(c.timing == "linear" for c in result.crossings),
        **{f"rho_activity_vs_{key}": value for key, value in result.correlation.items()},
    }


def budget_exceeded_text(extra: dict) -> str:
    """Said when the finished allocation lost more on the held-out split than the budget its moves kept to."""
    why = (" Its moves were measured before the calibration the finished network got (--uncalibrated-trials), "
           "which can move accuracy either way; the default calibrated trials measure them as the result runs."
           if not extra["teas_calibrated_trials"] else "")
    return (f"The allocated network lost {extra['teas_holdout_lost_points']:.2f} points on the held-out split, "
            f"more than the {extra['teas_accuracy_budget_points']:g}-point budget every accepted move kept to.{why}")


def write_teas_tables(directory: Path, rows: list[dict], extra: dict, result: TeasResult) -> dict[str, Path]:
    csv_path = write_csv(directory / "teas.csv", TEAS_COLUMNS, rows)
    md = directory / "teas.md"
    header = ["layer", "Act (spikes/neuron/step)", "#Para", "cut drop (points)", "cut TV", "noise drop (points)",
              "noise TV", "T_l", "spikes/sample uniform", "spikes/sample TEAS", "syn. ops/sample uniform",
              "syn. ops/sample TEAS"]
    lines = ["# TEAS per-layer time steps", "",
             f"Uniform T = {result.base_steps}; sensitivity probe: one layer at T_l = {result.probe_steps}, or "
             f"noise on its membrane; held-out split: {result.holdout_samples} samples of {result.holdout_data}, "
             f"on which the allocation lost {extra['teas_holdout_lost_points']:.2f} points (90 % interval "
             f"{extra['teas_holdout_lost_points_lower']:.2f} to {extra['teas_holdout_lost_points_upper']:.2f}). "
             "Definitions: docs/teas.md.", "",
             *([f"**{budget_exceeded_text(extra)}**", ""] if extra.get("teas_budget_exceeded") else []),
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["layer"], f"{r['activity_spikes_per_neuron_per_step']:.4f}", str(r["consumer_params"]),
            f"{r['cut_drop_points']:+.2f}", f"{r['cut_divergence']:.4f}", f"{r['noise_drop_points']:+.2f}",
            f"{r['noise_divergence']:.4f}", str(r["time_steps_teas"]), f"{r['spikes_per_sample_uniform']:,.0f}",
            f"{r['spikes_per_sample_teas']:,.0f}", f"{r['synaptic_ops_per_sample_uniform']:,.0f}",
            f"{r['synaptic_ops_per_sample_teas']:,.0f}"]) + " |")
    lines += ["", *quantity_table(extra), "", *crossing_lines(result)]
    lines += ["", "Allocation trace (held-out split):", "", "| layer | T_l from | to | accuracy (%) | syn. ops/sample | accepted |",
              "|---|---|---|---|---|---|"]
    for step in result.trace:
        lines.append(f"| {step.layer} | {step.from_steps} | {step.to_steps} | {step.accuracy_pct:.2f} | "
                     f"{step.synaptic_ops_per_sample:,.0f} | {'yes' if step.accepted else 'no (budget)'} |")
    md.write_text("\n".join(lines) + "\n")
    return {"teas.csv": csv_path, "teas.md": md}


SIGNALS = {"spikes": "IF spikes", "gate": "max-pool gate output", "computed": "computed (pooled/added spikes, current)"}


def crossing_lines(result: TeasResult) -> list[str]:
    """Markdown: every edge between different windows and the re-timing it got, so that a linear fallback
    under sub-step timing (a signal that is not an IF layer's spikes) is visible."""
    lines = [f"Spike timing between windows: {result.timing} (docs/teas.md, \"5. Execute\"). Sub-step timing applies "
             "to IF layers' spikes only; other signals crossing windows use the linear map.", ""]
    if not result.crossings:
        return lines + ["No signal crosses between windows of different lengths."]
    lines += ["| source | steps | consumer | steps | signal | map |", "|---|---|---|---|---|---|"]
    for c in result.crossings:
        lines.append(f"| {c.source} | {c.source_steps} | {c.consumer} | {c.target_steps} | {SIGNALS[c.signal]} | "
                     f"{c.timing} |")
    return lines
