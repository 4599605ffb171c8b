"""Shared pieces of the benchmarks: data subsets, result CSVs and the docs/benchmarks.md writer.

Only the standard library, numpy and torch are used here, so the SpikingJelly comparison can import this
module from its own virtual environment (where snnconv is not installed). The data loaders reproduce
snnconv.data exactly (same files, same scaling, same seeded permutation: ``torch.randperm`` with a
``torch.Generator`` seeded 0), so every toolkit sees the same calibration images and test images;
fidelity.py checks that equality against snnconv.data.load_data on every run.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import gzip
import json
import os
import platform
import struct
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
# overridable for smoke tests, so a trial run never touches the real results
RESULTS = Path(os.environ.get("BENCH_RESULTS", REPO / "benchmarks" / "results"))
DOC = Path(os.environ.get("BENCH_DOC", REPO / "docs" / "benchmarks.md"))

FMNIST_DIR = Path("/work/shared/data/fashion-mnist")
CIFAR_TRAIN = Path("/work/shared/data/cifar10/cifar10_train_10k.npz")
CIFAR_TEST = Path("/work/shared/data/cifar10/cifar10_test.npz")
CIFAR_ONNX = Path("/work/shared/models/cifar10-resnet20.onnx")
# the pretrained CIFAR-10 models of ../shared/models; ResNet-32 only in the fidelity benchmark (FIDELITY_MODELS)
CIFAR_MODELS = {"resnet20": CIFAR_ONNX, "resnet32": Path("/work/shared/models/cifar10-resnet32.onnx")}
CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)

FMNIST_MODELS = ("vgg", "resnet", "maxpool")
ALL_MODELS = FMNIST_MODELS + ("resnet20",)
FIDELITY_MODELS = ALL_MODELS + ("resnet32",)
STEPS = (1, 2, 4, 8, 16, 32, 64, 128)
T_MAX = 128
CALIBRATION_SAMPLES = 1000
# the methods' unseen images (SEENN's selection split, TEAS's --unseen-teas-images): test images from here on in
# the seeded permutation, disjoint from evaluation sets of up to this many images
UNSEEN_TEST_START = 5000
SEED = 0

MODEL_TITLES = {
    "vgg": "Fashion-MNIST VGG-style (`fmnist_vgg`, BN + average pooling)",
    "resnet": "Fashion-MNIST ResNet-style (`fmnist_resnet`, residual adds)",
    "maxpool": "Fashion-MNIST conv / max-pool (`fmnist_maxpool`, no BN)",
    "resnet20": "CIFAR-10 ResNet-20 (`cifar10-resnet20.onnx`, option-A shortcuts)",
    "resnet32": "CIFAR-10 ResNet-32 (`cifar10-resnet32.onnx`, option-A shortcuts)",
}


def fmnist_weights(name: str) -> Path:
    return REPO / ("snnconv/assets/fmnist_vgg.pt" if name == "vgg" else f"benchmarks/models/fmnist_{name}.pt")


def source_model(model: str):
    """What snnconv imports for a benchmark model: the ONNX path for a CIFAR-10 model, else the trained zoo module."""
    if model in CIFAR_MODELS:
        return str(CIFAR_MODELS[model])
    import snnconv.zoo
    net = getattr(snnconv.zoo, f"fmnist_{model}")()
    net.load_state_dict(torch.load(fmnist_weights(model), map_location="cpu", weights_only=True))
    return net.eval()


def balance(base_t: int, default_balance: bool = False):
    """Threshold balancing of the method benchmarks: the product default (the mse search for base_t / 2) with
    ``--default-balance``, else the mse search for base_t, which their earlier rows (`mseT`) used."""
    from snnconv.config import BalanceConfig
    return BalanceConfig() if default_balance else BalanceConfig(time_steps=base_t)


# ---------------------------------------------------------------------------------------------------- data
def permutation(count: int, seed: int = SEED) -> torch.Tensor:
    """The seeded permutation snnconv.data uses for ``limit`` (first ``limit`` entries are kept)."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as stream:
        content = stream.read()
    ndim = content[3]
    shape = struct.unpack(f">{ndim}I", content[4:4 + 4 * ndim])
    return np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def load_images(model: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a split, scaled (and normalized for CIFAR) like snnconv.data does: x [N,C,H,W], y [N]."""
    if model in CIFAR_MODELS:
        with np.load(CIFAR_TRAIN if split == "train" else CIFAR_TEST, allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(torch.float32).div_(255.0)
        mean = torch.tensor(CIFAR_MEAN, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(CIFAR_STD, dtype=torch.float32).view(1, -1, 1, 1)
        x = (x - mean) / std
    else:
        prefix = "train" if split == "train" else "t10k"
        x = _read_idx(FMNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")[:, None]
        y = _read_idx(FMNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        x = torch.from_numpy(x).to(torch.float32).div_(255.0)
    return x, torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))


def calibration_set(model: str, count: int = CALIBRATION_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images of the seeded permutation of the training split (snnconv's ``limit``)."""
    x, y = load_images(model, "train")
    chosen = permutation(len(y))[:count]
    return x[chosen], y[chosen]


def test_order(model: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split in seeded-permutation order; a subset of size n is always the first n of it.

    (The CIFAR test file is sorted by class, so a plain prefix would not be a fair sample.)
    """
    x, y = load_images(model, "test")
    order = permutation(len(y))
    return x[order], y[order]


def training_data(model: str, count: int = CALIBRATION_SAMPLES):
    """:func:`calibration_set` as snnconv data; the default ``count`` is the benchmarks' calibration set."""
    from snnconv.data import LabeledData
    x, y = calibration_set(model, count)
    name = "calibration" if count == CALIBRATION_SAMPLES else f"train[:{count}]"
    return LabeledData(x=x, y=y, num_classes=10, description=f"{model} {name}")


def test_data(model: str, stop: int, start: int = 0):
    """Images ``start`` .. ``stop - 1`` of the seeded test permutation (:func:`test_order`) as snnconv data;
    ``start=UNSEEN_TEST_START``: images never trained on and never among the evaluation images."""
    from snnconv.data import LabeledData
    x, y = test_order(model)
    if stop > len(y):
        raise SystemExit(f"{model}: test images {start}..{stop - 1} asked for, but the test split has {len(y)}")
    return LabeledData(x=x[start:stop], y=y[start:stop], num_classes=10, description=f"{model} test[{start}:{stop}]")


# ---------------------------------------------------------------------------------------------------- CSV
CSV_FIELDS = (["model", "toolkit", "config", "subset", "first", "samples", "ann_correct"]
              + [f"correct_t{t}" for t in range(1, T_MAX + 1)]
              + ["convert_s", "simulate_s", "torch", "date", "notes"])


def csv_path(kind: str, model: str) -> Path:
    return RESULTS / f"{kind}_{model}.csv"


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def append_row(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with path.open("a", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})


def done_keys(path: Path) -> set[tuple[str, str, str]]:
    return {(r["toolkit"], r["config"], r["subset"]) for r in read_rows(path)}


def row_from_counts(model: str, toolkit: str, config: str, subset: str, first: int, samples: int, ann_correct: int,
                    correct_per_step, convert_s: float, simulate_s: float, notes: str = "") -> dict:
    row = {"model": model, "toolkit": toolkit, "config": config, "subset": subset, "first": first,
           "samples": samples, "ann_correct": ann_correct, "convert_s": f"{convert_s:.1f}",
           "simulate_s": f"{simulate_s:.1f}", "torch": torch.__version__, "date": today(), "notes": notes}
    for t in range(1, T_MAX + 1):
        row[f"correct_t{t}"] = int(correct_per_step[t - 1])
    return row


def accuracy(row: dict, t: int | None = None) -> float:
    key = "ann_correct" if t is None else f"correct_t{t}"
    return 100.0 * int(row[key]) / int(row["samples"])


def combine(rows: list[dict], subset: str) -> dict:
    """Sum the counts of disjoint rows (e.g. the grid subset and the rest of the test set)."""
    out = dict(rows[0])
    out["subset"] = subset
    for key in ["samples", "ann_correct"] + [f"correct_t{t}" for t in range(1, T_MAX + 1)]:
        out[key] = sum(int(r[key]) for r in rows)
    out["simulate_s"] = f"{sum(float(r['simulate_s']) for r in rows):.1f}"
    return out


# ---------------------------------------------------------------------------------------------------- docs
def git_head() -> str:
    """The snnconv commit the numbers were measured on (others commit while benchmarks run)."""
    try:
        import subprocess
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "snnconv"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


def today() -> str:
    return _dt.date.today().isoformat()


def cpu_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def machine() -> str:
    return (f"{os.cpu_count()}-core CPU ({cpu_name()}), shared with other jobs; Python {platform.python_version()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch threads")


def machines_sentence(results: list[dict]) -> str:
    """Where the rows of a table were measured: the ``machine`` each result records (the same network can
    convert a few images differently on another CPU, whose kernels sum in another order)."""
    by_machine: dict[str, list[str]] = {}
    for r in results:
        by_machine.setdefault(r.get("machine", ""), []).append(f"`{r['model']}`")
    recorded = {m: labels for m, labels in by_machine.items() if m}
    parts = [f"{m} ({', '.join(labels) if len(recorded) > 1 or '' in by_machine else 'every row'})"
             for m, labels in recorded.items()]
    if "" in by_machine:
        parts.append("not recorded for the other rows (earlier sessions, 2-core CPUs, the scripts' default of 1 torch thread "
                     "unless the command says otherwise)")
    return "Machine: " + "; ".join(parts) + "."


SECTIONS = ("fidelity", "spikingjelly", "speed_memory", "chunk_sizes", "teas", "teas_error_model", "seenn",
            "seenn_policy", "seenn_exit", "seenn_finetune", "ttfs", "dts", "spikformer")
HEADER = """# Benchmarks

Quality bars of SPEC section 5, measured by the scripts in `benchmarks/`. Every section names the exact
command that produced it; raw numbers are in `benchmarks/results/`. Accuracies are top-1 in percent;
"SNN at T" reads the output accumulated over steps 1..T of one simulation of 128 steps. The machine is
shared with other work, so wall times are noisy; the speed figure is a ratio measured side by side.
A value equal to its bar meets it, float rounding allowed for (`snnconv.metrics.summary.exceeds`, the rule of
the CLI's gates too).
"""


def update_doc(section: str, text: str) -> None:
    """Replace the marked section ``section`` of docs/benchmarks.md (creating the file or section)."""
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    content = DOC.read_text() if DOC.is_file() else HEADER
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        _, tail = rest.split(end, 1)
        content = head + block + tail
    else:
        # keep the sections in SECTIONS order
        later = [s for s in SECTIONS[SECTIONS.index(section) + 1:] if f"<!-- BEGIN {s} -->" in content] \
            if section in SECTIONS else []
        if later:
            marker = f"<!-- BEGIN {later[0]} -->"
            head, tail = content.split(marker, 1)
            content = head + block + "\n\n" + marker + tail
        else:
            content = content.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(content)


def model_parser(description: str, models: str) -> argparse.ArgumentParser:
    """A probe's command line: ``--models`` (default ``models``), ``--tag``, ``--threads`` and ``--render-only``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=models)
    parser.add_argument("--tag", default="", help="a variant's label: suffix of the result file, shown after the model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render-only", action="store_true")
    return parser


def measure_from_args(args: argparse.Namespace, kind: str, measure, render) -> None:
    """:func:`measure_models` for a :func:`model_parser` command line, on ``args.threads`` torch threads."""
    torch.set_num_threads(args.threads)
    measure_models(kind, [] if args.render_only else args.models.split(","), measure, render, args.tag)


def measure_models(kind: str, models: list[str], measure, render, tag: str = "") -> None:
    """``measure(model)`` for each model into ``results/<kind>_<model>.json`` (``<kind>_<model>_<tag>.json``, the
    model labelled ``<model> (<tag>)``, for a tagged variant), re-rendering the doc section from every stored result
    after each; with no models, only re-render."""
    def stored() -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(RESULTS.glob(f"{kind}_*.json"))]

    RESULTS.mkdir(parents=True, exist_ok=True)
    for model in models:
        result = measure(model)
        if tag:
            result["model"] = f"{model} ({tag})"
        (RESULTS / f"{kind}_{model}{'_' + tag if tag else ''}.json").write_text(json.dumps(result, indent=1))
        render(stored())
    render(stored())


def md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
