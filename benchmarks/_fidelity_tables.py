"""Render the conversion-fidelity tables (snnconv and SpikingJelly rows side by side) into docs/benchmarks.md.

Stdlib + benchmarks._common only: both fidelity.py (snnconv venv) and spikingjelly_compare.py (its own venv)
call :func:`render` after each finished configuration, so the document always shows every row measured so far.
"""
from __future__ import annotations

from _common import (CIFAR_MODELS, FIDELITY_MODELS, MODEL_TITLES, STEPS, accuracy, combine, csv_path, md_table,
                     read_rows, update_doc)

DEFAULT = "mse-channel-half-advanced"
PREVIOUS = "mseT-channel-half-advanced"  # the default until the mse search moved to T/2 (`--balance-steps T`)
WEIGHTS = "mseT-channel-half-weights"  # the opt-in weight calibration (`--calibrate weights`), as measured
SIGNED = "mseT-channel-half-advanced-signed"  # with signed spikes (`--signed-spikes`), as measured
# SPEC section 5 bars: (T, allowed drop in points) per model family; SPEC names ResNet-20 for the CIFAR-10 bars,
# and ResNet-32 is held to them too
BARS = {"fmnist": ((32, 0.3), (16, 1.0)), "cifar": ((32, 1.0), (64, 0.3))}

FIDELITY_COMMAND = "/work/venv/bin/python benchmarks/fidelity.py"
SJ_COMMAND = "/work/sjvenv/bin/python benchmarks/spikingjelly_compare.py"

CONFIG_HELP = """Configuration names: `BALANCE-GRANULARITY-INIT-CALIBRATION`. BALANCE is `max`, `p99.99`
(percentile of the positive activations), `mse` (threshold minimizing the quantization error for half the target
T, i.e. T = 16 levels for a network converted for T = 32, the library default since 2026-12-02, docs/design.md
"Thresholds instead of weight normalization") or `mseT` (the same search for the target T itself, Li et al.
2021, the default before; `--balance-steps T`); GRANULARITY `layer` or `channel`; INIT `half` (V(0) = theta/2) or `zero`; CALIBRATION `none`, `light`
(bias), `advanced` (bias + initial potential) or `weights` (conv / linear weights refitted to the ANN from the
SNN's inputs, then advanced; docs/design.md, "Calibration"), computed on 256 of the calibration images (the library
default `calibration_samples`). mse balancing and calibration target one T: 32 unless the name ends in `@T16`
or `@T64` (converted for that T). A name with `-signed` after the calibration has neurons that also emit
negative spikes retracting earlier ones (`--signed-spikes`, not the default; docs/design.md, "Signed spikes").
`mse-channel-half-advanced` is the library default (`ConvertConfig()`), and
the CLI converts for the first `--time-steps` value, so a user asking for T = 16 gets `mse-channel-half-advanced@T16`.
SpikingJelly rows (`SJ ...`) are its `RateCodingRecipe` (the ann2snn Converter) with mode `max`, `99.9%`,
`99.99%` or `0.5` (half of the maximum), layer-wise IF neurons with reset by subtraction and V(0) = 0 unless the
name says `channel half` (its `channel_wise=True, half_threshold=True` options). Every toolkit gets the same
1000 calibration images (first 1000 of the seeded permutation of the training split)."""


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def _delta(value: float) -> str:
    return f"{value:+.2f}"


def _family(model: str) -> str:
    return "cifar" if model in CIFAR_MODELS else "fmnist"


def _rows(model: str) -> tuple[list[dict], list[dict]]:
    ours = read_rows(csv_path("fidelity", model))
    sj = read_rows(csv_path("spikingjelly", model))
    return ours, sj


def full_row(ours: list[dict], config: str = DEFAULT) -> dict | None:
    """The evaluation-set row of a configuration: its grid-subset row plus its 'rest' row."""
    grid = [r for r in ours if r["config"] == config and r["subset"] == "grid"]
    rest = [r for r in ours if r["config"] == config and r["subset"] == "rest"]
    if grid and not any(r["subset"] == "rest" for r in ours):
        return grid[0]  # the evaluation set is the grid subset itself
    if not grid or not rest:
        return None
    return combine([grid[0], rest[0]], "eval")


