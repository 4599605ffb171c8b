"""Train one of the snnconv zoo models on the full Fashion-MNIST training set, reproducibly on CPU.

    python training/train_fmnist.py --arch vgg --epochs 7 \
        --data-dir /path/to/fashion-mnist --out snnconv/assets/fmnist_vgg.pt

Reads the IDX files with `snnconv.data.load_data` (pixels in [0, 1], no normalization, matching
`snnconv.zoo.DEFAULT_INPUT`), trains with SGD + Nesterov momentum under a per-step cosine learning-rate
schedule, light augmentation (random crop with 2-pixel zero padding, horizontal flip), and evaluates on the
full 10,000-image test set after every epoch. Writes a float32 state dict to --out and, next to it, a JSON
record with the final test accuracy, the per-epoch history, the seed and the exact command.

Not part of the library: nothing in snnconv imports this script.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# Run against this checkout's snnconv even when the package is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from snnconv.data import DataConfig, LabeledData, load_data  # noqa: E402
from snnconv.zoo import ARCHITECTURES  # noqa: E402

CROP_PADDING = 2  # pixels of zero padding before the random 28x28 crop


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--out", type=Path, required=True, help="where to write the state dict (.pt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for torch; use 1 when other jobs share the cores (oversubscribed "
                             "OpenMP threads slow training several-fold)")
    return parser.parse_args(argv)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding by CROP_PADDING pixels, and a horizontal flip with probability 1/2.

    Vectorised over the batch: each image gets its own offsets, gathered with advanced indexing.
    """
    batch, _, height, width = x.shape
    padded = F.pad(x, [CROP_PADDING] * 4)
    offsets = torch.randint(0, 2 * CROP_PADDING + 1, (2, batch), generator=generator)
    rows = offsets[0, :, None] + torch.arange(height)  # [B, H]
    cols = offsets[1, :, None] + torch.arange(width)  # [B, W]
    samples = torch.arange(batch)[:, None, None]
    cropped = padded[samples, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    cropped = cropped.permute(0, 3, 1, 2)
    flip = torch.rand(batch, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped).contiguous()


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: LabeledData, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = 0
    for x, y in data.batches(batch_size):
        correct += int((model(x).argmax(1) == y).sum())
    return 100.0 * correct / len(data)


def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # weight init and dropout
    generator = torch.Generator().manual_seed(args.seed)  # shuffling and augmentation

    spec = f"fashion-mnist:{args.data_dir}"
    train_data = load_data(DataConfig(spec, split="train"))
    test_data = load_data(DataConfig(spec, split="test"))
    print(f"train: {train_data.description}\ntest: {test_data.description}", flush=True)

    model = ARCHITECTURES[args.arch]()
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                                weight_decay=args.weight_decay)
    steps_per_epoch = -(-len(train_data) // args.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * steps_per_epoch)

    history = []
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(train_data), generator=generator)
        loss_sum, correct = 0.0, 0
        epoch_start = time.perf_counter()
        for start in range(0, len(order), args.batch_size):
            index = order[start:start + args.batch_size]
            x, y = augment(train_data.x[index], generator), train_data.y[index]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
        record = {
            "epoch": epoch,
            "train_loss": round(loss_sum / len(train_data), 4),
            "train_accuracy": round(100.0 * correct / len(train_data), 2),
            "test_accuracy": round(evaluate(model, test_data), 2),
            "seconds": round(time.perf_counter() - epoch_start, 1),
        }
        history.append(record)
        print(f"epoch {epoch}/{args.epochs}  loss {record['train_loss']:.4f}  "
              f"train {record['train_accuracy']:.2f}%  test {record['test_accuracy']:.2f}%  "
              f"({record['seconds']:.0f} s)", flush=True)

    state_dict = {name: value.detach().float() if value.is_floating_point() else value.detach()
                  for name, value in model.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, args.out)
    summary = {
        "arch": args.arch,
        "test_accuracy": history[-1]["test_accuracy"],
        "epochs": args.epochs,
        "seed": args.seed,
        "parameters": parameters,
        "train_samples": len(train_data),
        "test_samples": len(test_data),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "threads": args.threads,
        "training_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "command": "python " + " ".join(shlex.quote(arg) for arg in sys.argv),
        "history": history,
    }
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB), test accuracy "
          f"{summary['test_accuracy']:.2f}%", flush=True)
    return summary


if __name__ == "__main__":
    train(parse_args())
