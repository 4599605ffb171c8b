"""Everything the terminal shows: progress bars, the summary table, errors. The only place rich is used."""
from __future__ import annotations

import json
import math
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from snnconv.compress.seenn import budget_overspent, holdout_loss_text
from snnconv.compress.ttfs import few_kernel_updates
from snnconv.workflows import RunResult

console = Console()
errors = Console(stderr=True)


@contextmanager
def progress_bars(quiet: bool):
    """Yields a ProgressFactory for the library (or None when quiet)."""
    if quiet:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=errors, transient=False) as progress:
        def factory(description: str, total: int):
            task = progress.add_task(description, total=total)
            return lambda n: progress.advance(task, n)

        yield factory


def _fmt(value, spec: str) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def summary_table(result: RunResult, title: str) -> Table:
    s = result.summary
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    no_ann = isinstance(s["ann_accuracy_pct"], float) and math.isnan(s["ann_accuracy_pct"])
    table.add_column("dense, same arch." if no_ann else "ANN", justify="right")  # a directly trained SNN has no ANN
    table.add_column(f"SNN (T={result.time_steps})", justify="right")
    table.add_column("unit")
    table.add_row("accuracy", _fmt(s["ann_accuracy_pct"], ".2f"), _fmt(s["snn_accuracy_pct"], ".2f"), "%")
    table.add_row("accuracy drop", "", _fmt(s["accuracy_drop_points"], ".2f"), "points")
    table.add_row("average time steps", "", _fmt(s["avg_time_steps"], ".1f"), "steps")
    table.add_row("spikes per sample", "", _fmt(s["spikes_per_sample"], ",.0f"), "spikes")
    table.add_row("spikes per neuron", "", _fmt(s["spikes_per_neuron"], ".3f"), "spikes / neuron")
    if s.get("spike_values") == "signed":
        table.add_row("spike values (signed: both signs counted)", "", "+1 / -1", "")
    table.add_row("MACs per sample", _fmt(s["macs_per_sample_ann"], ",.0f"), _fmt(s["macs_per_sample_snn"], ",.0f"), "MAC")
    table.add_row("ACs per sample (synaptic ops)", "", _fmt(s["synaptic_ops_per_sample"], ",.0f"), "AC")
    table.add_row(f"energy per sample ({s['energy_preset']})", _fmt(s["energy_pj_per_sample_ann"] / 1e6, ".3f"),
                  _fmt(s["energy_pj_per_sample_snn"] / 1e6, ".3f"), "µJ")
    table.add_row("energy ratio ANN / SNN", "", _fmt(s["energy_ratio_ann_over_snn"], ".2f"), "x")
    if "ann_accuracy_before_maxpool_rewrite_pct" in s:
        table.add_row("ANN accuracy before max->avg rewrite", _fmt(s["ann_accuracy_before_maxpool_rewrite_pct"], ".2f"),
                      "", "%")
    return table


def sweep_table(result: RunResult) -> Table:
    table = Table(title="SNN accuracy vs time steps", header_style="bold")
    table.add_column("T", justify="right")
    table.add_column("accuracy (%)", justify="right")
    table.add_column("drop vs ANN (points)", justify="right")
    ann = result.summary["ann_accuracy_pct"]
    for t, accuracy in result.sweep.items():
        table.add_row(str(t), f"{accuracy:.2f}", _fmt(ann - accuracy, ".2f"))
    return table


