"""The report directory of a convert / compress / evaluate run: report.md, CSV tables and PNG plots.

Everything is computed by :mod:`snnconv.metrics` from one simulation and one ANN evaluation; columns and
units are defined in docs/metrics.md. Files are written to a temporary directory first and moved into
place at the end, so a failure leaves no partial report.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import plots
from .errors import ConfigError, OutputError
from .metrics.energy import NEUROMORPHIC_SOURCE, EnergyModel, check_time_step, energy_breakdown
from .metrics.summary import LAYER_COLUMNS, SUMMARY_KEYS, SWEEP_COLUMNS, layer_rows, summarize, sweep_rows
from .results import AnnResult, SimulationResult

COVERAGE_COLUMNS = ("node", "type", "status", "reason")
INTEGER_LAYER_COLUMNS = ("neurons", "time_steps", "macs_per_sample")


# The files write_report writes for every run, the two more it writes for a run with exits, and so all it can write.
ALWAYS_REPORT_FILES = ("report.md", "summary.csv", "layers.csv", "sweep.csv", "accuracy_vs_t.png",
                       "firing_rates.png", "energy.png")
EXIT_REPORT_FILES = ("exits.csv", "exit_histogram.png")
REPORT_FILES = ALWAYS_REPORT_FILES + EXIT_REPORT_FILES


def write_report(directory: Path, *, title: str, sim: SimulationResult, ann: AnnResult, energy_model: EnergyModel,
                 time_steps: int, sweep_steps: list[int], config: dict, environment: dict, coverage: list[dict],
                 extra_summary: dict | None = None) -> dict[str, Path]:
    """Write report.md, summary.csv, layers.csv, sweep.csv, the plots (and exits.csv with an exit policy).

    ``time_steps`` is the readout T the summary describes; ``sweep_steps`` the T values listed in report.md
    (sweep.csv always holds every t = 1..T). ``extra_summary`` adds columns to summary.csv and rows to
    report.md (keys should carry their unit). Returns file name -> path.
    """
    t = _checked_step(sim, time_steps, "time_steps")
    sweep_steps = sorted({_checked_step(sim, step, "sweep_steps") for step in sweep_steps})
    extra_summary = dict(extra_summary or {})
    clashes = sorted(set(extra_summary) & set(SUMMARY_KEYS))
    if clashes:
        raise ValueError(f"extra_summary repeats summary key(s) {', '.join(clashes)}; give them other names.")

    summary = summarize(sim, ann, energy_model, t)
    layers = layer_rows(sim, ann, energy_model, t)
    sweep = sweep_rows(sim, ann, energy_model)
    breakdown = energy_breakdown(sim, ann, energy_model, t)

    directory = Path(directory)
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".report-", dir=directory))
    except OSError as exc:
        raise OutputError(f"Report directory '{directory}' cannot be written ({exc.strerror or exc}); "
                          "choose a writable location.") from None
    completed = False
    try:
        import pandas as pd

        pd.DataFrame([{**summary, **extra_summary}], columns=list(SUMMARY_KEYS) + list(extra_summary)).to_csv(
            staging / "summary.csv", index=False)
        layer_table = pd.DataFrame(layers, columns=list(LAYER_COLUMNS))
        for column in INTEGER_LAYER_COLUMNS:  # integer counts with empty cells stay integers in the CSV
            layer_table[column] = layer_table[column].astype("Int64")
        layer_table.to_csv(staging / "layers.csv", index=False)
        pd.DataFrame(sweep, columns=list(SWEEP_COLUMNS)).to_csv(staging / "sweep.csv", index=False)
        names = list(ALWAYS_REPORT_FILES)
        exit_rows = _exit_rows(sim)
        if exit_rows is not None:
            pd.DataFrame(exit_rows, columns=["exit_time_step", "samples", "samples_pct"]).to_csv(
                staging / "exits.csv", index=False)
            plots.plot_exit_histogram(sim, staging / "exit_histogram.png")
            names += list(EXIT_REPORT_FILES)
        plots.plot_accuracy_vs_t(sim, ann, staging / "accuracy_vs_t.png", chosen_t=t)
        plots.plot_firing_rates(sim, staging / "firing_rates.png", t=t)
        plots.plot_energy(breakdown, staging / "energy.png")
        markdown = _markdown(title=title, sim=sim, ann=ann, model=energy_model, t=t, sweep_steps=sweep_steps,
                             summary=summary, layers=layers, sweep=sweep, breakdown=breakdown, config=config,
                             environment=environment, coverage=coverage, extra_summary=extra_summary,
                             exit_rows=exit_rows)
        (staging / "report.md").write_text(markdown, encoding="utf-8")
        written = {}
        for name in names:
            os.replace(staging / name, directory / name)
            written[name] = directory / name
        completed = True
    except OSError as exc:
        raise OutputError(f"Report directory '{directory}' cannot be written ({exc.strerror or exc}); "
                          "choose a writable location.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not completed and created:
            shutil.rmtree(directory, ignore_errors=True)
    return written


def _checked_step(sim: SimulationResult, step: int, option: str) -> int:
    try:
        return check_time_step(sim, step)
    except ConfigError:
        raise ConfigError(f"{option} holds t={step!r}, outside the simulated 1..{sim.time_steps} steps; "
                          f"simulate more steps or pick t <= {sim.time_steps}.") from None


def _exit_rows(sim: SimulationResult) -> list[dict] | None:
    if sim.exit_steps is None:
        return None
    steps, counts = np.unique(np.asarray(sim.exit_steps), return_counts=True)
    total = max(len(sim.exit_steps), 1)
    return [{"exit_time_step": int(step), "samples": int(count), "samples_pct": 100.0 * count / total}
            for step, count in zip(steps, counts)]


# ---------------------------------------------------------------------------- markdown

def _number(value, spec: str | None = None) -> str:
    """A table cell: '—' for missing, thousands separators for counts, a few significant digits otherwise."""
    if value is None or value == "":
        return "—"
    if isinstance(value, (bool, str)):
        return _cell(str(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    value = float(value)
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if spec is not None:
        return format(value, spec)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.4g}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(*, title, sim, ann, model, t, sweep_steps, summary, layers, sweep, breakdown, config, environment,
              coverage, extra_summary, exit_rows) -> str:
    s = summary
    parts = [f"# {title}", "",
             f"{sim.samples:,} evaluation samples. The SNN is read out after T = {t} time steps (simulated: "
             f"{sim.time_steps} steps). Energy preset `{model.name}`. Counts are per sample; definitions in "
             "docs/metrics.md.", ""]
    if s["spike_values"] == "signed":
        parts += ["**Signed spikes**: neurons may also emit negative spikes that retract earlier ones, "
                  "buying accuracy with extra spikes; spikes of both signs are counted.", ""]

    summary_rows = [
        ["Top-1 accuracy", _number(s["ann_accuracy_pct"], ".2f"), _number(s["snn_accuracy_pct"], ".2f"), "%"],
        ["Accuracy drop vs ANN", "", _number(s["accuracy_drop_points"], ".2f"), "points"],
        ["Time steps (readout T)", "", _number(s["time_steps"]), "steps"],
        ["Average time steps over neuron layers", "", _number(s["avg_time_steps"], ".2f"), "steps"],
        ["Spikes per sample", "", _number(s["spikes_per_sample"]), "spikes"],
        ["Spikes per neuron (steps 1..T)", "", _number(s["spikes_per_neuron"]), "spikes / neuron"],
        ["Neurons (integrate-and-fire)", "", _number(s["neurons"]), "neurons"],
        ["Spike values", "", "+1 or −1 (signed)" if s["spike_values"] == "signed" else "1 (binary)", "—"],
        ["Synaptic operations: ACs", "0", _number(s["synaptic_ops_per_sample"]), "ACs / sample"],
        ["Synaptic operations: MACs", _number(s["macs_per_sample_ann"]), _number(s["macs_per_sample_snn"]),
         "MACs / sample"],
        ["Zero checks of spiking inputs", "", _number(s["zero_checks_per_sample"]), "checks / sample"],
        ["Membrane updates", "", _number(s["membrane_updates_per_sample"]), "updates / sample"],
        ["Activation sparsity", "", _number(s["activation_sparsity"], ".4f"), "fraction (0..1)"],
        [f"Energy per sample (`{model.name}`)", _number(s["energy_pj_per_sample_ann"]),
         _number(s["energy_pj_per_sample_snn"]), "pJ"],
        ["Energy ratio ANN / SNN (> 1: the SNN saves energy)", "", _number(s["energy_ratio_ann_over_snn"], ".2f"),
         "×"],
    ]
    if s["exit_accuracy_pct"] is not None:
        summary_rows.append(["Accuracy at the exit step", "", _number(s["exit_accuracy_pct"], ".2f"), "%"])
    if s["avg_exit_time_steps"] is not None:
        summary_rows.append(["Mean exit time step", "", _number(s["avg_exit_time_steps"], ".2f"), "steps"])
    summary_rows.append(["Wall time on the evaluation set (SNN: all simulated steps)",
                         _number(ann.wall_time_s, ".2f"), _number(sim.wall_time_s, ".2f"), "s"])
    summary_rows = [[cell if cell else "—" for cell in row] for row in summary_rows]
    reference = "ANN" if ann.correct is not None else "Dense, same architecture"
    parts += ["## Summary", "", _table(["Quantity", reference, "SNN", "Unit"], summary_rows,
                                       ["---", "---:", "---:", "---"]), ""]
    if extra_summary:
        parts += ["Additional results:", "",
                  _table(["Key", "Value"], [[_cell(k), _number(v)] for k, v in extra_summary.items()],
                         ["---", "---:"]), ""]

    by_t = {row["time_steps"]: row for row in sweep}
    sweep_table = [[str(step), _number(by_t[step]["snn_accuracy_pct"], ".2f"),
                    _number(ann.accuracy - by_t[step]["snn_accuracy_pct"], ".2f"),
                    _number(by_t[step]["spikes_per_sample"]), _number(by_t[step]["synaptic_ops_per_sample"]),
                    _number(by_t[step]["energy_pj_per_sample_snn"]),
                    _number(by_t[step]["energy_ratio_ann_over_snn"], ".2f")] for step in sweep_steps]
    parts += ["## Accuracy and cost at each T", "",
              (f"ANN accuracy: {ann.accuracy:.2f} %." if ann.correct is not None else
               "No source ANN (a directly trained spiking model): the ANN columns describe the same architecture "
               "computed densely, without an accuracy.") + f" Every t = 1..{sim.time_steps} is in sweep.csv.", "",
              _table(["T (steps)", "SNN accuracy (%)", "Drop vs ANN (points)", "Spikes / sample",
                      "ACs / sample", "SNN energy (pJ / sample)", "ANN / SNN energy (×)"], sweep_table,
                     ["---:"] * 7), ""]

    mac_layers = [layer.name for layer in sim.synaptic_layers if not layer.spiking_input]
    ac_layers = [layer.name for layer in sim.synaptic_layers if layer.spiking_input]
    parts += ["## Energy model", "",
              f"Preset `{model.name}`: {model.source or 'no source given'}.", "",
              _table(["Operation", "Energy (pJ)"],
                     [["MAC (multiply-accumulate)", _number(model.e_mac_pj, "g")],
                      ["AC (accumulate)", _number(model.e_ac_pj, "g")],
                      ["Zero check (per spiking input element and step)", _number(model.e_zero_check_pj, "g")]],
                     ["---", "---:"]), "",
              f"Charged as MACs, once per sample (analog input): {_names(mac_layers)}. "
              f"Charged as ACs (spiking input, nonzero inputs × fan-out at each step): {_names(ac_layers)}. "
              "The ANN is charged one MAC per dense multiply-accumulate of every weighted layer"
              + (" (dense MACs measured by the simulation: the ANN result listed none)."
                 if breakdown.ann_macs_source == "simulation" else "."), ""]

    neuro_columns = [column for column in SWEEP_COLUMNS if column.startswith("neuromorphic_energy_")]
    if all(by_t[step][column] is not None for step in sweep_steps for column in neuro_columns):
        platforms = [column.removeprefix("neuromorphic_energy_").removesuffix("_rel_full_t")
                     for column in neuro_columns]
        parts += ["## Normalized neuromorphic energy", "",
                  "E = a_dyn · spikes / spikes(T_max) + a_sta · steps / T_max, relative to this network read out "
                  f"after all T_max = {sim.time_steps} steps (1.0). Coefficients {NEUROMORPHIC_SOURCE}.", "",
                  _table(["T (steps)"] + [f"{p} (relative, 1.0 = T_max)" for p in platforms],
                         [[str(step)] + [_number(by_t[step][c], ".3f") for c in neuro_columns]
                          for step in sweep_steps], ["---:"] * (1 + len(platforms))), ""]

    layer_header = ["Layer", "Type", "Input", "Neurons", "Threshold (activation units)", "T_l (steps)",
                    "Firing rate (spikes / neuron / step)", "Spikes / sample", "ACs / sample", "MACs / sample",
                    "Zero checks / sample", "Energy (pJ / sample)"]
    layer_table = [[_cell(row["layer"]), _cell(row["type"]), _cell(row["input"]) if row["input"] else "—",
                    _number(row["neurons"]), _number(row["threshold"]), _number(row["time_steps"]),
                    _number(row["firing_rate_spikes_per_neuron_per_step"], ".4f"), _number(row["spikes_per_sample"]),
                    _number(row["synaptic_ops_per_sample"]), _number(row["macs_per_sample"]),
                    _number(row["zero_checks_per_sample"]), _number(row["energy_pj_per_sample"])] for row in layers]
    parts += ["## Layers", "", f"Neuron layers, then weighted layers, at T = {t}.", "",
              _table(layer_header, layer_table, ["---", "---", "---"] + ["---:"] * 9), ""]

    if exit_rows is not None:
        parts += ["## Exit time steps", "",
                  _table(["Exit step (steps)", "Samples", "Samples (%)"],
                         [[str(r["exit_time_step"]), _number(r["samples"]), _number(r["samples_pct"], ".2f")]
                          for r in exit_rows], ["---:"] * 3), "",
                  "![Exit time steps](exit_histogram.png)", ""]

    parts += ["## Plots", "", "![SNN accuracy vs time steps](accuracy_vs_t.png)", "",
              "![Firing rate and T_l per neuron layer](firing_rates.png)", "",
              "![Energy per sample, ANN vs SNN](energy.png)", ""]

    coverage_table = [[_cell(row.get(column, "")) or "—" for column in COVERAGE_COLUMNS] for row in coverage]
    parts += ["## Coverage", "", f"{len(coverage)} graph nodes.", "",
              _table(["Node", "Type", "Status", "Reason"], coverage_table), ""]
    parts += ["## Configuration", "", "```json", json.dumps(config, indent=2, default=str), "```", ""]
    parts += ["## Environment", "",
              _table(["Item", "Value"], [[_cell(k), _cell(v)] for k, v in environment.items()]), ""]
    return "\n".join(parts)


def _names(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names) if names else "none"
