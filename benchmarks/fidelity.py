"""Conversion fidelity benchmark (SPEC section 5): ANN vs SNN accuracy at T = 1..128 for many pipelines.

For each model (the three Fashion-MNIST benchmark models and the CIFAR-10 ResNet-20 ONNX model; the deeper
ResNet-32 of ../shared/models on request, ``--models resnet32``, held to ResNet-20's bars) it converts
with 1000 calibration images and simulates 128 steps once per pipeline; the accuracy at every T comes from
that one run. Pipelines:

- the default pipeline (`ConvertConfig()`: mse balancing searched for T/2, channel-wise, V(0) = theta/2, advanced
  calibration)
  converted for T = 32 and for the second T of the bars (16 for Fashion-MNIST, 64 for ResNet-20), on the
  evaluation set: the first ``--fmnist-limit`` / ``--limit`` images of the seeded test permutation;
- the default pipeline converted for each T = 1, 2, 4, 8 (and 16 for ResNet-20), on the grid subset: the
  pipeline a user who asks for that T gets, compared with SpikingJelly at that T;
- a grid on the first ``--grid-limit`` (1000) images of the same evaluation set: balancing max / percentile
  99.99 / mse x layer / channel x V(0) = theta/2 or 0, all without calibration, plus light and advanced
  calibration for mse-channel and percentile-layer (V(0) = theta/2), and the T-dependent ones (mse
  balancing, calibration) converted a second time for the other T of the bars (names end in @T16 / @T64).
  ResNet-20 runs a reduced grid by default (``--grid reduced``) because each of its configurations costs
  about twice a Fashion-MNIST one.

Each finished configuration appends one row of per-step correct counts to benchmarks/results/fidelity_<model>.csv
and rewrites the tables in docs/benchmarks.md (with SpikingJelly's rows, when spikingjelly_compare.py has run).
Re-running skips configurations already in the CSV (``--force`` re-runs them).

    /work/venv/bin/python benchmarks/fidelity.py                       # everything, resumable
    /work/venv/bin/python benchmarks/fidelity.py --stage default       # only the default pipeline rows (all images)
    /work/venv/bin/python benchmarks/fidelity.py --models resnet20 --limit 1000    # a faster, noisier ResNet-20 run
    /work/venv/bin/python benchmarks/fidelity.py --models resnet32 --stage default --limit 5000 --threads 1
    /work/venv/bin/python benchmarks/fidelity.py --stage extra --fmnist-limit 2000 --full-extra mse-channel-half-weights
    /work/venv/bin/python benchmarks/fidelity.py --stage extra --fmnist-limit 2000 --full-extra mse-channel-half-advanced-signed
    /work/venv/bin/python benchmarks/fidelity.py --stage extra --fmnist-limit 2000 --full-extra mseT-channel-half-advanced
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import _common as C  # noqa: E402
from _fidelity_tables import DEFAULT, render  # noqa: E402

import snnconv  # noqa: E402
import snnconv.zoo  # noqa: E402
from snnconv.api import load_model  # noqa: E402
from snnconv.config import BalanceConfig, ConvertConfig, SimulationConfig  # noqa: E402
from snnconv.data import DataConfig, LabeledData, load_data  # noqa: E402

FULL_GRID = ([(m, g, h, "none", 32) for m in ("max", "percentile", "mse") for g in ("layer", "channel")
              for h in (True, False)]
             + [(m, g, True, c, 32) for m, g in (("mse", "channel"), ("percentile", "layer"))
                for c in ("light", "advanced")])
REDUCED_DROP = {("max", "layer", False, "none", 32), ("max", "channel", False, "none", 32),
                ("mse", "layer", False, "none", 32), ("percentile", "channel", False, "none", 32)}
# Balancing (mse) and calibration target one T. The bars are read at a second T as well (16 for Fashion-MNIST,
# 64 for the CIFAR-10 ResNets), so the T-dependent pipelines are also converted for that T.
SECOND_TARGET = {"fmnist": 16, "cifar": 64}


def per_t_defaults(model: str) -> list[tuple]:
    """The default pipeline converted for each small T (the bars' second T is converted on the whole set)."""
    targets = (1, 2, 4, 8, 16) if model in C.CIFAR_MODELS else (1, 2, 4, 8)
    return [DEFAULT_KEY[:4] + (t,) for t in targets]


def retargeted(target: int) -> list[tuple]:
    return ([("mse", "channel", True, c, target) for c in ("none", "light", "advanced")]
            + [("percentile", "layer", True, c, target) for c in ("light", "advanced")])


def label(method: str, granularity: str, half: bool, calib: str, target: int = 32, signed: bool = False) -> str:
    name = "p99.99" if method == "percentile" else method
    return (f"{name}-{granularity}-{'half' if half else 'zero'}-{calib}" + ("-signed" if signed else "")
            + ("" if target == 32 else f"@T{target}"))


def parse_label(text: str) -> tuple:
    """'p99.99-layer-half-light@T16' (or 'percentile-...') -> ('percentile', 'layer', True, 'light', 16);
    a name with '-signed' after the calibration (signed spikes) gets a sixth element, True."""
    text, _, target = text.partition("@T")
    method, granularity, init, calib, *signed = text.split("-")
    if signed not in ([], ["signed"]):
        raise argparse.ArgumentTypeError(f"unknown pipeline suffix '{'-'.join(signed)}' in '{text}'")
    return (("percentile" if method in ("p99.99", "percentile") else method, granularity, init == "half", calib,
             int(target) if target else 32) + ((True,) if signed else ()))


def spec_of(key: tuple) -> dict:
    """``mse`` searches thresholds for half the target T (the library default), ``mseT`` for the target T itself."""
    method, granularity, half, calib, target, *signed = key
    return {"label": label(*key), "config": ConvertConfig(
        balance=BalanceConfig(method="mse" if method == "mseT" else method, granularity=granularity, percentile=99.99,
                              time_steps=target if method == "mseT" else None),
        half_init=half, calibrate=calib, time_steps=target, signed_spikes=bool(signed and signed[0]))}


DEFAULT_KEY = ("mse", "channel", True, "advanced", 32)
assert label(*DEFAULT_KEY) == DEFAULT and ConvertConfig() == spec_of(DEFAULT_KEY)["config"], \
    "the library default pipeline changed: update DEFAULT_KEY"


def data_for(model: str, limit: int | None):
    """Calibration and evaluation data through snnconv.data, checked against the toolkit-neutral loader."""
    if model in C.CIFAR_MODELS:
        norm = {"mean": C.CIFAR_MEAN, "std": C.CIFAR_STD}
        cal = load_data(DataConfig(f"npz:{C.CIFAR_TRAIN}", split="train", limit=C.CALIBRATION_SAMPLES, **norm))
        test = load_data(DataConfig(f"npz:{C.CIFAR_TEST}", split="test", limit=limit or 10000, **norm))
    else:
        spec = f"fashion-mnist:{C.FMNIST_DIR}"
        cal = load_data(DataConfig(spec, split="train", limit=C.CALIBRATION_SAMPLES))
        test = load_data(DataConfig(spec, split="test", limit=limit or 10000))
    x, y = C.calibration_set(model)
    assert torch.equal(cal.x, x) and torch.equal(cal.y, y), "benchmarks/_common.py calibration set drifted from snnconv.data"
    x, y = C.test_order(model)
    n = len(test)
    assert torch.equal(test.x, x[:n]) and torch.equal(test.y, y[:n]), "benchmarks/_common.py test order drifted"
    return cal, test


def part(data: LabeledData, start: int, stop: int, what: str) -> LabeledData:
    return LabeledData(x=data.x[start:stop], y=data.y[start:stop], num_classes=data.num_classes,
                       description=f"{data.description} [{what}: images {start}..{stop - 1}]")


def run_model(model: str, args) -> None:
    cifar = model in C.CIFAR_MODELS
    limit = args.limit if cifar else args.fmnist_limit
    cal, test = data_for(model, limit)
    grid_n = min(args.grid_limit, len(test))
    subsets = {"grid": part(test, 0, grid_n, "grid subset")}
    if grid_n < len(test):
        subsets["rest"] = part(test, grid_n, len(test), "rest")
    imported = load_model(C.source_model(model), example=cal.x)
    path = C.csv_path("fidelity", model)
    grid_kind = args.grid or ("reduced" if cifar else "full")
    keys = [DEFAULT_KEY] + [k for k in FULL_GRID if k != DEFAULT_KEY
                            and not (grid_kind == "reduced" and k in REDUCED_DROP)]
    keys += retargeted(SECOND_TARGET["cifar" if cifar else "fmnist"])
    second = DEFAULT_KEY[:4] + (SECOND_TARGET["cifar" if cifar else "fmnist"],)
    jobs = []  # (key, subset)
    if args.stage in ("default", "all"):
        jobs += [(key, s) for key in (DEFAULT_KEY, second) for s in subsets]
        jobs += [(key, "grid") for key in per_t_defaults(model)]
    if args.stage in ("default", "all", "extra"):
        jobs += [(tuple(k), s) for k in args.full_extra for s in subsets]
    if args.stage in ("grid", "all"):
        jobs += [(k, "grid") for k in keys if k not in (DEFAULT_KEY, second)]
    converted = {}  # key -> (network, seconds): one conversion serves every subset of a pipeline
    for key, subset in jobs:
        spec = spec_of(key)
        if not args.force and ("snnconv", spec["label"], subset) in C.done_keys(path):
            print(f"[{model}] {spec['label']} on {subset}: already in {path.name}, skipped", flush=True)
            continue
        data = subsets[subset]
        if key not in converted:
            t0 = time.perf_counter()
            converted = {key: (snnconv.convert(imported, cal, spec["config"]), time.perf_counter() - t0)}
        net, convert_s = converted[key]
        t1 = time.perf_counter()
        ev = snnconv.evaluate(net, data, SimulationConfig(time_steps=C.T_MAX, batch_size=args.batch_size))
        t2 = time.perf_counter()
        sim = ev.simulation
        row = C.row_from_counts(model, "snnconv", spec["label"], subset, 0 if subset == "grid" else grid_n, len(data),
                                ev.ann.correct, sim.correct_per_step, convert_s, t2 - t1,
                                notes=f"maxpool={spec['config'].maxpool}; snnconv {C.git_head()}")
        C.append_row(path, row)
        accs = " ".join(f"T{t}={sim.accuracy_at(t):.2f}" for t in C.STEPS)
        print(f"[{model}] {spec['label']} on {subset} ({len(data)}): ANN {ev.ann.accuracy:.2f} | {accs} "
              f"| convert {convert_s:.0f}s simulate {t2 - t1:.0f}s", flush=True)
        render()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(C.ALL_MODELS),
                        help=f"comma-separated subset of {','.join(C.FIDELITY_MODELS)} (default %(default)s)")
    parser.add_argument("--stage", choices=("default", "grid", "all", "extra"), default="all",
                        help="extra: only the --full-extra pipelines")
    parser.add_argument("--limit", type=int, default=10000, help="CIFAR-10 evaluation images (default %(default)s)")
    parser.add_argument("--fmnist-limit", type=int, default=None, help="Fashion-MNIST evaluation images (all)")
    parser.add_argument("--grid-limit", type=int, default=1000, help="images for the grid (default %(default)s)")
    parser.add_argument("--grid", choices=("full", "reduced"), default=None,
                        help="grid size (default: full for Fashion-MNIST, reduced for the CIFAR-10 ResNets)")
    parser.add_argument("--full-extra", type=parse_label, action="append", default=[],
                        help="extra pipeline to run on the whole evaluation set, e.g. mse-layer-half-light "
                             "(method max|percentile|mse)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="re-run configurations already in the CSV")
    parser.add_argument("--render-only", action="store_true", help="only rewrite docs/benchmarks.md from the CSVs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.render_only:
        render()
        return
    print(C.machine(), flush=True)
    for model in [m for m in args.models.split(",") if m]:
        if model not in C.FIDELITY_MODELS:
            parser.error(f"unknown model {model}; choose from {', '.join(C.FIDELITY_MODELS)}")
        run_model(model, args)
    render()


if __name__ == "__main__":
    main()
