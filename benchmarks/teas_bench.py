"""TEAS benchmark (issue: per-layer time steps): average T, accuracy, synaptic operations and energy of the
TEAS allocation beside the accuracy-vs-uniform-T curve of the same converted network.

Per model: the default pipeline, with the mse threshold search for the base T (``--balance-steps T``, the
default before 2026-12-02), converts for the base T on the 1000 benchmark calibration images; TEAS
profiles half of them and allocates on the other half (default TeasConfig: accuracy budget 0.1 points,
T_l in {T, T/2, ..., 1}); the uniform network and the TEAS network are then simulated on the evaluation set
(the first ``--limit`` images of the seeded test permutation). "Uniform T of equal accuracy" is the smallest
t at which the uniform network, read out after t steps, is within 0.1 points of the TEAS accuracy.

    /work/venv/bin/python benchmarks/teas_bench.py --models vgg,resnet

``--timing-comparison``: instead of allocating, take the allocation this benchmark stored in
``teas_<model>.json``, convert the same network, and measure it under every spike timing between windows
(linear map, sub-step interpolated crossing, the slides' x + Vth/Vfire; docs/teas.md, "5. Execute") on the
same images in one run (result: ``teas-timing_<model>.json``). Each timing is measured twice: on the network
recalibrated under the linear map (only the execution differs) and on the network recalibrated under that
timing (what ``snnconv compress --method teas --timing T`` produces for this allocation).

    /work/venv/bin/python benchmarks/teas_bench.py --models vgg --timing-comparison --limit 2000
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import _common as C  # noqa: E402

import snnconv  # noqa: E402
import snnconv.zoo  # noqa: E402
from snnconv.api import load_model  # noqa: E402
from snnconv.compress import teas_rows, teas_summary, uniform_steps_matching  # noqa: E402
from snnconv.config import SPIKE_TIMINGS, ConvertConfig, SimulationConfig  # noqa: E402
from snnconv.engine import Engine  # noqa: E402
from snnconv.metrics import load_energy_model, summarize  # noqa: E402
from snnconv.metrics.summary import exceeds, first_step_within  # noqa: E402
from snnconv.stages.calibrate import calibrate  # noqa: E402
from snnconv.stages.finetune import FinetuneConfig, finetune  # noqa: E402
from snnconv.stages.teas import TeasConfig, teas  # noqa: E402
from snnconv.training import TrainConfig  # noqa: E402

COMMAND = "/work/venv/bin/python benchmarks/teas_bench.py"
FINETUNE_LOSS_NAMES = {"ce": "cross-entropy on the labels",
                       "distill": "squared error to the ANN's outputs (`--finetune-loss distill`)"}


def finetune_config(epochs: int, lr: float, loss: str) -> FinetuneConfig:
    """How the benchmark fine-tunes, a TEAS network and its uniform control alike."""
    return FinetuneConfig(train=TrainConfig(epochs=epochs, batch_size=32, lr=lr, optimizer="adam", weight_decay=0.0),
                          loss=loss)


def run(model: str, base: int, limit: int, holdout: float, finetune_samples: int = 0, finetune_epochs: int = 1,
        budget: float = 0.1, default_balance: bool = False, teas_samples: int = C.CALIBRATION_SAMPLES,
        retune: bool = True, calibrated_trials: bool = True, candidates: tuple[int, ...] = (),
        unseen: bool = False, finetune_loss: str = "ce", finetune_lr: float = 1e-4) -> dict:
    cal, test = C.training_data(model), C.test_data(model, limit)
    if unseen:  # test images the network was never trained on, disjoint from the evaluation images
        if C.UNSEEN_TEST_START < limit:
            raise SystemExit(f"--unseen-teas-images needs test images from {C.UNSEEN_TEST_START} on, outside the "
                             f"{limit} evaluation images")
        teas_cal = C.test_data(model, C.UNSEEN_TEST_START + teas_samples, start=C.UNSEEN_TEST_START)
    else:  # the first teas_samples training images (they include the conversion's)
        teas_cal = C.training_data(model, teas_samples)
    imported = load_model(C.source_model(model), example=cal.x)
    t0 = time.perf_counter()
    network = snnconv.convert(imported, cal, ConvertConfig(time_steps=base, balance=C.balance(base, default_balance)))
    t1 = time.perf_counter()
    simulation = SimulationConfig(time_steps=base)
    uniform = snnconv.evaluate(network, test, simulation)
    config = TeasConfig(holdout_fraction=holdout, accuracy_budget=budget, retune_thresholds=retune,
                        calibrated_trials=calibrated_trials, candidates=candidates)
    result = teas(network, teas_cal, config, time_steps=base, progress=lambda m: print(f"  [{model}] {m}", flush=True))
    t2 = time.perf_counter()
    network.layer_time_steps = {k: v for k, v in result.layer_time_steps.items() if v != base}
    compressed = snnconv.evaluate(network, test, simulation)
    energy = load_energy_model("45nm")
    tuned = {}
    if finetune_samples:
        before = summarize(compressed.simulation, compressed.ann, energy)
        train = C.training_data(model, finetune_samples)
        t3 = time.perf_counter()
        log = finetune(network, train, finetune_config(finetune_epochs, finetune_lr, finetune_loss),
                       layer_costs={p.name: p.cost for p in result.profiles})
        tuned = {"finetune_samples": finetune_samples, "finetune_epochs": finetune_epochs,
                 "finetune_loss": finetune_loss, "finetune_lr": finetune_lr,
                 "finetune_s": time.perf_counter() - t3, "finetune_losses": log.epoch_losses,
                 "before_finetune_accuracy_pct": before["snn_accuracy_pct"],
                 "before_finetune_synaptic_ops_per_sample": before["synaptic_ops_per_sample"]}
        compressed = snnconv.evaluate(network, test, simulation)
    rows = teas_rows(network, result, uniform, compressed)
    extra = teas_summary(result, uniform, compressed, rows, energy)
    after = summarize(compressed.simulation, compressed.ann, energy)
    return {
        "model": model, "base_t": base, "samples": limit, "accuracy_budget": budget, "default_balance": default_balance,
        "teas_samples": teas_samples, "teas_images": teas_cal.description, "retune_thresholds": retune,
        "retuned_layers": len(result.retuned_thresholds), "calibrated_trials": result.calibrated_trials,
        "candidates": config.steps_for(base),
        "command": " ".join([COMMAND] + sys.argv[1:]), "ann_accuracy_pct": uniform.ann.accuracy,
        "uniform_curve_pct": [uniform.simulation.accuracy_at(t) for t in range(1, base + 1)],
        "teas_accuracy_pct": after["snn_accuracy_pct"], "teas_avg_t": after["avg_time_steps"],
        "teas_synaptic_ops_per_sample": after["synaptic_ops_per_sample"],
        "teas_energy_pj_per_sample": after["energy_pj_per_sample_snn"],
        "ann_energy_pj_per_sample": after["energy_pj_per_sample_ann"],
        "layer_time_steps": result.layer_time_steps, "rows": rows, "summary": extra,
        "convert_s": t1 - t0, "teas_s": t2 - t1, "holdout": result.holdout_samples,
        "date": C.today(), "machine": C.machine(), "snnconv": C.git_head(), "torch": torch.__version__,
        "equal_accuracy_t": uniform_steps_matching(uniform, after["snn_accuracy_pct"]), **tuned,
    }


def result_name(model: str, args) -> tuple[str, str]:
    """The result file of ``model`` under these options, and its label in the tables."""
    name, label = (f"teas_{model}_finetune.json", f"{model} + fine-tune") if args.finetune_samples else \
        (f"teas_{model}.json", model)
    for present, suffix, tag in (
            (args.budget != 0.1, f"_budget{args.budget:g}", f" (budget {args.budget:g} points)"),
            (args.base_t != 32, f"_t{args.base_t}", f" (base T {args.base_t})"),
            (args.default_balance, "_default-balance", " (default balance)"),
            (args.teas_samples != C.CALIBRATION_SAMPLES, f"_cal{args.teas_samples}", f" ({args.teas_samples} TEAS images)"),
            (args.keep_thresholds, "_kept", " (thresholds kept)"),
            (args.uncalibrated_trials, "_uncal-trials", " (uncalibrated trials)"),
            (bool(args.candidates), f"_cand{args.candidates.replace(',', '-')}", f" (T_l in {{{args.candidates}}})"),
            (args.unseen_teas_images, "_unseen", " (unseen TEAS images)"),
            (args.finetune_samples and args.finetune_loss != "ce", f"_{args.finetune_loss}",
             f" ({args.finetune_loss} loss)"),
            (args.finetune_samples and args.finetune_lr != 1e-4, f"_lr{args.finetune_lr:g}",
             f" (lr {args.finetune_lr:g})"),
            (args.finetune_samples and args.finetune_samples != 5000, f"_ft{args.finetune_samples}",
             f" ({args.finetune_samples} fine-tuning images)")):
        if present:
            name, label = name.replace(".json", f"{suffix}.json"), label + tag
    return name, label


def extend_curve(model: str, stored: dict, t_max: int) -> dict:
    """``stored`` with its uniform curve measured on to ``t_max`` steps: the same conversion run longer on the
    same images (its first base-T points must reproduce the stored ones), and the equal-accuracy T found on it."""
    base, limit = stored["base_t"], stored["samples"]
    cal, test = C.training_data(model), C.test_data(model, limit)
    network = snnconv.convert(load_model(C.source_model(model), example=cal.x), cal, ConvertConfig(
        time_steps=base, balance=C.balance(base, stored.get("default_balance", False))))
    sim = snnconv.evaluate(network, test, SimulationConfig(time_steps=t_max)).simulation
    curve = [sim.accuracy_at(t) for t in range(1, t_max + 1)]
    if any(abs(a - b) > 1e-9 for a, b in zip(curve, stored["uniform_curve_pct"])):
        raise SystemExit(f"{model}: the longer run does not reproduce the stored curve; not extending it.")
    stored["uniform_curve_pct"] = curve
    stored["equal_accuracy_t"] = first_step_within(curve, stored["teas_accuracy_pct"])
    stored["curve_command"] = " ".join([COMMAND] + sys.argv[1:])
    return stored


def finetune_uniform(model: str, base: int, limit: int, steps: list[int], samples: int, epochs: int, loss: str,
                     lr: float, default_balance: bool) -> dict:
    """The control of a fine-tuned TEAS row: the converted network run uniformly at each t of ``steps`` (every
    layer at t), fine-tuned exactly as the TEAS network is, on the same images; accuracy before and after."""
    cal, test = C.training_data(model), C.test_data(model, limit)
    train = C.training_data(model, samples)
    converted = snnconv.convert(load_model(C.source_model(model), example=cal.x), cal,
                                ConvertConfig(time_steps=base, balance=C.balance(base, default_balance)))
    points = []
    for t in steps:
        network = copy.deepcopy(converted)
        network.time_steps = t
        before = snnconv.evaluate(network, test, SimulationConfig(time_steps=t)).simulation.accuracy_at(t)
        start = time.perf_counter()
        finetune(network, train, finetune_config(epochs, lr, loss))
        seconds = time.perf_counter() - start
        after = snnconv.evaluate(network, test, SimulationConfig(time_steps=t)).simulation.accuracy_at(t)
        print(f"  [{model}] uniform t={t}: {before:.2f} % -> {after:.2f} % after fine-tuning ({seconds:.0f} s)",
              flush=True)
        points.append({"t": t, "before_pct": before, "after_pct": after, "finetune_s": seconds})
    return {"model": model, "base_t": base, "samples": limit, "default_balance": default_balance,
            "finetune_samples": samples, "finetune_epochs": epochs, "finetune_loss": loss, "finetune_lr": lr,
            "points": points, "command": " ".join([COMMAND] + sys.argv[1:]), "date": C.today(),
            "machine": C.machine(), "snnconv": C.git_head(), "torch": torch.__version__}


def finetuned_uniform_lines(results: list[dict]) -> list[str]:
    if not results:
        return []
    lines = ["### Fine-tuned uniform networks (the control of the fine-tuned TEAS rows)", "",
             "The converted network run with every layer at t steps, fine-tuned exactly as the TEAS rows above "
             "(same images, loss, learning rate and epochs), then measured on the same evaluation images: what "
             "fine-tuning alone gives without a per-layer allocation. The bar column of a fine-tuned TEAS row compares "
             "it with the converted uniform curve, which was not fine-tuned; it therefore credits the allocation with "
             "what fine-tuning did, and this table is the fair comparison (docs/teas.md section 6). "
             + C.machines_sentence(results), ""]
    body = [[r["model"], str(p["t"]), r["finetune_loss"], f"{r['finetune_lr']:g}", str(r["finetune_samples"]),
             str(r["finetune_epochs"]), f"{p['before_pct']:.2f}", f"{p['after_pct']:.2f}", f"{p['finetune_s']:.0f}"]
            for r in results for p in r["points"]]
    lines += [C.md_table(["model", "uniform t", "loss", "lr", "images", "epochs", "accuracy before (%)",
                          "accuracy after (%)", "fine-tuning s"], body), ""]
    lines += [f"Command: `{r['command']}`." for r in results] + [""]
    return lines


def compare_timings(model: str, base: int, limit: int) -> dict:
    """The stored TEAS allocation of ``model`` under each spike timing, on the same ``limit`` test images."""
    stored = json.loads((C.RESULTS / f"teas_{model}.json").read_text())
    if stored["base_t"] != base:
        raise SystemExit(f"teas_{model}.json was allocated for T={stored['base_t']}, not --base-t {base}.")
    windows = {k: int(v) for k, v in stored["layer_time_steps"].items() if int(v) != base}
    cal, test = C.training_data(model), C.test_data(model, limit)
    converted = snnconv.convert(load_model(C.source_model(model), example=cal.x), cal,
                                ConvertConfig(time_steps=base, balance=C.balance(base)))
    simulation = SimulationConfig(time_steps=base)
    uniform = snnconv.evaluate(converted, test, simulation)
    energy = load_energy_model("45nm")

    def recalibrated(timing: str):
        network = copy.deepcopy(converted)
        network.layer_time_steps = dict(windows)
        with torch.no_grad():  # as TEAS does after allocating: calibration redone over the allocated windows
            calibrate(Engine(network.graph), cal.x[:network.config.calibration_samples], base,
                      network.config.calibrate, 8, layer_steps=windows, timing=timing)
        return network

    def measure(network, timing: str) -> dict:
        start = time.perf_counter()
        evaluation = snnconv.evaluate(network, test, SimulationConfig(time_steps=base, timing=timing))
        s = summarize(evaluation.simulation, evaluation.ann, energy)
        print(f"  [{model}] {timing}: {s['snn_accuracy_pct']:.2f} % ({time.perf_counter() - start:.0f} s)", flush=True)
        crossings = Engine(network.graph).crossings(network.time_plan(8, timing=timing))
        return {"timing": timing, "accuracy_pct": s["snn_accuracy_pct"],
                "synaptic_ops_per_sample": s["synaptic_ops_per_sample"], "spikes_per_sample": s["spikes_per_sample"],
                "curve_pct": [evaluation.simulation.accuracy_at(t) for t in range(1, base + 1)],
                "crossings": [c.__dict__ for c in crossings]}

    linear_calibrated = recalibrated("linear")
    same_calibration = [measure(linear_calibrated, timing) for timing in SPIKE_TIMINGS]
    own_calibration = [same_calibration[0]] + [measure(recalibrated(timing), timing) for timing in SPIKE_TIMINGS[1:]]
    return {"model": model, "base_t": base, "samples": limit, "layer_time_steps": stored["layer_time_steps"],
            "ann_accuracy_pct": uniform.ann.accuracy,
            "uniform_accuracy_pct": uniform.simulation.accuracy_at(base), "linear_calibration": same_calibration,
            "own_calibration": own_calibration, "date": C.today(), "snnconv": C.git_head(),
            "torch": torch.__version__}


def timing_lines(results: list[dict]) -> list[str]:
    """The timing comparison as markdown (docs/benchmarks.md, section 4)."""
    if not results:
        return []
    models, samples = ",".join(r["model"] for r in results), results[0]["samples"]
    lines = ["### Spike timing between windows (fixed allocation)", "",
             f"Command: `{COMMAND} --models {models} --timing-comparison --limit {samples} --threads 1` (results: "
             "`benchmarks/results/teas-timing_<model>.json`). The allocation stored by the run above, the same "
             "converted network, every timing on the same test images in one run. `linear`: t' = floor(t W / S); "
             "`substep`: from the interpolated threshold-crossing time x + f, f = (theta - V_before) / I; "
             "`substep-vfire`: the slides' x + Vth / Vfire (docs/teas.md, \"5. Execute\"). Recalibration under "
             "linear: the network TEAS built, only the execution differs; recalibration under each timing: what "
             "`compress --method teas --timing T` gives for this allocation.", ""]
    header = ["model", "images", f"uniform T={results[0]['base_t']}", "recalibrated under", "timing", "accuracy (%)", "syn. ops/sample",
              "spikes/sample"]
    body = []
    for r in results:
        for label, runs in (("linear", r["linear_calibration"]), ("each timing", r["own_calibration"])):
            for run_ in runs:
                body.append([r["model"], str(r["samples"]), f"{r['uniform_accuracy_pct']:.2f}", label, run_["timing"],
                             f"{run_['accuracy_pct']:.2f}", f"{run_['synaptic_ops_per_sample']:,.0f}",
                             f"{run_['spikes_per_sample']:,.0f}"])
    lines += [C.md_table(header, body), ""]
    for r in results:
        crossings = r["linear_calibration"][1]["crossings"]
        marks = sorted({t for t in (1, 2, 4, 8, 12, 16, 24, 32) if t <= r["base_t"]})
        lines += [f"`{r['model']}` windows {r['layer_time_steps']}; crossings between windows: " + "; ".join(
            f"{c['source']} ({c['source_steps']}) -> {c['consumer']} ({c['target_steps']}, {c['signal']})"
            for c in crossings) + ".", "",
            "Accuracy (%) read out after t steps:", "",
            C.md_table(["timing (recalibrated under linear)"] + [f"t={t}" for t in marks],
                       [[x["timing"]] + [f"{x['curve_pct'][t - 1]:.2f}" for t in marks]
                        for x in r["linear_calibration"]]), ""]
    return lines


def render(results: list[dict]) -> None:
    lines = ["## 4. TEAS: per-layer time steps", "",
             f"Command: `{COMMAND}` (results: `benchmarks/results/teas_<model>.json`). " + C.machines_sentence(results), "",
             "`mseT-channel-half-advanced` (the default pipeline with the mse search for the base T, as before 2026-12-02; section 1; "
             "models tagged `default balance` use today's default `mse-channel-half-advanced`, the search for T/2, "
             "`--default-balance`) converted for the base T on the 1000 benchmark calibration images; TEAS (default "
             "options: accuracy budget 0.1 points, unless the model's name gives another, on a held-out part of those "
             "images, half unless the per-model line below says otherwise, T_l in {T, T/2, ..., 1}) "
             "profiles the rest. Accuracy, operations and energy are measured on the evaluation set for the "
             "uniform network and the TEAS network in the same run. Average T = mean of T_l over neuron layers "
             "(the readout keeps the base T). `equal-accuracy T` = smallest uniform t whose accuracy is within 0.1 "
             "points of the TEAS accuracy; the bar asks for average T at least 3x below it. Where TEAS is more accurate "
             "than the uniform network at the base T, its curve is measured on past the base T (the same network run "
             "longer on the same images, `--extend-curve T_MAX`), and `> N` means no uniform t up to N reaches it. `held-out` = TEAS's "
             "held-out images (one image = 100 / held-out points; models tagged `N TEAS images` allocate on N "
             "training images, `--teas-samples N`; models tagged `unseen TEAS images` take them from test images "
             f"{C.UNSEEN_TEST_START} on instead, never trained on and disjoint from the evaluation images, for the held-out split, the "
             "profile and the calibrated trials alike, `--unseen-teas-images`; `T_l in {...}` names candidates other than "
             "the halving ones, `--candidates`). `cut thresholds`: `retuned (k)` = the k cut layers' thresholds "
             "searched again for their T_l (the default since 2026-12-03, docs/teas.md section 4); `kept` = the "
             "thresholds balanced for the base T (`--keep-thresholds`, and every row measured before that date). `trials`: "
             "`calibrated` = every sensitivity cut and allocation move measured after calibrating for its windows, as "
             "the result runs (the default since 2026-12-03, docs/teas.md section 4); `uncalibrated` = measured "
             "before that calibration, which only the result got (`--uncalibrated-trials`, and every row measured "
             "before that date, whose result was calibrated from the first layer on rather than the first cut one).", ""]
    header = ["model", "images", "held-out", "cut thresholds", "trials", "ANN", "base T", "uniform @ base", "TEAS acc", "TEAS avg T", "op-weighted T",
              "equal-accuracy T", "ratio", "bar >= 3x", "syn. ops uniform", "syn. ops TEAS", "energy uniform (µJ)",
              "energy TEAS (µJ)"]
    body = []
    for r in results:
        s = r["summary"]
        # no uniform t <= base reaches the TEAS accuracy: the equal-accuracy T is above base, the ratio above base / avg
        above, measured_to = r["equal_accuracy_t"] is None, len(r["uniform_curve_pct"])
        ratio = (r["equal_accuracy_t"] or measured_to) / r["teas_avg_t"]
        thresholds = f"retuned ({r['retuned_layers']})" if r.get("retune_thresholds") else "kept"
        trials = "calibrated" if r.get("calibrated_trials") else "uncalibrated"
        body.append([r["model"], str(r["samples"]), str(r["holdout"]), thresholds, trials, f"{r['ann_accuracy_pct']:.2f}",
                     str(r["base_t"]),
                     f"{s['uniform_snn_accuracy_pct']:.2f}", f"{r['teas_accuracy_pct']:.2f}", f"{r['teas_avg_t']:.2f}",
                     f"{s['teas_avg_time_steps_op_weighted']:.2f}",
                     f"> {measured_to}" if above else str(r["equal_accuracy_t"]),
                     f"{'> ' if above else ''}{ratio:.2f}", "FAILS" if exceeds(3, ratio) else "holds",
                     f"{s['uniform_synaptic_ops_per_sample']:,.0f}", f"{r['teas_synaptic_ops_per_sample']:,.0f}",
                     f"{s['uniform_energy_pj_per_sample_snn'] / 1e6:.3f}", f"{r['teas_energy_pj_per_sample'] / 1e6:.3f}"])
    lines += [C.md_table(header, body), ""]
    for r in results:
        if r.get("finetune_samples"):
            lines += [f"`{r['model']}` (`--finetune-samples {r['finetune_samples']}`): after allocation, surrogate-gradient "
                      f"BPTT with T_l fixed on {r['finetune_samples']} training images, {r['finetune_epochs']} epoch(s), "
                      f"{FINETUNE_LOSS_NAMES[r.get('finetune_loss', 'ce')]}, Adam lr {r.get('finetune_lr', 1e-4):g}, "
                      f"batch 32, activity weight 0 ({r['finetune_s']:.0f} s). Accuracy "
                      f"{r['before_finetune_accuracy_pct']:.2f} % before fine-tuning -> {r['teas_accuracy_pct']:.2f} % "
                      f"after; synaptic ops per sample {r['before_finetune_synaptic_ops_per_sample']:,.0f} -> "
                      f"{r['teas_synaptic_ops_per_sample']:,.0f}.", ""]
    for r in results:
        curve = r["uniform_curve_pct"]
        marks = sorted({t for t in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
                        if t <= len(curve)})
        lines += [f"### {r['model']}: uniform curve and per-layer allocation", "",
                  C.md_table(["uniform t"] + [str(t) for t in marks], [["accuracy (%)"] + [f"{curve[t - 1]:.2f}" for t in marks]]),
                  "",
                  C.md_table(["layer", "Act", "cut drop (points)", "noise drop (points)", "T_l", "syn. ops uniform",
                              "syn. ops TEAS"],
                             [[x["layer"], f"{x['activity_spikes_per_neuron_per_step']:.4f}",
                               f"{x['cut_drop_points']:+.2f}", f"{x['noise_drop_points']:+.2f}", str(x["time_steps_teas"]),
                               f"{x['synaptic_ops_per_sample_uniform']:,.0f}", f"{x['synaptic_ops_per_sample_teas']:,.0f}"]
                              for x in r["rows"]]),
                  "",
                  "Spearman rho of activity vs sensitivity: " + ", ".join(
                      f"{k.removeprefix('rho_activity_vs_')} {v:+.2f}" for k, v in r["summary"].items()
                      if k.startswith("rho_")) + f". TEAS took {r['teas_s']:.0f} s "
                  f"({r['summary']['teas_allocation_simulations']} held-out simulations of {r['holdout']} images)."
                  + (f" Command: `{r['command']}`." if r.get("command") else ""), ""]
    lines += finetuned_uniform_lines([json.loads(p.read_text())
                                      for p in sorted(C.RESULTS.glob("teas-finetuned-uniform_*.json"))])
    lines += timing_lines([json.loads(p.read_text()) for p in sorted(C.RESULTS.glob("teas-timing_*.json"))])
    C.update_doc("teas", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vgg,resnet")
    parser.add_argument("--base-t", type=int, default=32,
                        help="the uniform T converted for and cut from (result: teas_<model>_t<T>.json unless 32)")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--holdout", type=float, default=0.5)
    parser.add_argument("--budget", type=float, default=0.1,
                        help="accuracy budget in points (result: teas_<model>_budget<B>.json unless 0.1)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--finetune-samples", type=int, default=0,
                        help="also fine-tune with T_l fixed on this many training images (result: teas_<model>_finetune.json)")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-loss", choices=("ce", "distill"), default="ce",
                        help="fine-tuning loss: cross-entropy on the labels or squared error to the ANN's outputs")
    parser.add_argument("--finetune-lr", type=float, default=1e-4, help="fine-tuning learning rate (Adam)")
    parser.add_argument("--finetune-uniform", metavar="STEPS",
                        help="instead of running TEAS: fine-tune the uniform network at each of these t (e.g. 8,16) "
                             "as --finetune-* say, the control of a fine-tuned TEAS row "
                             "(result: teas-finetuned-uniform_<model>.json)")
    parser.add_argument("--timing-comparison", action="store_true",
                        help="measure the stored allocation under every spike timing (result: teas-timing_<model>.json)")
    parser.add_argument("--default-balance", action="store_true",
                        help="convert with the product default (mse search for T/2) instead of the search for T")
    parser.add_argument("--teas-samples", type=int, default=C.CALIBRATION_SAMPLES,
                        help="training images TEAS profiles and allocates on (result: teas_<model>_cal<N>.json unless "
                             f"{C.CALIBRATION_SAMPLES}); the conversion keeps its {C.CALIBRATION_SAMPLES}")
    parser.add_argument("--keep-thresholds", action="store_true",
                        help="TEAS keeps the thresholds balanced for T (result: teas_<model>_kept.json)")
    parser.add_argument("--uncalibrated-trials", action="store_true",
                        help="TEAS measures its trials without calibrating for their windows (result: "
                             "teas_<model>_uncal-trials.json)")
    parser.add_argument("--candidates", default="",
                        help="TEAS's allowed T_l, e.g. 32,24,16,12,8,6,4,3,2,1 (default: halving from the base T; "
                             "result: teas_<model>_cand<list>.json)")
    parser.add_argument("--unseen-teas-images", action="store_true",
                        help=f"TEAS profiles and allocates on test images {C.UNSEEN_TEST_START}.. of the seeded permutation (never "
                             "trained on, never evaluated) instead of training images, its calibrated trials too (result: "
                             "teas_<model>_unseen.json)")
    parser.add_argument("--extend-curve", type=int, default=0, metavar="T_MAX",
                        help="instead of running TEAS: measure the stored run's uniform curve on to T_MAX steps (same "
                             "conversion, same images), for a TEAS accuracy the uniform network does not reach by the base T")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    C.RESULTS.mkdir(parents=True, exist_ok=True)
    if args.finetune_uniform and not args.render_only:
        if not args.finetune_samples:
            raise SystemExit("--finetune-uniform needs --finetune-samples.")
        for model in args.models.split(","):
            result = finetune_uniform(model, args.base_t, args.limit, [int(t) for t in args.finetune_uniform.split(",")],
                                      args.finetune_samples, args.finetune_epochs, args.finetune_loss, args.finetune_lr,
                                      args.default_balance)
            (C.RESULTS / f"teas-finetuned-uniform_{model}.json").write_text(json.dumps(result, indent=1, default=float))
    elif args.timing_comparison and not args.render_only:
        for model in args.models.split(","):
            result = compare_timings(model, args.base_t, args.limit)
            (C.RESULTS / f"teas-timing_{model}.json").write_text(json.dumps(result, indent=1, default=float))
    elif args.extend_curve and not args.render_only:
        for model in args.models.split(","):
            path = C.RESULTS / result_name(model, args)[0]
            result = extend_curve(model, json.loads(path.read_text()), args.extend_curve)
            path.write_text(json.dumps(result, indent=1, default=float))
            print(f"[{model}] equal-accuracy uniform T {result['equal_accuracy_t']} (curve to {args.extend_curve})")
    elif not args.render_only:
        for model in args.models.split(","):
            result = run(model, args.base_t, args.limit, args.holdout, args.finetune_samples, args.finetune_epochs,
                         args.budget, args.default_balance, args.teas_samples, not args.keep_thresholds,
                         not args.uncalibrated_trials,
                         tuple(int(c) for c in args.candidates.split(",")) if args.candidates else (),
                         args.unseen_teas_images, args.finetune_loss, args.finetune_lr)
            name, result["model"] = result_name(model, args)
            (C.RESULTS / name).write_text(json.dumps(result, indent=1, default=float))
            print(f"[{model}] TEAS acc {result['teas_accuracy_pct']:.2f} avg T {result['teas_avg_t']:.2f} "
                  f"equal-accuracy uniform T {result['equal_accuracy_t']}", flush=True)
    results = [json.loads(p.read_text()) for p in sorted(C.RESULTS.glob("teas_*.json"))]
    render(results)


if __name__ == "__main__":
    main()