def default_for(t: int, pipeline: str = DEFAULT) -> str:
    """A pipeline as converted for T = t (for the default: what `snnconv convert --time-steps t` runs)."""
    return pipeline if t == 32 else f"{pipeline}@T{t}"


def bar_lines(model: str, ours: list[dict], pipeline: str = DEFAULT) -> list[str]:
    from snnconv.metrics.summary import exceeds  # here: the SpikingJelly venv renders these tables too

    lines = []
    for t, allowed in BARS[_family(model)]:
        row = full_row(ours, default_for(t, pipeline))
        if row is None:
            lines.append(f"T={t}: not measured yet (bar {allowed})")
            continue
        ann = accuracy(row)
        drop = ann - accuracy(row, t)
        verdict = "FAILS" if exceeds(drop, allowed) else "holds"
        lines.append(f"T={t}: ANN - SNN = {drop:.2f} points with `{default_for(t, pipeline)}` (bar {allowed}): **{verdict}**")
    return lines


def _compared_rows(ours: list[dict], sj: list[dict], config: str, by_config: dict,
                   sj_grid: list[dict]) -> tuple[dict, list[dict]]:
    """Our row of ``config`` and every SpikingJelly mode's row on the largest set all of them ran on:
    the evaluation set when each has its grid and 'rest' rows there, else the grid subset."""
    mine = full_row(ours, config)
    theirs = [full_row(sj, r["config"]) for r in sj_grid]
    if mine is not None and all(r is not None and r["samples"] == mine["samples"] for r in theirs):
        return mine, theirs
    return by_config[config], sj_grid


def _score(row: dict) -> float:
    """Ranking score for 'best pipeline': mean accuracy over T = 4, 8, 16, 32."""
    return sum(accuracy(row, t) for t in (4, 8, 16, 32)) / 4


