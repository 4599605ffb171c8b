"""TTFS benchmark (issue: time-to-first-spike): accuracy and spikes of the TTFS network with kernel fitting
only and with surrogate-model fine-tuning, the SR / TR / TB ablation, beside the rate-coded network of equal
accuracy.

The default pipeline, with the mse threshold search for T = 32 (``--balance-steps 32``, the default before
2026-12-02), converts the model for T = 32 on the 1000 benchmark calibration images. The rate-coded
network is simulated to ``--rate-t`` steps on the evaluation set (the first ``--limit`` images of the
seeded test permutation). The TTFS network is built from it (99.9th-percentile thresholds, T_w = T_s = 32,
tc = 8) and its kernels are fitted on the calibration images. Each fine-tuning configuration starts from
that fitted network and trains on the first ``--finetune-samples`` training images of the seeded permutation.
"Rate-coded T of equal accuracy" is the smallest t at which the rate-coded network, read out after t steps,
is within 0.1 points of the TTFS accuracy. Its spikes are counted over those t steps.

    /work/venv/bin/python benchmarks/ttfs_bench.py --models vgg
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import _common as C  # noqa: E402

import snnconv  # noqa: E402
from snnconv.api import load_model  # noqa: E402
from snnconv.compress.ttfs import surrogate_agreement, ttfs_rows, ttfs_summary  # noqa: E402
from snnconv.config import ConvertConfig, SimulationConfig  # noqa: E402
from snnconv.metrics import load_energy_model, summarize  # noqa: E402
from snnconv.metrics.summary import exceeds  # noqa: E402
from snnconv.stages.ttfs import (TTFSConfig, TTFSFinetuneConfig, build_ttfs, finetune_ttfs, fit_kernels,  # noqa: E402
                                 kernel_updates, measure_fit)
from snnconv.training import TrainConfig  # noqa: E402

COMMAND = "/work/venv/bin/python benchmarks/ttfs_bench.py"
BASE_T = 32
# name -> what differs from the full fine-tuning (SR, TR, TB all on at the paper's weights)
ABLATIONS = {"fine-tuned (SR + TR + TB)": {}, "without SR": {"relaxation": False},
             "without TR": {"kernel_regularization": 0.0}, "without TB": {"bn_loss": 0.0}}


def _measure(network, test, rate, initial, energy, batch_size: int, updates: int) -> dict:
    simulation = SimulationConfig(time_steps=network.time_steps, batch_size=batch_size)
    start = time.perf_counter()
    evaluation = snnconv.evaluate(network, test, simulation)
    wall = time.perf_counter() - start
    agreement = surrogate_agreement(network, test, batch_size, torch.device("cpu"))
    summary = summarize(evaluation.simulation, evaluation.ann, energy)
    extra = ttfs_summary(network, TTFSConfig(window=network.ttfs.window), evaluation, rate, energy, agreement,
                         None, updates=updates)
    rows = ttfs_rows(network, evaluation, rate, initial, measure_fit(network, test))
    return {"summary": {**summary, **extra}, "rows": rows, "evaluate_s": wall}


def run(model: str, limit: int, rate_t: int, finetune_samples: int, epochs: int, ablation: bool, bn_weights,
        config: TTFSConfig, tag: str) -> dict:
    cal, test = C.training_data(model), C.test_data(model, limit)
    energy = load_energy_model("45nm")
    imported = load_model(C.source_model(model), example=cal.x)
    rate_network = snnconv.convert(imported, cal, ConvertConfig(time_steps=BASE_T, balance=C.balance(BASE_T)))
    rate = snnconv.evaluate(rate_network, test, SimulationConfig(time_steps=rate_t))
    runs = {}

    network = build_ttfs(rate_network, cal, replace(config, fit_epochs=0))
    initial = measure_fit(network, test)
    runs["initial kernels"] = _measure(network, test, rate, initial, energy, 250, updates=0)
    updates = kernel_updates(len(cal), config)
    start = time.perf_counter()
    if config.fit_epochs:
        fit_kernels(network, cal, config)
        runs["fitted kernels"] = _measure(network, test, rate, initial, energy, 250, updates)
    fit_s = time.perf_counter() - start
    fitted = network
    results = {"model": model, "tag": tag, "samples": limit, "rate_t": rate_t, "ann_accuracy_pct": rate.ann.accuracy,
               "rate_curve_pct": rate.simulation.accuracy_per_step.tolist(), "fit_s": fit_s, "runs": runs,
               "config": config.to_dict(), "finetune_samples": finetune_samples, "epochs": epochs,
               "date": C.today(), "snnconv": C.git_head(), "torch": torch.__version__}
    if finetune_samples:
        train = C.training_data(model, finetune_samples)
        variants = dict(ABLATIONS) if ablation else {"fine-tuned (SR + TR + TB)": {}}
        for weight in bn_weights:
            variants[f"fine-tuned, TB weight {weight:g}"] = {"bn_loss": weight}
        for name, change in variants.items():
            network = copy.deepcopy(fitted)
            tuning = replace(TTFSFinetuneConfig(train=TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, optimizer="adam",
                                                                  weight_decay=1e-4)), **change)
            start = time.perf_counter()
            log = finetune_ttfs(network, train, replace(config, finetune=True, tuning=tuning),
                                progress=None)
            train_s = time.perf_counter() - start
            runs[name] = {**_measure(network, test, rate, initial, energy, 250, updates), "train_s": train_s,
                          "losses": log.epoch_losses, "tuning": tuning.to_dict()}
            print(f"  [{model}] {name}: {runs[name]['summary']['snn_accuracy_pct']:.2f} %, "
                  f"{runs[name]['summary']['spikes_per_sample']:,.0f} spikes ({train_s:.0f} s)", flush=True)
            (C.RESULTS / f"ttfs_{model}{tag}.json").write_text(json.dumps(results, indent=1, default=float))
    return results


def _cell(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render(results: list[dict]) -> None:
    lines = ["## 6. TTFS: one spike per neuron", "",
             f"Command: `{COMMAND} --models vgg --finetune-samples N --epochs E` (results: "
             f"`benchmarks/results/ttfs_<model>.json`). Machine: {C.machine()}.", "",
             "`mseT-channel-half-advanced` (the default pipeline with the mse search for the base T, as before 2026-12-02; section 1) converts for T = 32 on the 1000 benchmark calibration images; the rate-coded "
             "network is simulated to the rate T shown. The TTFS network is built from it (99.9th-percentile "
             "thresholds, T_s = T_w, the window and initial tc of each heading, latency (D - 1) T_s + T_w steps), its "
             "kernels fitted on the calibration images (passes as stated), then fine-tuned through the surrogate model (Adam lr 1e-3, cosine, "
             "batch 64, weight decay 1e-4; SR ramp over the first half; TR and TB weights 1e-5 unless stated). "
             "`equal-acc. rate T` is the smallest t at which the rate-coded network is within 0.1 points of the "
             "TTFS accuracy, and `rate spikes` its spikes per sample over those t steps; when no t up to the rate T "
             "reaches it, the rate spikes at the rate T are a lower bound (marked >). `drop vs ANN` is against the "
             "source ANN (before fine-tuning changed the weights). Bars: at most 1 spike "
             "per neuron; accuracy within 1 point of the ANN after fine-tuning; at least 10x fewer spikes than the "
             "rate-coded network of equal accuracy.", ""]
    for r in results:
        c = r["config"]
        lines += [f"### {r['model']}, T_w = {c['window']}, tc = {c['tc']:g}, {c['fit_epochs']} fitting passes: "
                  f"{r['samples']} test images, ANN {r['ann_accuracy_pct']:.2f} %, rate-coded "
                  f"{r['rate_curve_pct'][BASE_T - 1]:.2f} % at T = {BASE_T}"
                  + (f"; fine-tuning on {r['finetune_samples']} training images, {r['epochs']} epochs" if r["finetune_samples"] else ""), ""]
        header = ["TTFS network", "accuracy (%)", "drop vs ANN", "spikes/sample", "spikes/neuron", "most spikes of a neuron",
                  "latency (steps)", "syn. ops/sample", "energy (µJ)", "surrogate agreement (%)", "equal-acc. rate T",
                  "rate spikes", "spike ratio", "bar 10x", "train (s)"]
        body = []
        for name, run in r["runs"].items():
            s = run["summary"]
            ratio = s["spike_reduction_vs_rate_equal_accuracy_x"]
            matching = s["rate_steps_of_equal_accuracy"]
            bound = ""
            if matching is None:  # the rate-coded network never gets there: it would need more than rate T steps
                ratio, bound = s["spike_reduction_vs_rate_x"], "> "
            body.append([name, f"{s['snn_accuracy_pct']:.2f}", f"{r['ann_accuracy_pct'] - s['snn_accuracy_pct']:.2f}",
                         f"{s['spikes_per_sample']:,.0f}", f"{s['ttfs_spikes_per_neuron']:.3f}",
                         str(s["ttfs_most_spikes_per_neuron"]), str(s["ttfs_latency_steps"]),
                         f"{s['synaptic_ops_per_sample']:,.0f}", f"{s['energy_pj_per_sample_snn'] / 1e6:.3f}",
                         f"{s['ttfs_surrogate_agreement_pct']:.2f}", str(matching) if matching else f"> {r['rate_t']}",
                         f"{bound}{s['rate_spikes_per_sample_equal_accuracy' if matching else 'rate_spikes_per_sample']:,.0f}",
                         f"{bound}{ratio:.1f}", "holds" if not exceeds(10, ratio) else ("n/a" if bound else "FAILS"),
                         _cell(run.get("train_s"), ".0f")])
        lines += [C.md_table(header, body), ""]
        curve = r["rate_curve_pct"]
        marks = [t for t in (4, 8, 12, 16, 20, 24, 28, 32, 48, 64, 96, 128) if t <= len(curve)]
        lines += [C.md_table(["rate-coded t"] + [str(t) for t in marks], [["accuracy (%)"] + [f"{curve[t - 1]:.2f}" for t in marks]]), ""]
        final = list(r["runs"].values())[-1]
        lines += [f"Per layer, `{list(r['runs'])[-1]}`:", "",
                  C.md_table(["layer", "depth", "tc", "td", "spikes/sample", "spikes/neuron", "rate-coded spikes/sample",
                              "precision error", "initial precision error", "below range (%)"],
                             [[x["layer"], str(x["depth"]), f"{x['tc']:.2f}", f"{x['td']:.2f}",
                               f"{x['spikes_per_sample']:,.0f}", f"{x['spikes_per_neuron']:.3f}",
                               _cell(x["spikes_per_sample_rate_coded"], ",.0f"), f"{x['precision_error']:.2e}",
                               f"{x['initial_precision_error']:.2e}", f"{x['below_range_pct']:.1f}"]
                              for x in final["rows"]]), ""]
    C.update_doc("ttfs", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vgg")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--rate-t", type=int, default=64)
    parser.add_argument("--finetune-samples", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--bn-weights", default="", help="extra fine-tuning runs with these TB weights, e.g. 1e-3,1e-2")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--tc", type=float, default=8.0)
    parser.add_argument("--fit-epochs", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the result file, e.g. _w16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    C.RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.render_only:
        weights = [float(w) for w in args.bn_weights.split(",") if w]
        for model in args.models.split(","):
            config = TTFSConfig(window=args.window, tc=args.tc, fit_epochs=args.fit_epochs)
            result = run(model, args.limit, args.rate_t, args.finetune_samples, args.epochs, not args.no_ablation,
                         weights, config, args.tag)
            (C.RESULTS / f"ttfs_{model}{args.tag}.json").write_text(json.dumps(result, indent=1, default=float))
    render([json.loads(p.read_text()) for p in sorted(C.RESULTS.glob("ttfs_*.json"))])


if __name__ == "__main__":
    main()
