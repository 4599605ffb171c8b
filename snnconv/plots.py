"""PNG figures for reports: accuracy vs time steps, per-layer firing rates and T_l, energy, exit times.

Matplotlib is imported inside each function and drives an Agg canvas directly (no pyplot), so importing
snnconv neither costs matplotlib's start-up time nor changes the backend of a user's session.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics.energy import EnergyBreakdown, layer_active_steps
from .metrics.summary import layer_spikes_per_sample, spike_values
from .results import AnnResult, SimulationResult

_SNN_COLOR = "#1f77b4"
_ANN_COLOR = "#d62728"
_GATE_COLOR = "#9ecae1"
_DPI = 120


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    path = Path(path)
    figure.savefig(path, format="png")
    return path


def plot_accuracy_vs_t(sim: SimulationResult, ann: AnnResult, path: Path, *, chosen_t: int | None = None,
                       title: str = "SNN accuracy vs time steps") -> Path:
    """SNN top-1 accuracy (%) after each t = 1..T on a log2 axis, the ANN as a horizontal line."""
    from matplotlib.ticker import FixedLocator, NullLocator

    steps = np.arange(1, sim.time_steps + 1)
    figure = _figure(7, 4.2)
    ax = figure.add_subplot()
    signed = spike_values(sim) == "signed"
    ax.plot(steps, sim.accuracy_per_step, color=_SNN_COLOR, marker="o", markersize=3, linewidth=1.5,
            label="SNN, signed spikes (accumulated output, steps 1..t)" if signed
            else "SNN (accumulated output, steps 1..t)")
    if ann.correct is not None:  # a directly trained model has no ANN to draw
        ax.axhline(ann.accuracy, color=_ANN_COLOR, linestyle="--", linewidth=1.2, label=f"ANN ({ann.accuracy:.2f} %)")
    if chosen_t is not None:
        ax.axvline(chosen_t, color="gray", linestyle=":", linewidth=1,
                   label=f"chosen T = {chosen_t} ({sim.accuracy_at(chosen_t):.2f} %)")
    ax.set_xscale("log", base=2)
    ticks = [2 ** k for k in range(int(np.log2(sim.time_steps)) + 1)]
    if ticks[-1] != sim.time_steps:
        ticks.append(sim.time_steps)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlim(0.9, sim.time_steps * 1.1)
    ax.set_xlabel("time steps t (log2 scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{title} ({sim.samples} samples)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right")
    return _save(figure, path)


def plot_firing_rates(sim: SimulationResult, path: Path, *, t: int | None = None,
                      title: str = "Firing rate and time steps per neuron layer") -> Path:
    """Bars: spikes per neuron per step of each neuron layer over steps 1..t; markers: its T_l (right axis)."""
    t = sim.time_steps if t is None else t
    layers = sim.neuron_layers
    names = [layer.name for layer in layers]
    rates = []
    for layer in layers:
        spikes = layer_spikes_per_sample(sim, layer, t)
        updates = layer.neurons * layer_active_steps(sim, t, layer)
        rates.append(spikes / updates if updates else 0.0)
    positions = np.arange(len(layers))
    figure = _figure(max(6.0, 0.45 * len(layers) + 2.5), 4.5)
    ax = figure.add_subplot()
    colors = [_GATE_COLOR if layer.kind == "maxpool_gate" else _SNN_COLOR for layer in layers]
    ax.bar(positions, rates, color=colors, width=0.7)
    ax.set_ylabel("firing rate (spikes / neuron / step)")
    ax.set_xlabel("neuron layer")
    ax.set_xticks(positions, names, rotation=45 if len(layers) > 4 else 0, ha="right" if len(layers) > 4 else "center")
    ax.set_ylim(0, max(max(rates, default=0.0) * 1.25, 1e-3))
    steps_axis = ax.twinx()
    layer_steps = [layer.time_steps if layer.active_steps is None else layer.active_steps for layer in layers]
    steps_axis.plot(positions, layer_steps, color=_ANN_COLOR, marker="D", linestyle="none",
                    markersize=6)
    steps_axis.set_ylabel("time steps $T_l$ (steps)", color=_ANN_COLOR)
    steps_axis.tick_params(axis="y", colors=_ANN_COLOR)
    steps_axis.set_ylim(0, max(max(layer_steps, default=1), 1) * 1.15)

    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=_SNN_COLOR, label="IF layer firing rate")]
    if any(layer.kind == "maxpool_gate" for layer in layers):
        handles.append(Patch(color=_GATE_COLOR, label="max-pool gate output rate"))
    handles.append(Line2D([], [], color=_ANN_COLOR, marker="D", linestyle="none", label="time steps $T_l$"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    ax.set_title(f"{title} (steps 1..{t})")
    return _save(figure, path)


def _energy_unit(largest_pj: float) -> tuple[str, float]:
    """A readable unit for the energy axis and its size in pJ."""
    for unit, size in (("mJ", 1e9), ("µJ", 1e6), ("nJ", 1e3)):
        if largest_pj >= size:
            return unit, size
    return "pJ", 1.0


def plot_energy(breakdown: EnergyBreakdown, path: Path, *, title: str = "Energy per inference") -> Path:
    """Bars: ANN vs SNN energy per sample, the SNN split into MAC, AC and zero-check energy.

    The axis unit is pJ scaled to nJ, µJ or mJ when the bars are large (the label says which).
    """
    model = breakdown.model
    top_pj = max(breakdown.energy_pj_ann, breakdown.energy_pj_snn)
    unit, size = _energy_unit(top_pj)
    figure = _figure(6, 4.5)
    ax = figure.add_subplot()
    ax.bar(0, breakdown.energy_pj_ann / size, color=_ANN_COLOR, width=0.6,
           label=f"MAC ({model.e_mac_pj:g} pJ each)")
    parts = [(breakdown.mac_energy_pj_snn, _ANN_COLOR, None),
             (breakdown.ac_energy_pj_snn, _SNN_COLOR, f"AC ({model.e_ac_pj:g} pJ each)"),
             (breakdown.zero_check_energy_pj_snn, "#ff7f0e", f"zero check ({model.e_zero_check_pj:g} pJ each)")]
    bottom = 0.0
    for value_pj, color, label in parts:
        if value_pj > 0:
            ax.bar(1, value_pj / size, bottom=bottom, color=color, width=0.6, label=label)
            bottom += value_pj / size
    top = top_pj / size
    for x, value_pj in ((0, breakdown.energy_pj_ann), (1, breakdown.energy_pj_snn)):
        ax.text(x, value_pj / size + 0.01 * top, f"{value_pj / size:,.3g} {unit}", ha="center", va="bottom")
    ax.set_xticks([0, 1], ["ANN", f"SNN (T = {breakdown.time_steps})"])
    ax.set_ylabel(f"energy per sample ({unit})")
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ratio = breakdown.ratio_ann_over_snn
    ax.set_title(f"{title}: ANN / SNN = {ratio:.2f}x\npreset '{model.name}'")
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(figure, path)


def plot_exit_histogram(sim: SimulationResult, path: Path, *, title: str = "Exit time steps") -> Path:
    """Histogram of the step at which each sample left under the exit policy."""
    if sim.exit_steps is None:
        raise ValueError("plot_exit_histogram needs a simulation run with an exit policy (exit_steps is None).")
    steps, counts = np.unique(np.asarray(sim.exit_steps), return_counts=True)
    figure = _figure(7, 4.2)
    ax = figure.add_subplot()
    shares = 100.0 * counts / max(len(sim.exit_steps), 1)
    ax.bar(steps, shares, color=_SNN_COLOR, width=0.8)
    ax.set_ylim(0, max(shares.max(initial=0.0) * 1.2, 1.0))
    mean = float(np.mean(sim.exit_steps)) if len(sim.exit_steps) else float("nan")
    ax.axvline(mean, color=_ANN_COLOR, linestyle="--", label=f"mean exit step = {mean:.2f}")
    ax.set_xlabel("exit time step (steps)")
    ax.set_ylabel("samples (%)")
    ax.set_xlim(0.3, sim.time_steps + 0.7)
    ax.set_title(f"{title} ({len(sim.exit_steps)} samples, T = {sim.time_steps})")
    figure.legend(loc="outside lower center")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(figure, path)


def plot_exit_tradeoff(fixed_accuracy_pct: np.ndarray, path: Path, *, sweep: list[tuple[float, float]] = (),
                       chosen: tuple[float, float] | None = None, oracle: tuple[float, float] | None = None,
                       ann_accuracy_pct: float | None = None, title: str = "Early exit: accuracy vs time steps") -> Path:
    """Accuracy (%) vs average time steps: the fixed-T curve (t = 1..T), an exit-rule sweep as
    (mean exit step, accuracy) points, the chosen rule and the oracle AET."""
    figure = _figure(7, 4.2)
    ax = figure.add_subplot()
    steps = np.arange(1, len(fixed_accuracy_pct) + 1)
    ax.plot(steps, fixed_accuracy_pct, color="gray", marker="o", markersize=2.5, linewidth=1.2,
            label="fixed T (all samples run t steps)")
    if len(sweep):
        points = sorted(sweep)
        ax.plot([p[0] for p in points], [p[1] for p in points], color=_SNN_COLOR, linewidth=1.5,
                label="early exit, threshold sweep")
    if chosen is not None:
        ax.plot(*chosen, marker="*", markersize=13, color=_SNN_COLOR, linestyle="none",
                label=f"chosen: {chosen[1]:.2f} % at {chosen[0]:.2f} steps")
    if oracle is not None:
        ax.plot(*oracle, marker="D", markersize=7, color="black", linestyle="none",
                label=f"oracle AET: {oracle[0]:.2f} steps")
    if ann_accuracy_pct is not None:
        ax.axhline(ann_accuracy_pct, color=_ANN_COLOR, linestyle="--", linewidth=1.2,
                   label=f"ANN ({ann_accuracy_pct:.2f} %)")
    low = min(float(np.min(fixed_accuracy_pct[len(fixed_accuracy_pct) // 8:])), chosen[1] if chosen else 100.0)
    ax.set_ylim(max(0.0, low - 2.0), min(100.0, max(float(np.max(fixed_accuracy_pct)), ann_accuracy_pct or 0) + 1.0))
    ax.set_xlabel("average time steps per sample (steps)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def plot_layer_spikes(layers: list[str], series: dict[str, list[float]], path: Path, *,
                      title: str = "Spikes per sample per layer") -> Path:
    """Grouped bars: spikes per sample of each neuron layer, one bar per series (log scale)."""
    figure = _figure(max(6.0, 0.8 * len(layers) + 2), 4.2)
    ax = figure.add_subplot()
    positions = np.arange(len(layers))
    width = 0.8 / max(len(series), 1)
    for index, (label, values) in enumerate(series.items()):
        ax.bar(positions + (index - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(positions, layers, rotation=45, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("spikes per sample")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(figure, path)