def model_section(model: str) -> str:
    ours, sj = _rows(model)
    if not ours and not sj:
        return ""
    out = [f"### {MODEL_TITLES[model]}", ""]
    eval_subset = "rest" if any(x["subset"] == "rest" for x in ours) else "grid"
    names = [DEFAULT] + list(dict.fromkeys(r["config"] for r in ours if r["subset"] == eval_subset))
    full_rows = [row for row in (full_row(ours, name) for name in dict.fromkeys(names)) if row is not None]
    if full_rows:
        header = ["pipeline", "images", "ANN"] + [f"T={t}" for t in STEPS] + [f"Δ{t}" for t, _ in BARS[_family(model)]]
        body = []
        for row in full_rows:
            a = accuracy(row)
            body.append([f"**{DEFAULT}** (default)" if row["config"] == DEFAULT else row["config"], str(row["samples"]),
                         _fmt(a)] + [_fmt(accuracy(row, t)) for t in STEPS]
                        + [_delta(accuracy(row, t) - a) for t, _ in BARS[_family(model)]])
        samples = full_rows[0]["samples"]
        out += [f"Evaluation set ({samples} test images{'' if int(samples) == 10000 else ', a seeded random sample'}):",
                "", md_table(header, body), ""]
        out += ["Bars (default pipeline converted for the T of the bar): " + "; ".join(bar_lines(model, ours)) + ".", ""]
        if full_row(ours, PREVIOUS) is not None:
            out += ["The same bars with the previous default (`mseT`: the mse search for the target T): "
                    + "; ".join(bar_lines(model, ours, PREVIOUS)) + ".", ""]
        if full_row(ours, WEIGHTS) is not None:
            out += ["The same bars with weight calibration (`--calibrate weights`, not the default; `mseT` balancing): "
                    + "; ".join(bar_lines(model, ours, WEIGHTS)) + ".", ""]
        if full_row(ours, SIGNED) is not None:
            out += ["The same bars with signed spikes (`--signed-spikes`, not the default; `mseT` balancing): "
                    + "; ".join(bar_lines(model, ours, SIGNED)) + ".", ""]
    grid = [r for r in ours if r["subset"] == "grid"] + [r for r in sj if r["subset"] == "grid"]
    if grid:
        n = grid[0]["samples"]
        header = ["toolkit / pipeline", "ANN"] + [f"T={t}" for t in STEPS]
        body = []
        for r in grid:
            name = r["config"] if r["toolkit"] == "snnconv" else f"SJ {r['config']}"
            if r["toolkit"] == "snnconv" and r["config"] == DEFAULT:
                name = f"**{name}**"
            body.append([name, _fmt(accuracy(r))] + [_fmt(accuracy(r, t)) for t in STEPS])
        out += [f"Grid on the first {n} images of the evaluation set (all rows on the same images):", "",
                md_table(header, body), ""]
        ours_grid = [r for r in grid if r["toolkit"] == "snnconv"]
        if ours_grid:
            best = max(ours_grid, key=_score)
            best16 = max(ours_grid, key=lambda r: accuracy(r, 16))
            best32 = max(ours_grid, key=lambda r: accuracy(r, 32))
            out.append(f"Best snnconv pipeline by mean accuracy over T=4..32: `{best['config']}` "
                       f"({_score(best):.2f}); best at T=16: `{best16['config']}` ({_fmt(accuracy(best16, 16))}); "
                       f"best at T=32: `{best32['config']}` ({_fmt(accuracy(best32, 32))}).")
            by_config = {r["config"]: r for r in ours_grid}
            sj_grid = [r for r in grid if r["toolkit"] == "spikingjelly"]
            for pipeline, title in ((DEFAULT, "Default pipeline"), (PREVIOUS, "Previous default (`mseT`)")):
                compared = [t for t in (1, 2, 4, 8, 16, 32) if default_for(t, pipeline) in by_config]
                if not (compared and sj_grid):
                    continue
                parts, wins = [], 0
                for t in compared:
                    mine, theirs = _compared_rows(ours, sj, default_for(t, pipeline), by_config, sj_grid)
                    top = max(theirs, key=lambda r: accuracy(r, t))
                    margin = accuracy(mine, t) - accuracy(top, t)
                    wins += margin > 0
                    parts.append(f"T={t}: {margin:+.2f} vs SJ {top['config']} ({mine['samples']} images)")
                out.append(f"{title} converted for each T vs the best SpikingJelly mode at that T (points; "
                           "on the evaluation set where both toolkits ran on all of it, else on the grid subset): "
                           f"{'; '.join(parts)} -> better at {wins} of {len(compared)}.")
            out.append("")
    return "\n".join(out)


def render() -> None:
    sections = [s for s in (model_section(m) for m in FIDELITY_MODELS) if s]
    text = "\n".join([
        "## 1. Conversion fidelity",
        "",
        f"Commands: `{FIDELITY_COMMAND}` (snnconv rows; resumable, skips configurations already in "
        "`benchmarks/results/fidelity_*.csv`) and, for the SpikingJelly rows, "
        f"`{SJ_COMMAND}` (see section 2). Tables are rewritten from the CSV files after every configuration.",
        "",
        CONFIG_HELP,
        "",
        "Evaluation sets: the default pipeline (converted for T = 32 and for the bars' second T) runs on the "
        "evaluation set, the test set in a seeded order, of the size the `images` column gives: all 10,000 images "
        "for the default pipeline (`--fmnist-limit 10000` for Fashion-MNIST: on 2000 images the max-pool model's "
        "T = 32 gap, 0.35 points, was 7 images, too few to judge a 0.3-point bar), 2000 for the other "
        "Fashion-MNIST pipelines (`--fmnist-limit 2000`) and SpikingJelly, 10,000 for CIFAR-10; counted as the "
        "grid subset plus the remaining images. The grid of pipelines, the default converted for each small T, and "
        "the SpikingJelly modes run on the first 1000 images of the same permutation, to keep the compute on a "
        "shared 2-core machine reasonable (SpikingJelly also on the Fashion-MNIST evaluation sets, section 2). "
        "The standard error of an accuracy near 90 % is about 0.9 points on 1000 images and 0.3 on 10,000.",
        "",
        *sections,
    ])
    update_doc("fidelity", text)