def _json_number(value):
    """NaN (a quantity that does not exist, e.g. the ANN accuracy of a directly trained model) and infinity
    (e.g. an energy ratio over zero SNN energy) are JSON null: strict JSON has neither."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def show(result: RunResult, title: str, as_json: bool, quiet: bool) -> None:
    if as_json:
        payload = {"summary": {k: _json_number(v) for k, v in result.summary.items()}, "sweep_accuracy_pct": {str(t): a for t, a in result.sweep.items()},
                   "report_dir": str(result.report_dir), "artifact": str(result.artifact) if result.artifact else None}
        print(json.dumps(payload, indent=2, default=str))
        return
    console.print(summary_table(result, title))
    if not quiet:
        console.print(sweep_table(result))
    if result.artifact is not None:
        console.print(f"Artifact: [bold]{result.artifact}[/bold]  (weights.pt + manifest.json)")
    console.print(f"Reports:  [bold]{result.report_dir}[/bold]  (report.md, summary.csv, layers.csv, sweep.csv, plots)")


def teas_table(rows: list[dict], extra: dict) -> Table:
    table = Table(title="TEAS: per-layer time steps", header_style="bold")
    for name in ("layer", "Act (spikes/neuron/step)", "cut drop (points)", "noise drop (points)", "T_l",
                 "syn. ops/sample uniform", "syn. ops/sample TEAS"):
        table.add_column(name, **_column_style(name))
    for r in rows:
        table.add_row(r["layer"], f"{r['activity_spikes_per_neuron_per_step']:.4f}", f"{r['cut_drop_points']:+.2f}",
                      f"{r['noise_drop_points']:+.2f}", str(r["time_steps_teas"]),
                      f"{r['synaptic_ops_per_sample_uniform']:,.0f}", f"{r['synaptic_ops_per_sample_teas']:,.0f}")
    matching = extra.get("uniform_steps_of_equal_accuracy")
    table.caption = (f"uniform T={extra['uniform_time_steps']}: {extra['uniform_snn_accuracy_pct']:.2f} %; "
                     f"op-weighted mean T_l {extra['teas_avg_time_steps_op_weighted']:.2f}; uniform T of equal accuracy "
                     f"(within 0.1 points): {matching if matching else 'none'}{_reduction(extra)}; spike timing "
                     f"{extra['teas_timing']} "
                     f"({extra['teas_crossings_linear']} of {extra['teas_crossings']} window crossings linear)")
    low, high = extra["teas_holdout_lost_points_lower"], extra["teas_holdout_lost_points_upper"]
    table.caption += (f"; on the {extra['teas_holdout_samples']} held-out samples the allocation lost "
                      f"{extra['teas_holdout_lost_points']:.2f} points (90 % interval {low:.2f} to {high:.2f})")
    if extra.get("teas_budget_exceeded"):
        from snnconv.compress.teas import budget_exceeded_text
        table.caption += ". " + budget_exceeded_text(extra)
    return table


def _reduction(summary: dict) -> str:
    """The caption's reduction at equal accuracy with its interval, e.g. ' (2.84x fewer steps on average, 90 %
    bootstrap interval 2.12-3.27x)'; empty without an equal-accuracy T."""
    ratio = summary.get("avg_time_steps_reduction_vs_equal_accuracy_x")
    low, high = (summary.get(f"avg_time_steps_reduction_vs_equal_accuracy_x_{end}") for end in ("p5", "p95"))
    if ratio is None or low is None:
        return ""
    return f" ({_fewer_steps(ratio)} on average, 90 % bootstrap interval {low:.2f}-{high:.2f}x)"


def _fewer_steps(ratio: float) -> str:
    """'2.84x fewer steps', or, below 1, '1.14x more steps': a ratio under 1 is not a reduction."""
    return f"{ratio:.2f}x fewer steps" if ratio >= 1 else f"{1 / ratio:.2f}x more steps"


def _column_style(name: str) -> dict:
    """Names left, numbers right; a layer name wraps rather than being cut to 'features…' in an 80-column CI
    log, where the rows could no longer be told apart."""
    if name == "layer":
        return {"justify": "left", "overflow": "fold"}
    return {"justify": "left" if name == "kind" else "right"}


def dts_table(rows: list[dict], summary: dict) -> Table:
    table = Table(title="DTS: learned time steps per layer", header_style="bold")
    for name in ("layer", "input similarity (step 1 vs later)", "suggested", "penalized", "T_l",
                 "syn. ops/sample uniform", "syn. ops/sample DTS"):
        table.add_column(name, **_column_style(name))
    for r in rows:
        table.add_row(r["layer"], f"{r['input_similarity_first_vs_later']:.4f}",
                      "yes" if r["suggested_for_mask_loss"] else "no", "yes" if r["penalized"] else "no",
                      str(r["time_steps_dts"]), _fmt(r["synaptic_ops_per_sample_uniform"], ",.0f"),
                      _fmt(r["synaptic_ops_per_sample_dts"], ",.0f"))
    matching = summary.get("uniform_steps_of_equal_accuracy")
    table.caption = (f"T_max={summary['uniform_time_steps']}: uniform {summary['uniform_snn_accuracy_pct']:.2f} %, "
                     f"DTS {summary['snn_accuracy_pct']:.2f} % at average T {summary['avg_time_steps']:.2f} steps; "
                     f"uniform T of equal accuracy (within 0.1 points): {matching if matching else 'none'}"
                     f"{_reduction(summary)}")
    return table


def profile_table(result: RunResult) -> Table:
    """Per-layer spiking activity of an evaluation (``--profile``)."""
    from snnconv.metrics.summary import layer_spikes_per_sample
    sim = result.evaluation.simulation
    table = Table(title="Per-layer spiking activity", header_style="bold")
    for name in ("layer", "kind", "neurons", "T_l", "spikes/neuron/step", "spikes/sample", "first spike step"):
        table.add_column(name, **_column_style(name))
    for layer in sim.neuron_layers:
        spikes = layer_spikes_per_sample(sim, layer, sim.time_steps)
        steps = layer.time_steps if layer.active_steps is None else layer.active_steps  # DTS: the steps it ran
        rate = spikes / (layer.neurons * steps) if layer.neurons and steps else 0.0
        fired = [i for i, count in enumerate(layer.spikes_per_step) if count > 0]
        table.add_row(layer.name, layer.kind, f"{layer.neurons:,}", str(steps), f"{rate:.4f}",
                      f"{spikes:,.0f}", str(fired[0] + 1) if fired else "-")
    return table


