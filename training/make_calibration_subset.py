"""Build calibration_data/fashion_mnist_subset.npz, the class-balanced Fashion-MNIST subset snnconv ships.

    python training/make_calibration_subset.py --data-dir /path/to/fashion-mnist \
        --out calibration_data/fashion_mnist_subset.npz

Takes, per class and with a seeded generator, 100 images of the official training set and 200 of the
official test set (1,000 and 2,000 in all), shuffles each part, and stores them compressed:
x_train, x_test uint8 [N, 28, 28]; y_train, y_test int64 [N]. This is what the `builtin` data spec reads.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

# Run against this checkout's snnconv even when the package is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from snnconv.data import read_idx  # noqa: E402

NUM_CLASSES = 10


def find(data_dir: Path, name: str) -> Path:
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"{name}[.gz] not found in {data_dir}")


def balanced_subset(images: np.ndarray, labels: np.ndarray, per_class: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` random images of every class, in a random order."""
    chosen = np.concatenate([
        rng.choice(np.flatnonzero(labels == label), size=per_class, replace=False)
        for label in range(NUM_CLASSES)
    ])
    chosen = rng.permutation(chosen)
    return images[chosen], labels[chosen].astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    parts = {}
    for split, prefix, per_class in (("train", "train", args.train_per_class),
                                     ("test", "t10k", args.test_per_class)):
        images = read_idx(find(args.data_dir, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find(args.data_dir, f"{prefix}-labels-idx1-ubyte"))
        parts[f"x_{split}"], parts[f"y_{split}"] = balanced_subset(images, labels, per_class, rng)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **parts)
    sizes = ", ".join(f"{key} {value.dtype} {value.shape}" for key, value in parts.items())
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {sizes}")


if __name__ == "__main__":
    main()
