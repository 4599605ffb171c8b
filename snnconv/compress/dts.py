"""DTS inside `snnconv compress`: learn time masks, evaluate, and write ``dts.csv`` / ``dts.md``."""
from __future__ import annotations

from pathlib import Path

from ..api import Evaluation, evaluate
from ..engine import Engine
from ..metrics import load_energy_model, summarize
from ..metrics.summary import layer_spikes_per_sample, reduction_at_equal_accuracy, steps_of_equal_accuracy
from ..stages.dts import DtsConfig, DtsResult, train_time_masks
from ..stages.teas import consumer_synapses
from .tables import quantity_table, write_csv

DTS_COLUMNS = (
    "layer", "neurons", "input_similarity_first_vs_later", "suggested_for_mask_loss", "penalized",
    "time_steps_max", "time_steps_dts", "spikes_per_sample_uniform", "spikes_per_sample_dts",
    "synaptic_ops_per_sample_uniform", "synaptic_ops_per_sample_dts",
)


def apply_dts(context, config: DtsConfig, *, checkpoint: Path | None = None, resume: bool = False):
    """Train the masks (and weights) on the calibration data and evaluate the masked network (see snnconv.compress)."""
    from . import MethodOutcome
    network = context.network
    context.note(f"training time masks on {len(context.calibration)} calibration samples")
    result = train_time_masks(network, context.calibration, config, checkpoint=checkpoint, resume=resume,
                              progress=context.progress)
    compressed = evaluate(network, context.evaluation_data, context.simulation, progress=context.progress)
    rows = dts_rows(network, result, context.uniform, compressed)
    extra = dts_summary(result, config, context.uniform, compressed, load_energy_model(context.energy),
                        len(context.calibration))
    return MethodOutcome(network=network, evaluation=compressed, rows=rows, extra_summary=extra,
                         write_tables=lambda directory: write_dts_tables(directory, rows, extra, result),
                         details=result)


def _consumer_ops(evaluation: Evaluation, consumers: list[str]) -> float:
    sim = evaluation.simulation
    ops = {layer.name: layer.synaptic_ops / max(sim.samples, 1) for layer in sim.synaptic_layers}
    return sum(ops.get(name, 0.0) for name in consumers)


def dts_rows(network, result: DtsResult, uniform: Evaluation, compressed: Evaluation) -> list[dict]:
    consumers = consumer_synapses(Engine(network.graph, next(network.graph.parameters()).device))
    before = {layer.name: layer for layer in uniform.simulation.neuron_layers}
    after = {layer.name: layer for layer in compressed.simulation.neuron_layers}
    sensitivity = {s.name: s for s in result.sensitivity}
    rows = []
    for name, steps in result.layer_steps.items():
        rows.append({
            "layer": name, "neurons": after[name].neurons,
            "input_similarity_first_vs_later": sensitivity[name].similarity,
            "suggested_for_mask_loss": sensitivity[name].suggested, "penalized": name in result.penalized,
            "time_steps_max": result.max_steps, "time_steps_dts": steps,
            "spikes_per_sample_uniform": layer_spikes_per_sample(uniform.simulation, before[name],
                                                                 uniform.simulation.time_steps),
            "spikes_per_sample_dts": layer_spikes_per_sample(compressed.simulation, after[name],
                                                             compressed.simulation.time_steps),
            "synaptic_ops_per_sample_uniform": _consumer_ops(uniform, consumers[name]),
            "synaptic_ops_per_sample_dts": _consumer_ops(compressed, consumers[name]),
        })
    return rows


def dts_summary(result: DtsResult, config: DtsConfig, uniform: Evaluation, compressed: Evaluation, model,
                train_samples: int) -> dict:
    before = summarize(uniform.simulation, uniform.ann, model)
    after = summarize(compressed.simulation, compressed.ann, model)
    matching = steps_of_equal_accuracy(uniform.simulation, after["snn_accuracy_pct"])
    # every sample runs the same masked layers, so each costs the average T
    reduction = reduction_at_equal_accuracy(uniform.simulation, compressed.simulation.correct_by_sample[:, -1],
                                            after["avg_time_steps"], matching)
    losses = result.log.epoch_losses
    return {
        "uniform_time_steps": result.max_steps,
        "uniform_snn_accuracy_pct": before["snn_accuracy_pct"],
        "uniform_synaptic_ops_per_sample": before["synaptic_ops_per_sample"],
        "uniform_energy_pj_per_sample_snn": before["energy_pj_per_sample_snn"],
        "uniform_steps_of_equal_accuracy": matching,
        **reduction,
        "dts_crossing": "prefix",
        "dts_initial_time_steps": result.initial_steps,
        "dts_mask_weight": config.mask_weight,
        "dts_penalized_layers": len(result.penalized),
        "dts_groups": " ".join(config.groups),
        "dts_train_samples": train_samples,
        "dts_epochs": config.train.epochs,
        "dts_loss_first_epoch": losses[0] if losses else None,
        "dts_loss_last_epoch": losses[-1] if losses else None,
    }


def _count(value: float | None) -> str:
    """A per-sample count; '—' where a layer's consumers are not its own (a spiking transformer's residual stream)."""
    return "—" if value is None else f"{value:,.0f}"


def write_dts_tables(directory: Path, rows: list[dict], extra: dict, result: DtsResult) -> dict[str, Path]:
    csv_path = write_csv(directory / "dts.csv", DTS_COLUMNS, rows)
    md = directory / "dts.md"
    header = ["layer", "neurons", "input similarity step 1 vs later", "suggested", "penalized", "T_l",
              "spikes/sample uniform", "spikes/sample DTS", "syn. ops/sample uniform", "syn. ops/sample DTS"]
    lines = ["# DTS learned time steps", "",
             f"T_max = {result.max_steps}; each layer keeps its first T_l steps (prefix crossing, no re-timing); "
             f"average T = {result.average_steps:.2f} steps. Mask loss on {len(result.penalized)} of "
             f"{len(rows)} layers. Definitions: docs/dts.md and docs/metrics.md.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["layer"], f"{r['neurons']:,}", f"{r['input_similarity_first_vs_later']:.4f}",
            "yes" if r["suggested_for_mask_loss"] else "no", "yes" if r["penalized"] else "no",
            str(r["time_steps_dts"]), f"{r['spikes_per_sample_uniform']:,.0f}", f"{r['spikes_per_sample_dts']:,.0f}",
            _count(r["synaptic_ops_per_sample_uniform"]), _count(r["synaptic_ops_per_sample_dts"])]) + " |")
    lines += ["", *quantity_table(extra)]
    md.write_text("\n".join(lines) + "\n")
    return {"dts.csv": csv_path, "dts.md": md}