def _beside(title: str, baseline: str, method: str, rows: list[tuple[str, str, str, str]]) -> Table:
    """A method's headline numbers beside its baseline's: (quantity, baseline, method, unit) per row."""
    table = Table(title=title, header_style="bold")
    for name, justify in (("quantity", "left"), (baseline, "right"), (method, "right"), ("unit", "left")):
        table.add_column(name, justify=justify)
    for row in rows:
        table.add_row(*row)
    return table


def ttfs_table(summary: dict) -> Table:
    """The TTFS network beside the rate-coded network it came from."""
    table = _beside("TTFS: one spike per neuron vs rate coding", "rate-coded", "TTFS", [
        ("accuracy", _fmt(summary["rate_snn_accuracy_pct"], ".2f"), _fmt(summary["snn_accuracy_pct"], ".2f"), "%"),
        ("time steps (latency)", str(summary["rate_time_steps"]), str(summary["ttfs_latency_steps"]), "steps"),
        ("spikes per sample", _fmt(summary["rate_spikes_per_sample"], ",.0f"), _fmt(summary["spikes_per_sample"], ",.0f"),
         "spikes"),
        ("synaptic ops per sample", _fmt(summary["rate_synaptic_ops_per_sample"], ",.0f"),
         _fmt(summary["synaptic_ops_per_sample"], ",.0f"), "AC"),
        ("energy per sample", _fmt(summary["rate_energy_pj_per_sample_snn"] / 1e6, ".3f"),
         _fmt(summary["energy_pj_per_sample_snn"] / 1e6, ".3f"), "µJ")])
    matching = summary.get("rate_steps_of_equal_accuracy")
    reduction = summary.get("spike_reduction_vs_rate_equal_accuracy_x")
    table.caption = (f"most spikes of any neuron: {summary['ttfs_most_spikes_per_neuron']}; rate-coded T of equal "
                     f"accuracy (within 0.1 points): {matching if matching else 'none'}"
                     + (f", {reduction:.1f}x the TTFS spikes" if reduction else ""))
    few = few_kernel_updates(summary, summary["snn_accuracy_pct"])
    if few:
        table.caption += "; " + few
    return table


def seenn_table(summary: dict) -> Table:
    """The early-exit result beside the fixed-T network it came from."""
    table = _beside(f"{summary['seenn_method']}: early exit vs fixed T", "fixed T", "early exit", [
        ("accuracy", _fmt(summary["fixed_snn_accuracy_pct"], ".2f"), _fmt(summary["snn_accuracy_pct"], ".2f"), "%"),
        ("time steps per sample", str(summary["fixed_time_steps"]), _fmt(summary["avg_exit_time_steps"], ".2f"), "steps"),
        ("wall time per sample", _fmt(summary["wall_time_per_sample_ms_fixed"], ".2f"),
         _fmt(summary["wall_time_per_sample_ms_exit"], ".2f"), "ms"),
        ("synaptic ops per sample", _fmt(summary["fixed_synaptic_ops_per_sample"], ",.0f"),
         _fmt(summary["synaptic_ops_per_sample"], ",.0f"), "AC"),
        ("energy per sample", _fmt(summary["fixed_energy_pj_per_sample_snn"] / 1e6, ".3f"),
         _fmt(summary["energy_pj_per_sample_snn"] / 1e6, ".3f"), "µJ")])
    matching = summary.get("fixed_steps_of_equal_accuracy")
    rule = (f"alpha {summary['seenn_alpha']:.6g} on {summary['seenn_score']} (temperature {summary['seenn_temperature']:g})"
            if summary["seenn_method"] == "SEENN-I" else f"policy network (beta {summary['seenn_beta']:g})")
    if summary.get("seenn_budget_confidence") is not None:
        rule += (f", chosen to lose at most {summary['seenn_accuracy_budget_points']:g} points on the held-out split "
                 f"with confidence {summary['seenn_budget_confidence']:g}")
    table.caption = (f"{rule}; fixed T of equal accuracy (within 0.1 points): {matching if matching else 'none'}"
                     f"{_reduction(summary)}; oracle AET {summary['oracle_aet_time_steps']:.2f} steps")
    overspent = budget_overspent(summary, summary["snn_accuracy_pct"])
    table.caption += "; " + (overspent or f"the exits {holdout_loss_text(summary)}")
    if summary.get("seenn_finetuned"):  # the fixed T column is the fine-tuned network's; say what it was before
        before = summary["converted_steps_of_equal_accuracy"]
        ratio = summary["avg_time_steps_reduction_vs_either_fixed_x"]
        table.caption += (f"; fine-tuned ({summary['finetune_loss']}): the network before fine-tuning had "
                          f"{summary['converted_snn_accuracy_pct']:.2f} % at fixed T and reaches the exit accuracy "
                          f"at fixed T = {before if before else 'none'}"
                          + (f"; against the better of the two fixed-T networks {_fewer_steps(ratio)}" if ratio
                             else ""))
    return table
