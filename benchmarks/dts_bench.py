"""DTS benchmark (issue #7): learned per-layer time-step masks on the converted VGG-style Fashion-MNIST model,
beside the uniform-T curve of the same network and the TEAS result of docs/benchmarks.md section 4.

The default pipeline, with the mse threshold search for T_max (``--balance-steps``, the default before
2026-12-02), converts the embedded `fmnist_vgg` for T_max = 32 on the 1000 benchmark calibration
images (exactly as teas_bench.py does). Each run then trains masks and weights through the SNN
(surrogate-gradient BPTT, `snnconv.stages.dts.train_time_masks`) on the first ``--train-samples`` images of
the seeded training permutation for one epoch, and the masked network is evaluated on the first
``--limit`` images of the seeded test permutation, beside the unmasked network in the same run. The
runs form the group ablation: which layers the mask loss penalizes (all, the layers the sensitivity analysis
suggests, none), each with its own lambda_m.

    /work/venv/bin/python benchmarks/dts_bench.py
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import _common as C  # noqa: E402

import snnconv  # noqa: E402
from snnconv import artifacts  # noqa: E402
from snnconv.api import load_model  # noqa: E402
from snnconv.compress.dts import dts_rows, dts_summary  # noqa: E402
from snnconv.config import ConvertConfig, SimulationConfig  # noqa: E402
from snnconv.metrics import load_energy_model, summarize  # noqa: E402
from snnconv.metrics.summary import exceeds  # noqa: E402
from snnconv.stages.dts import DtsConfig, sensitivity, train_time_masks  # noqa: E402
from snnconv.training import TrainConfig  # noqa: E402

COMMAND = "/work/venv/bin/python benchmarks/dts_bench.py"
MODEL = "vgg"


def _runs(suggested: list[str], mask_weights: list[float]) -> list[tuple[str, tuple[str, ...], float]]:
    """(label, penalized-layer patterns, lambda_m): every lambda on all layers and on the suggested ones, then none."""
    runs = []
    for weight in mask_weights:
        runs.append((f"all layers, lambda_m {weight:g}", ("*",), weight))
        runs.append((f"suggested layers, lambda_m {weight:g}", tuple(suggested), weight))
    runs.append(("no mask loss (lambda_m 0)", ("*",), 0.0))
    return runs


def run(base: int, limit: int, train_samples: int, mask_weights: list[float], mask_lr: float, lr: float,
        only: str | None) -> dict:
    cal, test, train = C.training_data(MODEL), C.test_data(MODEL, limit), C.training_data(MODEL, train_samples)
    imported = load_model(C.source_model(MODEL), example=cal.x)
    t0 = time.perf_counter()
    network = snnconv.convert(imported, cal, ConvertConfig(time_steps=base, balance=C.balance(base)))
    convert_s = time.perf_counter() - t0
    simulation = SimulationConfig(time_steps=base)
    uniform = snnconv.evaluate(network, test, simulation)
    energy = load_energy_model("45nm")
    report = sensitivity(network, train, samples=64)
    suggested = [r.name for r in report if r.suggested]
    staging = Path(tempfile.mkdtemp(prefix="dts-bench-")) / "source"
    artifacts.save(network, staging)  # every run starts from the same converted weights
    results = []
    for label, groups, weight in _runs(suggested, mask_weights):
        if only and only not in label:
            continue
        net = artifacts.load(staging)
        config = DtsConfig(mask_weight=weight, groups=groups, mask_lr=mask_lr, train=TrainConfig(
            epochs=1, batch_size=32, lr=lr, optimizer="sgd", momentum=0.9, weight_decay=0.0))
        t1 = time.perf_counter()
        result = train_time_masks(net, train, config)
        train_s = time.perf_counter() - t1
        masked = snnconv.evaluate(net, test, simulation)
        after = summarize(masked.simulation, masked.ann, energy)
        print(f"  [{label}] acc {after['snn_accuracy_pct']:.2f} avg T {after['avg_time_steps']:.2f} "
              f"({train_s:.0f} s): {result.layer_steps}", flush=True)
        results.append({
            "label": label, "groups": list(groups), "mask_weight": weight, "train_s": train_s,
            "accuracy_pct": after["snn_accuracy_pct"], "avg_t": after["avg_time_steps"],
            "spikes_per_sample": after["spikes_per_sample"], "activation_sparsity": after["activation_sparsity"],
            "synaptic_ops_per_sample": after["synaptic_ops_per_sample"],
            "energy_pj_per_sample": after["energy_pj_per_sample_snn"], "layer_steps": result.layer_steps,
            "rows": dts_rows(net, result, uniform, masked),
            "summary": dts_summary(result, config, uniform, masked, energy, train_samples),
            "curve_pct": [masked.simulation.accuracy_at(t) for t in range(1, base + 1)],
        })
    shutil.rmtree(staging.parent, ignore_errors=True)
    before = summarize(uniform.simulation, uniform.ann, energy)
    return {
        "model": MODEL, "base_t": base, "samples": limit, "train_samples": train_samples, "mask_lr": mask_lr,
        "weight_lr": lr, "ann_accuracy_pct": uniform.ann.accuracy,
        "uniform_curve_pct": [uniform.simulation.accuracy_at(t) for t in range(1, base + 1)],
        "uniform_spikes_per_sample": before["spikes_per_sample"],
        "uniform_activation_sparsity": before["activation_sparsity"],
        "uniform_synaptic_ops_per_sample": before["synaptic_ops_per_sample"],
        "uniform_energy_pj_per_sample": before["energy_pj_per_sample_snn"],
        "sensitivity": [{"layer": r.name, "similarity": r.similarity, "suggested": r.suggested} for r in report],
        "runs": results, "convert_s": convert_s, "date": C.today(), "snnconv": C.git_head(),
        "torch": torch.__version__,
    }


def _teas_reference() -> str:
    path = C.RESULTS / "teas_vgg.json"
    if not path.is_file():
        return "no TEAS result in benchmarks/results/teas_vgg.json"
    teas = json.loads(path.read_text())
    return (f"TEAS on the same converted model (section 4, {teas['samples']} test images): "
            f"{teas['teas_accuracy_pct']:.2f} % at average T {teas['teas_avg_t']:.2f} steps, "
            f"{teas['teas_synaptic_ops_per_sample']:,.0f} synaptic ops per sample")


def render(r: dict) -> None:
    base = r["base_t"]
    uniform_at_max = r["uniform_curve_pct"][base - 1]
    lines = [
        "## 7. DTS: learned per-layer time steps", "",
        f"Command: `{COMMAND}` (results: `benchmarks/results/dts_vgg.json`). Machine: {C.machine()}.", "",
        f"`mseT-channel-half-advanced` (the default pipeline with the mse search for the base T, as before 2026-12-02; section 1) converted `fmnist_vgg` for T_max = {base} on the 1000 benchmark calibration images (as in "
        f"section 4). Each run trains the time masks jointly with the weights through the SNN (surrogate-gradient "
        f"BPTT, docs/dts.md) on the first {r['train_samples']} images of the seeded training permutation for 1 epoch "
        f"(batch 32, SGD momentum 0.9, weights lr {r['weight_lr']:g}, masks lr {r['mask_lr']:g}, cosine), then the "
        f"masked network (each layer runs its first T_l steps, prefix crossing) and the unmasked one are evaluated on "
        f"the same {r['samples']} test images. Average T = mean of T_l over the IF layers (paper Eq. 3). "
        f"`equal-accuracy T` = smallest uniform t within 0.1 points of the run's accuracy, and `reduction` = that t / "
        f"average T (the CLI's `avg_time_steps_reduction_vs_equal_accuracy_x`). The bar asks for average "
        f"T below T_max with accuracy within 0.5 points of the uniform-T_max model ({uniform_at_max:.2f} %). "
        f"{_teas_reference()}.", "",
    ]
    header = ["mask loss on", "accuracy (%)", "vs uniform T_max (points)", "avg T", "equal-accuracy T", "reduction (x)",
              "bar", "spikes/sample", "activation sparsity", "syn. ops/sample", "energy (µJ)", "train (s)"]
    body = [["(uniform T_max, no masks)", f"{uniform_at_max:.2f}", "", str(base), "", "", "",
             f"{r['uniform_spikes_per_sample']:,.0f}", f"{r['uniform_activation_sparsity']:.4f}",
             f"{r['uniform_synaptic_ops_per_sample']:,.0f}", f"{r['uniform_energy_pj_per_sample'] / 1e6:.3f}", ""]]
    for run_ in r["runs"]:
        delta = run_["accuracy_pct"] - uniform_at_max
        holds = run_["avg_t"] < base and not exceeds(-delta, 0.5)
        matching = run_["summary"]["uniform_steps_of_equal_accuracy"]
        body.append([run_["label"], f"{run_['accuracy_pct']:.2f}", f"{delta:+.2f}", f"{run_['avg_t']:.2f}",
                     str(matching) if matching else f"> {base}",
                     f"{matching / run_['avg_t']:.2f}" if matching else "-", "holds" if holds else "FAILS",
                     f"{run_['spikes_per_sample']:,.0f}", f"{run_['activation_sparsity']:.4f}",
                     f"{run_['synaptic_ops_per_sample']:,.0f}", f"{run_['energy_pj_per_sample'] / 1e6:.3f}",
                     f"{run_['train_s']:.0f}"])
    lines += [C.md_table(header, body), ""]
    marks = [t for t in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64) if t <= base]
    lines += ["Uniform-T curve of the unmasked network (same run):", "",
              C.md_table(["uniform t"] + [str(t) for t in marks],
                         [["accuracy (%)"] + [f"{r['uniform_curve_pct'][t - 1]:.2f}" for t in marks]]), ""]
    layers = [s["layer"] for s in r["sensitivity"]]
    lines += ["Learned T_l per layer (steps), with the sensitivity analysis (cosine similarity of the layer's input "
              "histogram at step 1 and over later steps; `*` = suggested for the mask loss):", "",
              C.md_table(["run"] + [f"{s['layer']} ({s['similarity']:.3f}{' *' if s['suggested'] else ''})"
                                    for s in r["sensitivity"]],
                         [[run_["label"]] + [str(run_["layer_steps"][name]) for name in layers] for run_ in r["runs"]]),
              ""]
    C.update_doc("dts", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-t", type=int, default=32)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--mask-weights", default="0.003,0.01")
    parser.add_argument("--mask-lr", type=float, default=DtsConfig().mask_lr)
    parser.add_argument("--lr", type=float, default=DtsConfig().train.lr)
    parser.add_argument("--only", default=None, help="run only the runs whose label contains this text")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    C.RESULTS.mkdir(parents=True, exist_ok=True)
    path = C.RESULTS / "dts_vgg.json"
    if not args.render_only:
        result = run(args.base_t, args.limit, args.train_samples, [float(w) for w in args.mask_weights.split(",")],
                     args.mask_lr, args.lr, args.only)
        path.write_text(json.dumps(result, indent=1, default=float))
    render(json.loads(path.read_text()))


if __name__ == "__main__":
    main()
