"""Spiking transformer benchmark (issue #7 part 4 / measurement b): a small Spikformer trained directly on
Fashion-MNIST at uniform T = 1, 2, 4, beside DTS runs at T_max = 4 with the mask loss on different groups.

Every run starts from the same seed and trains on the first ``--train-samples`` images of the seeded training
permutation (Adam, ``--lr`` 5e-3, batch 64, cosine, ``--epochs``); masks learn with the same optimizer at
``--mask-lr``, starting with all steps on (docs/dts.md). Evaluation: the first ``--limit`` images of the seeded test
permutation. Average T = mean over LIF layers of the steps each runs; spiking activity = spikes / (LIF neurons
x T_max).

    /work/venv/bin/python benchmarks/spikformer_bench.py
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import _common as C  # noqa: E402

from snnconv.data import LabeledData  # noqa: E402
from snnconv.spikformer import GROUPS, Spikformer, SpikformerConfig  # noqa: E402
from snnconv.stages.direct import DirectConfig, evaluate_direct, freeze_masks, train_direct  # noqa: E402
from snnconv.training import TrainConfig  # noqa: E402

COMMAND = "/work/venv/bin/python benchmarks/spikformer_bench.py"


def _runs(mask_weight: float) -> list[tuple[str, int, bool, tuple[str, ...], float]]:
    """(label, T, masks, penalized groups, lambda_m)."""
    return [("uniform T = 1", 1, False, (), 0.0), ("uniform T = 2", 2, False, (), 0.0),
            ("uniform T = 4", 4, False, (), 0.0),
            ("DTS, loss on qkv + mlp", 4, True, ("qkv", "mlp"), mask_weight),
            ("DTS, loss on all groups", 4, True, GROUPS, mask_weight),
            ("DTS, no mask loss", 4, True, (), 0.0)]


def run(args) -> dict:
    fx, fy = C.calibration_set("vgg", args.train_samples)  # the Fashion-MNIST training permutation
    tx, ty = C.test_order("vgg")
    train = LabeledData(x=fx, y=fy, num_classes=10, description=f"train[:{args.train_samples}]")
    test = LabeledData(x=tx[:args.limit], y=ty[:args.limit], num_classes=10, description=f"test[:{args.limit}]")
    model_config = SpikformerConfig(depth=args.depth, dim=args.dim, heads=args.heads)
    results = []
    for label, steps, masks, groups, weight in _runs(args.mask_weight):
        if args.only and args.only not in label:
            continue
        torch.manual_seed(0)
        model = Spikformer(model_config)
        config = DirectConfig(time_steps=steps, masks=masks, mask_weight=weight, groups=groups or ("qkv",),
                              mask_lr=args.mask_lr,
                              train=TrainConfig(epochs=args.epochs, batch_size=64, lr=args.lr, optimizer="adam",
                                                momentum=0.0, weight_decay=0.0))
        t0 = time.perf_counter()
        trainable, log = train_direct(model, train, config)
        train_s = time.perf_counter() - t0
        layer_steps = freeze_masks(trainable) if masks else {}
        evaluation = evaluate_direct(model, test, steps)
        print(f"  [{label}] acc {evaluation.accuracy_pct:.2f} avg T {evaluation.average_steps:.2f} "
              f"({train_s:.0f} s)", flush=True)
        results.append({"label": label, "time_steps": steps, "groups": list(groups), "mask_weight": weight,
                        "accuracy_pct": evaluation.accuracy_pct, "avg_t": evaluation.average_steps,
                        "spiking_activity": evaluation.spiking_activity,
                        "spikes_per_sample": evaluation.spikes_per_sample, "layer_steps": layer_steps,
                        "losses": log.epoch_losses, "train_s": train_s})
    return {"model": model_config.to_dict(), "train_samples": args.train_samples, "samples": args.limit,
            "epochs": args.epochs, "lr": args.lr, "mask_lr": args.mask_lr, "mask_weight": args.mask_weight, "runs": results, "date": C.today(),
            "snnconv": C.git_head(), "torch": torch.__version__}


def render(r: dict) -> None:
    m = r["model"]
    uniform4 = next((x for x in r["runs"] if x["label"] == "uniform T = 4"), None)
    lines = [
        "## 8. Spiking transformer (Spikformer-style) with DTS", "",
        f"Command: `{COMMAND}` (results: `benchmarks/results/spikformer_fmnist.json`). Machine: {C.machine()}.", "",
        f"Spikformer-{m['depth']}-{m['dim']} ({m['heads']} heads, MLP ratio {m['mlp_ratio']}, LIF tau {m['tau']:g}, "
        f"28x28 -> 49 tokens; `snnconv/spikformer.py`) trained directly (surrogate gradients, CE on the step-averaged "
        f"output) on the first {r['train_samples']} images of the seeded Fashion-MNIST training permutation for "
        f"{r['epochs']} epoch(s) (Adam lr {r['lr']:g}, batch 64, cosine); every run starts from the same "
        f"initialization. "
        f"DTS runs train T_max = 4 masks per LIF layer with the weights (Adam, masks lr {r['mask_lr']:g}, lambda_m "
        f"{r['mask_weight']:g} on the named groups). Evaluated on the first {r['samples']} test images. Average T = "
        f"mean of T_l over the LIF layers; spiking activity = spikes / (LIF neurons x T). The bar asks DTS for "
        f"average T below T_max with accuracy within 0.5 points of the uniform-T_max model"
        + (f" ({uniform4['accuracy_pct']:.2f} %)." if uniform4 else "."), ""]
    body = []
    for x in r["runs"]:
        bar = ""
        if x["label"].startswith("DTS"):
            holds = uniform4 is not None and x["avg_t"] < 4 and x["accuracy_pct"] >= uniform4["accuracy_pct"] - 0.5
            bar = "holds" if holds else "FAILS"
        body.append([x["label"], f"{x['accuracy_pct']:.2f}", f"{x['avg_t']:.2f}", bar,
                     f"{100 * x['spiking_activity']:.2f}", f"{x['spikes_per_sample']:,.0f}", f"{x['train_s']:.0f}"])
    lines += [C.md_table(["run", "accuracy (%)", "avg T", "bar", "spiking activity (%)", "spikes/sample",
                          "train (s)"], body), ""]
    masked = [x for x in r["runs"] if x["layer_steps"]]
    if masked:
        names = list(masked[0]["layer_steps"])
        lines += ["Learned T_l per LIF layer (steps):", "",
                  C.md_table(["layer"] + [x["label"] for x in masked],
                             [[name] + [str(x["layer_steps"][name]) for x in masked] for name in names]), ""]
    C.update_doc("spikformer", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-samples", type=int, default=10000)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mask-weight", type=float, default=1e-3)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--mask-lr", type=float, default=5e-3)
    parser.add_argument("--only", default=None, help="run only the runs whose label contains this text")
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
