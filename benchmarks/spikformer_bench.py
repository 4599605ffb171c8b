"""Spiking transformer benchmark (issue #7 part 4 / measurement b): a small Spikformer trained directly on
Fashion-MNIST at uniform T = 1, 2, 4, and DTS masks learned on the trained T = 4 model through the product path
(`snnconv compress --method dts` on its artifact), with the mask loss on different groups (the paper's Table III).

Every model starts from the same seed and trains on the first ``--train-samples`` images of the seeded training
permutation (Adam, ``--lr``, batch 64, cosine, ``--epochs``). DTS then fine-tunes the T = 4 model for
``--dts-epochs`` on the same images with the CLI's DTS defaults (weights: SGD lr 1e-3, momentum 0.9; masks: SGD at
``--mask-lr``; lambda_m ``--mask-weight``). For a fair baseline the T = 4 model is also fine-tuned the same way
without masks. Evaluation: the whole test set (``--limit`` to shorten). Average T = mean over LIF layers of the
steps each runs; spiking activity = spikes / (LIF neurons x T_max).

    /work/venv/bin/python benchmarks/spikformer_bench.py
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import _common as C  # noqa: E402

from snnconv import artifacts  # noqa: E402
from snnconv.compress import run_compress  # noqa: E402
from snnconv.data import DataConfig, load_data  # noqa: E402
from snnconv.direct_network import FAMILY, DirectNetwork  # noqa: E402
from snnconv.direct_workflows import evaluate_direct  # noqa: E402
from snnconv.metrics.summary import exceeds  # noqa: E402
from snnconv.metrics import load_energy_model, summarize  # noqa: E402
from snnconv.spikformer import Spikformer, SpikformerConfig  # noqa: E402
from snnconv.stages.direct import DirectConfig, train_direct  # noqa: E402
from snnconv.stages.dts import DtsConfig  # noqa: E402
from snnconv.training import TrainConfig  # noqa: E402

COMMAND = "/work/venv/bin/python benchmarks/spikformer_bench.py"
DTS_RUNS = (("DTS, loss on qkv + mlp", ("qkv", "mlp")), ("DTS, loss on all groups", ("*",)),
            ("DTS, loss on sps + attn", ("sps", "attn")), ("DTS, no mask loss", None))


def _row(label: str, network: DirectNetwork, evaluation, train_s: float, losses: list[float]) -> dict:
    sim = evaluation.simulation
    summary = summarize(sim, evaluation.ann, load_energy_model("45nm"))
    neurons = sum(layer.neurons for layer in sim.neuron_layers)
    print(f"  [{label}] acc {summary['snn_accuracy_pct']:.2f} avg T {summary['avg_time_steps']:.2f} ({train_s:.0f} s)",
          flush=True)
    return {"label": label, "time_steps": network.time_steps, "accuracy_pct": summary["snn_accuracy_pct"],
            "avg_t": summary["avg_time_steps"], "spikes_per_sample": summary["spikes_per_sample"],
            "spiking_activity": summary["spikes_per_sample"] / (neurons * network.time_steps),
            "synaptic_ops_per_sample": summary["synaptic_ops_per_sample"],
            "energy_pj_per_sample": summary["energy_pj_per_sample_snn"],
            "layer_steps": network.layer_steps, "losses": losses, "train_s": train_s}


def run(args) -> dict:
    train_spec = DataConfig(f"fashion-mnist:{C.FMNIST_DIR}", split="train", limit=args.train_samples, seed=C.SEED)
    test_spec = DataConfig(f"fashion-mnist:{C.FMNIST_DIR}", split="test", limit=args.limit, seed=C.SEED)
    train, test = load_data(train_spec), load_data(test_spec)
    model_config = SpikformerConfig(depth=args.depth, dim=args.dim, heads=args.heads)
    adam = TrainConfig(epochs=args.epochs, batch_size=64, lr=args.lr, optimizer="adam", momentum=0.0, weight_decay=0.0)
    results, base = [], None
    for steps in (1, 2, 4):
        torch.manual_seed(0)
        model = Spikformer(model_config)
        t0 = time.perf_counter()
        _trainable, log = train_direct(model, train, DirectConfig(time_steps=steps, train=adam))
        network = DirectNetwork(model=model, time_steps=steps, input_shape=(1, 28, 28), num_classes=10,
                                source={"source": "spikformer_bench", "family": FAMILY},
                                training={"config": adam.to_dict(), "epoch_losses": log.epoch_losses})
        results.append(_row(f"uniform T = {steps}", network, evaluate_direct(network, test, steps),
                            time.perf_counter() - t0, log.epoch_losses))
        base = network
    tuning = DtsConfig().train  # the CLI's DTS optimizer, for the masks' runs and the no-mask baseline
    tuning = replace(tuning, epochs=args.dts_epochs)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "uniform4"
        artifacts.save_direct(base, source, extra_manifest={"run": {"train_data": train_spec.to_dict(),
                                                                    "data": test_spec.to_dict()}})
        t0 = time.perf_counter()
        baseline = artifacts.load_direct(source)
        _t, log = train_direct(baseline.model, train, DirectConfig(time_steps=4, train=tuning))
        results.append(_row("uniform T = 4, fine-tuned like DTS (no masks)", baseline,
                            evaluate_direct(baseline, test, 4), time.perf_counter() - t0, log.epoch_losses))
        for label, groups in DTS_RUNS:
            config = DtsConfig(mask_weight=0.0 if groups is None else args.mask_weight, groups=groups or ("*",),
                               mask_lr=args.mask_lr, train=tuning)
            t0 = time.perf_counter()
            outcome = run_compress(source, "dts", output=Path(tmp) / "dts", config=config, calib_data=train_spec,
                                   data=test_spec, seed=C.SEED).outcome
            row = _row(label, outcome.network, outcome.evaluation, time.perf_counter() - t0,
                       outcome.details.log.epoch_losses)
            results.append({**row, "groups": list(groups or ()), "mask_weight": config.mask_weight,
                            "penalized": outcome.details.penalized})
    return {"model": model_config.to_dict(), "train_samples": len(train), "samples": len(test), "epochs": args.epochs,
            "lr": args.lr, "dts_epochs": args.dts_epochs, "tuning": tuning.to_dict(), "mask_lr": args.mask_lr,
            "mask_weight": args.mask_weight, "runs": results, "date": C.today(), "snnconv": C.git_head(),
            "torch": torch.__version__, "machine": C.machine()}


def render(r: dict) -> None:
    m = r["model"]
    runs = {x["label"]: x for x in r["runs"]}
    uniform4 = runs.get("uniform T = 4")
    tuned = runs.get("uniform T = 4, fine-tuned like DTS (no masks)")
    lines = [
        "## 8. Spiking transformer (Spikformer-style) with DTS", "",
        f"Command: `{COMMAND}` (results: `benchmarks/results/spikformer_fmnist.json`). Machine: {r['machine']}.", "",
        f"Spikformer-{m['depth']}-{m['dim']} ({m['heads']} heads, MLP ratio {m['mlp_ratio']}, LIF tau {m['tau']:g}, "
        f"28x28 -> 49 tokens; `snnconv/spikformer.py`) trained directly (surrogate gradients, CE on the step-averaged "
        f"output) on the first {r['train_samples']} images of the seeded Fashion-MNIST training permutation for "
        f"{r['epochs']} epoch(s) (Adam lr {r['lr']:g}, batch 64, cosine); every model starts from the same "
        "initialization. DTS runs go through the product path: the uniform T = 4 model is saved as an artifact and "
        f"`snnconv compress --method dts` learns a T_max = 4 mask per LIF layer while fine-tuning the weights for "
        f"{r['dts_epochs']} epoch(s) on the same images (weights SGD lr {r['tuning']['lr']:g}, momentum "
        f"{r['tuning']['momentum']:g}; masks SGD lr {r['mask_lr']:g}; lambda_m {r['mask_weight']:g} on the named "
        "groups). The T = 4 model fine-tuned the same way without masks is the fair baseline. Evaluated on "
        f"{r['samples']} test images. Average T = mean of T_l over the LIF layers; spiking activity = spikes / (LIF "
        "neurons x T); synaptic ops and energy (45 nm) as defined in docs/metrics.md and docs/spikformer.md. The bar "
        "asks DTS for average T below T_max with accuracy within 0.5 points of the uniform-T_max model"
        + (f" ({uniform4['accuracy_pct']:.2f} %)." if uniform4 else "."), ""]
    body = []
    for x in r["runs"]:
        bar, versus_tuned = "", ""
        if x["label"].startswith("DTS"):
            holds = (uniform4 is not None and x["avg_t"] < 4
                     and not exceeds(uniform4["accuracy_pct"] - x["accuracy_pct"], 0.5))
            bar = "holds" if holds else "FAILS"
            versus_tuned = f"{x['accuracy_pct'] - tuned['accuracy_pct']:+.2f}" if tuned else ""
        body.append([x["label"], f"{x['accuracy_pct']:.2f}", f"{x['avg_t']:.2f}", bar, versus_tuned,
                     f"{100 * x['spiking_activity']:.2f}", f"{x['spikes_per_sample']:,.0f}",
                     f"{x['synaptic_ops_per_sample'] / 1e6:.2f}", f"{x['energy_pj_per_sample'] / 1e6:.3f}",
                     f"{x['train_s']:.0f}"])
    lines += [C.md_table(["run", "accuracy (%)", "avg T", "bar", "vs fine-tuned T=4 (points)",
                          "spiking activity (%)", "spikes/sample", "synaptic ops/sample (M)", "energy (µJ/sample)",
                          "train (s)"], body), ""]
    masked = [x for x in r["runs"] if x["label"].startswith("DTS")]
    if masked:
        names = list(masked[0]["layer_steps"])
        lines += ["Learned T_l per LIF layer (steps):", "",
                  C.md_table(["layer"] + [x["label"] for x in masked],
                             [[name] + [str(x["layer_steps"][name]) for x in masked] for name in names]), ""]
    C.update_doc("spikformer", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-samples", type=int, default=10000)
    parser.add_argument("--limit", type=int, default=None, help="test images (default: all 10,000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dts-epochs", type=int, default=1)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mask-weight", type=float, default=3e-3)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--mask-lr", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    C.RESULTS.mkdir(parents=True, exist_ok=True)
    path = C.RESULTS / "spikformer_fmnist.json"
    if not args.render_only:
        path.write_text(json.dumps(run(args), indent=1, default=float))
    render(json.loads(path.read_text()))


if __name__ == "__main__":
    main()
