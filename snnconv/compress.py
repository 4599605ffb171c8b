"""`snnconv compress`: temporal compression of a converted artifact, evaluated beside its uniform-T self.

Each method takes a uniform-T artifact and writes a new artifact with the standard reports plus the
method's own table (``teas.csv`` and a section in ``teas.md`` for TEAS). The uniform network is evaluated
on the same data in the same run, so every "before/after" number comes from one measurement pass.
"""
from __future__ import annotations

import csv
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import artifacts
from .api import Evaluation, ProgressFactory, evaluate, resolve_device
from .config import SimulationConfig
from .data import DataConfig, load_data
from .engine import Engine
from .errors import ArtifactError, ConfigError
from .metrics import load_energy_model, summarize
from .metrics.summary import layer_spikes_per_sample
from .stages.teas import TeasConfig, TeasResult, consumer_synapses, teas
from .workflows import DEFAULT_DATA, RunResult, _check_writable, _report, sweep_steps

METHODS = ("teas",)
TEAS_COLUMNS = (
    "layer", "neurons", "activity_spikes_per_neuron_per_step", "first_spike_step", "consumer_params",
    "cost_spikes_x_params", "cut_drop_points", "cut_divergence", "noise_drop_points", "noise_divergence",
    "time_steps_uniform", "time_steps_teas", "spikes_per_sample_uniform", "spikes_per_sample_teas",
    "synaptic_ops_per_sample_uniform", "synaptic_ops_per_sample_teas",
)


def _recorded_data(target: Path, key: str, split: str) -> DataConfig:
    recorded = artifacts.read_manifest(target).get("run", {}).get(key)
    return DataConfig.from_dict(recorded) if recorded else DataConfig(DEFAULT_DATA, split=split)


def _with_normalization(data: DataConfig, network) -> DataConfig:
    norm = network.input_normalization
    if data.mean is None and norm.get("mean"):
        return replace(data, mean=tuple(norm["mean"]), std=tuple(norm["std"]))
    return data


def uniform_steps_matching(evaluation: Evaluation, accuracy: float, tolerance: float = 0.1) -> int | None:
    """Smallest uniform t whose accuracy is within ``tolerance`` points of ``accuracy`` (None if no t is)."""
    sim = evaluation.simulation
    for t in range(1, sim.time_steps + 1):
        if sim.accuracy_at(t) >= accuracy - tolerance:
            return t
    return None


