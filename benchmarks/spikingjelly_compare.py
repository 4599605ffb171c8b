"""SpikingJelly's ANN-to-SNN converter on the same models, calibration images and test images as fidelity.py.

Runs in its own virtual environment; spikingjelly is never a dependency of snnconv:

    python3 -m venv /work/sjvenv
    /work/sjvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 spikingjelly
    /work/venv/bin/python benchmarks/export_resnet20.py            # once: ResNet-20 ONNX -> state dict
    /work/sjvenv/bin/python benchmarks/spikingjelly_compare.py

For each model and converter mode it converts with ``ann2snn.Converter(RateCodingRecipe(...))`` (the fixed
threshold-balancing modes 'max', '99.9%', '99.99%' and 0.5 = half of the maximum, layer-wise, IF neurons with
reset by subtraction, V(0) = 0; plus its channel-wise + half-threshold option with 'max' and '99.99%'), calibrating
on the same 1000 training images in batches of 100 (the batch size of SpikingJelly's own examples; its
statistics are a per-batch max/quantile combined by an EMA with momentum 0.1), then simulates 128 steps one at
a time and records the accuracy of the accumulated output after every step, on the first ``--grid-limit``
(1000) images of the seeded test permutation fidelity.py uses and, with ``--limit N``, also on the rest of the
first N images (fidelity.py's evaluation set, where the default pipeline's bar rows are). Rows go to
benchmarks/results/spikingjelly_<model>.csv and beside snnconv's rows in docs/benchmarks.md; a failure is
recorded with its exact error instead.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402
from _fidelity_tables import SJ_COMMAND, render  # noqa: E402
from sj_models import ARCHITECTURES  # noqa: E402

# (row name, RateCodingRecipe keyword arguments)
MODES = [
    ("max", {"mode": "max"}),
    ("99.9%", {"mode": "99.9%"}),
    ("99.99%", {"mode": "99.99%"}),
    ("0.5max", {"mode": 0.5}),
    ("max channel half", {"mode": "max", "channel_wise": True, "half_threshold": True}),
    ("99.99% channel half", {"mode": "99.99%", "channel_wise": True, "half_threshold": True}),
]
CALIBRATION_BATCH = 100
ERRORS = C.RESULTS / "spikingjelly_errors.json"


def weights(model: str) -> Path:
    return C.REPO / "benchmarks/models/cifar10_resnet20.pt" if model == "resnet20" else C.fmnist_weights(model)


def load_ann(model: str, conv_shortcut: bool = False) -> torch.nn.Module:
    state = torch.load(weights(model), map_location="cpu", weights_only=True)
    if not conv_shortcut:
        net = ARCHITECTURES[model]()
        net.load_state_dict(state, strict=True)
        return net.eval()
    net = ARCHITECTURES[model](conv_shortcut=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("shortcut.weight") for k in missing), (missing, unexpected)
    return net.eval()


def probe_faithful_resnet20(calibration) -> str | None:
    """Convert the ResNet-20 with its option-A shortcut as written (F.pad); return the error, if any."""
    from spikingjelly.activation_based import ann2snn
    try:
        recipe = ann2snn.RateCodingRecipe(dataloader=calibration[:1], mode="max")
        ann2snn.Converter(recipe=recipe, device="cpu").convert(load_ann("resnet20"))
    except Exception as exc:
        return "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return None


def ann_correct(net, x, y, batch: int) -> int:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct


def simulate(snn, x, y, steps: int, batch: int) -> list[int]:
    """Step-by-step simulation, as SpikingJelly's examples do; correct counts of the summed output per step."""
    from spikingjelly.activation_based import functional
    correct = [0] * steps
    snn.eval()
    with torch.no_grad():
        for i in range(0, len(y), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            functional.reset_net(snn)
            total = None
            for t in range(steps):
                out = snn(xb)
                total = out if total is None else total + out
                correct[t] += int((total.argmax(1) == yb).sum())
    return correct


def record_error(model: str, mode: str, error: str) -> None:
    error = re.sub(r" at 0x[0-9a-f]+", "", error)  # object addresses differ between runs
    errors = json.loads(ERRORS.read_text()) if ERRORS.is_file() else {}
    errors[f"{model} / {mode}"] = error
    ERRORS.parent.mkdir(parents=True, exist_ok=True)
    ERRORS.write_text(json.dumps(errors, indent=1))


def clear_error(model: str, mode: str) -> None:
    if ERRORS.is_file():
        errors = json.loads(ERRORS.read_text())
        if errors.pop(f"{model} / {mode}", None) is not None:
            ERRORS.write_text(json.dumps(errors, indent=1))


def run_model(model: str, args) -> None:
    path = C.csv_path("spikingjelly", model)
    cal_x, cal_y = C.calibration_set(model)
    calibration = [(cal_x[i:i + CALIBRATION_BATCH], cal_y[i:i + CALIBRATION_BATCH])
                   for i in range(0, len(cal_y), CALIBRATION_BATCH)]
    x_all, y_all = C.test_order(model)
    subsets = {"grid": (0, args.grid_limit)}
    if args.limit and args.limit > args.grid_limit:
        subsets["rest"] = (args.grid_limit, args.limit)
    x = x_all[:args.grid_limit]  # the shortcut-equivalence check below
    ann = load_ann(model)
    if model == "resnet20":
        error = probe_faithful_resnet20(calibration)
        if error is None:
            clear_error("resnet20 (option-A shortcut as F.pad)", "any mode")
        else:
            print(f"[{model}] SpikingJelly refuses the F.pad shortcut: {error}; using the 1x1-conv form", flush=True)
            record_error("resnet20 (option-A shortcut as F.pad)", "any mode", error)
            equivalent = load_ann(model, conv_shortcut=True)
            with torch.no_grad():
                gap = float((equivalent(x[:256]) - ann(x[:256])).abs().max())
            assert gap < 1e-4, f"the 1x1-conv shortcut changes the ResNet-20 output by {gap}"
            ann = equivalent
    ann_ok = {}  # subset -> ANN correct count
    for subset, (first, stop) in subsets.items():
        ann_ok[subset] = ann_correct(ann, x_all[first:stop], y_all[first:stop], args.batch_size)
        print(f"[{model}] ANN {100 * ann_ok[subset] / (stop - first):.2f} on {stop - first} images ({subset})",
              flush=True)
    for name, kwargs in MODES:
        if args.modes and name not in args.modes:
            continue
        todo = [s for s in subsets if args.force or ("spikingjelly", name, s) not in C.done_keys(path)]
        if not todo:
            print(f"[{model}] SJ {name}: already in {path.name}, skipped", flush=True)
            continue
        run_mode(model, name, kwargs, ann, calibration, {s: subsets[s] for s in todo}, x_all, y_all, ann_ok,
                 path, args)


def run_mode(model: str, name: str, kwargs: dict, ann, calibration, subsets: dict, x_all, y_all, ann_ok: dict,
             path: Path, args) -> None:
    """Convert once with this mode and simulate every subset that still lacks its row."""
    from spikingjelly.activation_based import ann2snn
    try:
        t0 = time.perf_counter()
        recipe = ann2snn.RateCodingRecipe(dataloader=calibration, **kwargs)
        snn = ann2snn.Converter(recipe=recipe, device="cpu").convert(copy.deepcopy(ann))
        convert_s = time.perf_counter() - t0
        for subset, (first, stop) in subsets.items():
            x, y = x_all[first:stop], y_all[first:stop]
            t1 = time.perf_counter()
            correct = simulate(snn, x, y, C.T_MAX, args.batch_size)
            simulate_s = time.perf_counter() - t1
            row = C.row_from_counts(model, "spikingjelly", name, subset, first, len(y), ann_ok[subset], correct,
                                    convert_s, simulate_s,
                                    notes=f"spikingjelly {metadata.version('spikingjelly')} RateCodingRecipe "
                                          f"{kwargs}, calibration batch {CALIBRATION_BATCH}")
            C.append_row(path, row)
            accs = " ".join(f"T{t}={100 * correct[t - 1] / len(y):.2f}" for t in C.STEPS)
            print(f"[{model}] SJ {name} on {subset} ({len(y)}): {accs} | convert {convert_s:.0f}s "
                  f"simulate {simulate_s:.0f}s", flush=True)
            render()
    except Exception as exc:  # record the exact error and go on with the next mode
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        print(f"[{model}] SJ {name} FAILED: {text}", flush=True)
        traceback.print_exc()
        record_error(model, name, text)
        return
    clear_error(model, name)
    render_section()


def render_section() -> None:
    try:
        version = metadata.version("spikingjelly")
    except metadata.PackageNotFoundError:
        version = "not installed"
    errors = json.loads(ERRORS.read_text()) if ERRORS.is_file() else {}
    lines = [
        "## 2. SpikingJelly side by side",
        "",
        "Commands (SpikingJelly lives in its own venv and is never a dependency of snnconv):",
        "",
        "```",
        "python3 -m venv /work/sjvenv",
        "/work/sjvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 spikingjelly",
        "/work/venv/bin/python benchmarks/export_resnet20.py   # ResNet-20 ONNX -> PyTorch state dict, checked vs onnxruntime",
        SJ_COMMAND + " --models resnet20",
        SJ_COMMAND + " --models vgg,resnet --limit 2000",
        SJ_COMMAND + " --models maxpool --limit 10000 --threads 1",
        "```",
        "",
        f"SpikingJelly {version}, torch {torch.__version__}, date {C.today()}. Its rows (`SJ ...`) are in the grid "
        "tables of section 1, on the same 1000 test images as snnconv's grid rows. For the Fashion-MNIST models it "
        "also ran on the rest of the first N images of the permutation (`--limit N`: 2000 for vgg and resnet, all "
        "10,000 for maxpool, whose T = 16 comparison was a tie on the 1000-image grid); where the default "
        "pipeline's rows cover the same N images, the comparison at T = 16 and 32 uses all of them (section 1 "
        "says which images each comparison used).",
        "",
        "How SpikingJelly is run: `ann2snn.Converter(recipe=RateCodingRecipe(dataloader, mode=...))`, which folds "
        "batch norm, records per-batch activation statistics at every `nn.ReLU` (max, a quantile of all "
        "activations including zeros, or a fraction of the max), combines the batches by an EMA with momentum 0.1, "
        "and replaces each ReLU by scale -> IFNode(v_reset=None, threshold 1) -> scale. The calibration data is the "
        "same 1000 training images, in batches of 100 as in SpikingJelly's examples. The network is then run one "
        "step at a time for 128 steps (`functional.reset_net` per batch) and the summed output is read after "
        "every step. Max pooling stays an ordinary `MaxPool2d` over the scaled spikes (layer-wise modes). "
        "`channel half` rows use its `channel_wise=True, half_threshold=True` options (channel-wise thresholds, "
        "`HalfThresholdIFNode` with V(0) = theta/2).",
        "",
        "Models: the same weights. SpikingJelly converts only `nn.ReLU` modules, and `fmnist_vgg` applies its "
        "classifier ReLU as `F.relu`; its SpikingJelly copy (`benchmarks/sj_models.py`) uses an `nn.ReLU` module "
        "there instead (no parameters, the same function), otherwise that layer would stay an analog ReLU. "
        "ResNet-20 is `sj_models.ResNet20` with the ONNX weights (BN folded), max |logit difference| to "
        "onnxruntime 1.3e-5. SpikingJelly refuses its option-A shortcut written with `F.pad` (error below), so "
        "SpikingJelly gets the same function with each of the two downsampling shortcuts written as a fixed 1x1 "
        "stride-2 convolution (weight 1 from input channel c to output channel c + pad, else 0; outputs checked "
        "equal to 1e-4).",
    ]
    if errors:
        lines += ["", "Failures recorded by the last run (exact errors):", ""]
        lines += [f"- {key}: `{value}`" for key, value in errors.items()]
    C.update_doc("spikingjelly", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(C.ALL_MODELS))
    parser.add_argument("--modes", type=lambda s: s.split(","), default=None,
                        help="comma-separated subset of: " + ", ".join(n for n, _ in MODES))
    parser.add_argument("--grid-limit", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None,
                        help="also simulate test images grid-limit..N-1 (fidelity.py's evaluation set)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(C.machine(), flush=True)
    try:
        import spikingjelly.activation_based.ann2snn  # noqa: F401
    except Exception as exc:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        record_error("all", "import", text)
        render_section()
        raise
    for model in [m for m in args.models.split(",") if m]:
        try:
            run_model(model, args)
        except Exception as exc:
            text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            traceback.print_exc()
            record_error(model, "setup", text)
    render_section()


if __name__ == "__main__":
    main()
