"""TTFS inside `snnconv compress`: balance, fit kernels, optionally fine-tune, evaluate beside the rate-coded
network, and write ``ttfs.csv`` / ``ttfs.md`` / ``ttfs_spikes.png`` beside the standard reports."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import plots
from ..api import Evaluation, evaluate
from ..config import SimulationConfig
from ..engine.ttfs import TTFSEngine
from ..metrics import load_energy_model, summarize
from ..metrics.energy import NEUROMORPHIC_PLATFORMS, neuromorphic_energy
from ..metrics.summary import layer_spikes_per_sample, spikes_per_sample, steps_of_equal_accuracy
from ..stages.ttfs import (FEW_KERNEL_UPDATES, TTFSConfig, build_ttfs, finetune_ttfs, fit_kernels, kernel_updates,
                           measure_fit, surrogate_predictions)
from .tables import cell, quantity_table, write_csv

TOLERATED_LOSS_POINTS = 1.0  # TTFS below rate coding by more than this (the TTFS bar's 1 point) is worth a sentence

LAYER_COLUMNS = ("layer", "depth", "fire_window_start", "tc", "td", "threshold", "spikes_per_sample",
                 "spikes_per_neuron", "spikes_per_sample_rate_coded", "precision_error", "initial_precision_error",
                 "min_error", "max_error", "below_range_pct")


def apply_ttfs(context, config: TTFSConfig, *, checkpoint: Path | None = None, resume: bool = False):
    """Build the TTFS network from the converted one and evaluate it (see snnconv.compress)."""
    from . import MethodOutcome
    network = build_ttfs(context.network, context.calibration, config)
    initial = measure_fit(network, context.calibration)
    fits = {}
    updates = kernel_updates(len(context.calibration), config)
    if config.fit_epochs > 0:
        context.note(f"fitting kernels: {config.fit_epochs} passes over {len(context.calibration)} samples "
                     f"({updates} updates)")
        fits = {fit.layer: fit for fit in fit_kernels(network, context.calibration, config, progress=context.progress)}
    log = None
    if config.finetune:
        log = finetune_ttfs(network, context.calibration, config, checkpoint=checkpoint, resume=resume,
                            progress=context.progress)
    final = measure_fit(network, context.calibration)
    simulation = SimulationConfig(time_steps=network.time_steps, chunk_steps=context.simulation.chunk_steps,
                                  batch_size=context.simulation.batch_size, device=str(context.device))
    evaluation = evaluate(network, context.evaluation_data, simulation, progress=context.progress)
    agreement = surrogate_agreement(network, context.evaluation_data, simulation.batch_size, context.device)
    model = load_energy_model(context.energy)
    rows = ttfs_rows(network, evaluation, context.uniform, initial, final)
    extra = ttfs_summary(network, config, evaluation, context.uniform, model, agreement,
                         log.epoch_losses if log else None, updates=updates)
    return MethodOutcome(network=network, evaluation=evaluation, rows=rows, extra_summary=extra,
                         write_tables=lambda directory: write_ttfs_tables(directory, rows, extra, evaluation),
                         details=fits)


def few_kernel_updates(ttfs_keys: dict, ttfs_accuracy_pct: float) -> str | None:
    """The sentence the reports carry when the TTFS network is more than 1 point below the rate-coded one and
    kernel fitting made too few updates to move the kernels far from their initial ``--tc``, else None."""
    updates = ttfs_keys.get("ttfs_kernel_updates")
    lost = ttfs_keys["rate_snn_accuracy_pct"] - ttfs_accuracy_pct
    if not updates or updates >= FEW_KERNEL_UPDATES or lost <= TOLERATED_LOSS_POINTS:
        return None
    return (f"TTFS is {lost:.2f} points below the rate-coded network, and kernel fitting made only {updates} "
            f"updates (fewer than {FEW_KERNEL_UPDATES}), so the kernels stayed near their initial --tc: raise "
            "--fit-epochs or --calib-samples (docs/ttfs.md)")


def surrogate_agreement(network, data, batch_size: int, device) -> dict:
    """How often the deployed TTFS network predicts what the surrogate model (what fine-tuning sees) predicts."""
    engine = TTFSEngine(network.graph, network.ttfs, device)
    same = correct = total = 0
    with torch.no_grad():
        for x, y in data.batches(batch_size):
            x, y = x.to(device), y.to(device)
            deployed = engine.run_batch(x)["readout"][-1].argmax(-1)
            surrogate = surrogate_predictions(network, x).argmax(-1)
            same += int((deployed == surrogate).sum())
            correct += int((surrogate == y).sum())
            total += len(y)
    return {"agreement_pct": 100.0 * same / max(total, 1), "surrogate_accuracy_pct": 100.0 * correct / max(total, 1)}


def ttfs_rows(network, evaluation: Evaluation, rate: Evaluation, initial: dict, final: dict) -> list[dict]:
    engine = TTFSEngine(network.graph, network.ttfs)
    sim, rate_sim = evaluation.simulation, rate.simulation
    rate_layers = {layer.name: layer for layer in rate_sim.neuron_layers}
    rows = []
    for layer in sim.neuron_layers:
        kernel = network.ttfs.kernels[layer.name]
        spikes = layer_spikes_per_sample(sim, layer, sim.time_steps)
        rate_layer = rate_layers.get(layer.name)
        rows.append({
            "layer": layer.name, "depth": engine.depth[layer.name],
            "fire_window_start": engine.fire_window[layer.name].start, "tc": kernel.tc, "td": kernel.td,
            "threshold": layer.threshold_mean, "spikes_per_sample": spikes,
            "spikes_per_neuron": spikes / layer.neurons if layer.neurons else None,
            "spikes_per_sample_rate_coded": (layer_spikes_per_sample(rate_sim, rate_layer, rate_sim.time_steps)
                                             if rate_layer else None),
            "precision_error": final[layer.name]["precision_error"],
            "initial_precision_error": initial[layer.name]["precision_error"],
            "min_error": final[layer.name]["min_error"], "max_error": final[layer.name]["max_error"],
            "below_range_pct": final[layer.name]["below_range_pct"],
        })
    return rows


def ttfs_summary(network, config: TTFSConfig, evaluation: Evaluation, rate: Evaluation, model, agreement: dict,
                 epoch_losses: list[float] | None, updates: int) -> dict:
    """Summary keys a TTFS run adds (docs/metrics.md): windows, spike statistics, the rate-coded baseline."""
    sim, rate_sim = evaluation.simulation, rate.simulation
    after = summarize(sim, evaluation.ann, model)
    before = summarize(rate_sim, rate.ann, model)
    spikes = after["spikes_per_sample"]
    neurons = after["neurons"]
    matching = steps_of_equal_accuracy(rate_sim, after["snn_accuracy_pct"])
    rate_spikes_matching = spikes_per_sample(rate_sim, matching) if matching else None
    summary = {
        "ttfs_window_steps": network.ttfs.window,
        "ttfs_fire_start_steps": network.ttfs.fire_start,
        "ttfs_latency_steps": sim.time_steps,
        "ttfs_kernels_fitted": updates > 0,
        "ttfs_kernel_updates": updates,
        "ttfs_finetuned": bool(config.finetune),
        "finetune_loss_first_epoch": epoch_losses[0] if epoch_losses else None,
        "finetune_loss_last_epoch": epoch_losses[-1] if epoch_losses else None,
        "ttfs_most_spikes_per_neuron": sim.most_spikes_per_neuron,
        "ttfs_spike_rate": spikes / (neurons * sim.time_steps) if neurons else None,
        "ttfs_spikes_per_neuron": spikes / neurons if neurons else None,
        "ttfs_surrogate_accuracy_pct": agreement["surrogate_accuracy_pct"],
        "ttfs_surrogate_agreement_pct": agreement["agreement_pct"],
        "rate_time_steps": rate_sim.time_steps,
        "rate_snn_accuracy_pct": before["snn_accuracy_pct"],
        "rate_spikes_per_sample": before["spikes_per_sample"],
        "rate_synaptic_ops_per_sample": before["synaptic_ops_per_sample"],
        "rate_energy_pj_per_sample_snn": before["energy_pj_per_sample_snn"],
        "rate_steps_of_equal_accuracy": matching,
        "rate_spikes_per_sample_equal_accuracy": rate_spikes_matching,
        "spike_reduction_vs_rate_equal_accuracy_x": (rate_spikes_matching / spikes
                                                     if rate_spikes_matching and spikes else None),
        "spike_reduction_vs_rate_x": before["spikes_per_sample"] / spikes if spikes else None,
    }
    for platform in NEUROMORPHIC_PLATFORMS:
        summary[f"neuromorphic_energy_{platform}_rel_rate"] = neuromorphic_energy(
            spikes, sim.time_steps, before["spikes_per_sample"], rate_sim.time_steps, platform)
    return summary


def write_ttfs_tables(directory: Path, rows: list[dict], extra: dict, evaluation: Evaluation) -> dict[str, Path]:
    csv_path = write_csv(directory / "ttfs.csv", LAYER_COLUMNS, rows)
    png = plots.plot_layer_spikes(
        [r["layer"] for r in rows], {"TTFS": [r["spikes_per_sample"] for r in rows],
                                     f"rate-coded, T={extra['rate_time_steps']}":
                                         [r["spikes_per_sample_rate_coded"] or 0.0 for r in rows]},
        directory / "ttfs_spikes.png", title="Spikes per sample per layer: TTFS vs rate coding")
    md = directory / "ttfs.md"
    lines = ["# TTFS coding", "",
             f"Windows T_w = {extra['ttfs_window_steps']}, T_s = {extra['ttfs_fire_start_steps']}; latency "
             f"{extra['ttfs_latency_steps']} steps. Definitions: docs/ttfs.md and docs/metrics.md.", ""]
    sim = evaluation.simulation
    few = few_kernel_updates(extra, sim.accuracy_at(sim.time_steps))
    if few:
        lines += [f"Note: {few}.", ""]
    lines += quantity_table(extra)
    lines += ["", "| " + " | ".join(LAYER_COLUMNS) + " |", "|" + "---|" * len(LAYER_COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) for c in LAYER_COLUMNS) + " |" for r in rows]
    lines += ["", "![Spikes per layer](ttfs_spikes.png)", ""]
    md.write_text("\n".join(lines))
    return {"ttfs.csv": csv_path, "ttfs.md": md, "ttfs_spikes.png": png}