def run_compress(artifact: str | Path, method: str, *, output: Path, teas_config: TeasConfig = TeasConfig(),
                 calib_data: DataConfig | None = None, data: DataConfig | None = None, energy: str = "45nm",
                 batch_size: int = 256, chunk_steps: int = 8, device: str = "cpu", seed: int = 0,
                 limit: int | None = None, progress: ProgressFactory | None = None,
                 note=None) -> tuple[RunResult, TeasResult, list[dict]]:
    """Compress a uniform-T artifact with ``method``; write the new artifact and its reports to ``output``."""
    if method not in METHODS:
        raise ConfigError(f"--method '{method}' is not available; choose from {', '.join(METHODS)}.")
    artifact = Path(artifact)
    if not artifacts.is_artifact(artifact):
        raise ArtifactError(f"'{artifact}' is not an snnconv artifact (no manifest.json); run snnconv convert first.")
    load_energy_model(energy)
    _check_writable(output, "-o")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    network = artifacts.load(artifact)
    calib_data = _with_normalization(calib_data or _recorded_data(artifact, "calib_data", "train"), network)
    if data is None:
        data = replace(_recorded_data(artifact, "data", "test"), limit=limit, seed=seed)
    data = _with_normalization(data, network)
    calibration, evaluation_data = load_data(calib_data), load_data(data)
    base = network.time_steps
    simulation = SimulationConfig(time_steps=base, chunk_steps=chunk_steps, batch_size=batch_size, device=str(dev))

    uniform = evaluate(network, evaluation_data, simulation, progress=progress)
    result = teas(network, calibration, teas_config, time_steps=base, batch_size=batch_size, chunk_steps=chunk_steps,
                  device=str(dev), progress=note)
    network.layer_time_steps = {k: v for k, v in result.layer_time_steps.items() if v != base}
    compressed = evaluate(network, evaluation_data, simulation, progress=progress)

    model = load_energy_model(energy)
    rows = teas_rows(network, result, uniform, compressed)
    extra = teas_summary(result, uniform, compressed, rows, model)
    resolved = {"artifact": str(artifact), "method": method, "teas": teas_config.to_dict(),
                "calib_data": calib_data.to_dict(), "data": data.to_dict(), "simulation": simulation.to_dict(),
                "energy": energy, "seed": seed, "time_steps": [base]}
    staging = Path(tempfile.mkdtemp(prefix="snnconv-report-"))
    try:
        summary, files = _report(staging / "reports", f"snnconv compress --method teas: {artifact}", network,
                                 compressed, energy, base, sweep_steps([base], base), resolved, dev, seed,
                                 extra_summary=extra)
        files.update(write_teas_tables(staging / "reports", rows, extra, result))
        manifest_run = {**artifacts.read_manifest(artifact).get("run", {}), "compress": resolved}
        artifacts.save(network.to("cpu"), output, extra_files={"reports": staging / "reports"},
                       extra_manifest={"run": manifest_run, "summary": summary})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report_dir = Path(output) / "reports"
    run = RunResult(network=network, evaluation=compressed, summary=summary, time_steps=base,
                    sweep={t: compressed.simulation.accuracy_at(t) for t in sweep_steps([base], base)},
                    report_dir=report_dir, artifact=Path(output),
                    files={name: report_dir / Path(path).name for name, path in files.items()})
    return run, result, rows


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
    return {
        "uniform_time_steps": result.base_steps,
        "uniform_snn_accuracy_pct": before["snn_accuracy_pct"],
        "uniform_synaptic_ops_per_sample": before["synaptic_ops_per_sample"],
        "uniform_energy_pj_per_sample_snn": before["energy_pj_per_sample_snn"],
        "teas_avg_time_steps_op_weighted": weighted,
        "uniform_steps_of_equal_accuracy": matching,
        "avg_time_steps_reduction_vs_equal_accuracy_x": (matching / after["avg_time_steps"]) if matching else None,
        "teas_holdout_accuracy_uniform_pct": result.uniform_accuracy_pct,
        "teas_holdout_accuracy_pct": result.final_accuracy_pct,
        "teas_holdout_samples": result.holdout_samples,
        "teas_allocation_simulations": result.evaluations,
        "teas_recalibrated": result.recalibrated,
        **{f"rho_activity_vs_{key}": value for key, value in result.correlation.items()},
    }


def write_teas_tables(directory: Path, rows: list[dict], extra: dict, result: TeasResult) -> dict[str, Path]:
    csv_path = directory / "teas.csv"
    with csv_path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=TEAS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    md = directory / "teas.md"
    header = ["layer", "Act (spikes/neuron/step)", "#Para", "cut drop (points)", "cut TV", "noise drop (points)",
              "noise TV", "T_l", "spikes/sample uniform", "spikes/sample TEAS", "syn. ops/sample uniform",
              "syn. ops/sample TEAS"]
    lines = ["# TEAS per-layer time steps", "",
             f"Uniform T = {result.base_steps}; sensitivity probe: one layer at T_l = {result.probe_steps}, or "
             f"noise on its membrane; held-out split of {result.holdout_samples} calibration samples. "
             "Definitions: docs/teas.md.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["layer"], f"{r['activity_spikes_per_neuron_per_step']:.4f}", str(r["consumer_params"]),
            f"{r['cut_drop_points']:+.2f}", f"{r['cut_divergence']:.4f}", f"{r['noise_drop_points']:+.2f}",
            f"{r['noise_divergence']:.4f}", str(r["time_steps_teas"]), f"{r['spikes_per_sample_uniform']:,.0f}",
            f"{r['spikes_per_sample_teas']:,.0f}", f"{r['synaptic_ops_per_sample_uniform']:,.0f}",
            f"{r['synaptic_ops_per_sample_teas']:,.0f}"]) + " |")
    lines += ["", "| quantity | value |", "|---|---|"]
    for key, value in extra.items():
        text = "n/a" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
        lines.append(f"| {key} | {text} |")
    lines += ["", "Allocation trace (held-out split):", "", "| layer | T_l from | to | accuracy (%) | syn. ops/sample | accepted |",
              "|---|---|---|---|---|---|"]
    for step in result.trace:
        lines.append(f"| {step.layer} | {step.from_steps} | {step.to_steps} | {step.accuracy_pct:.2f} | "
                     f"{step.synaptic_ops_per_sample:,.0f} | {'yes' if step.accepted else 'no (budget)'} |")
    md.write_text("\n".join(lines) + "\n")
    return {"teas.csv": csv_path, "teas.md": md}
