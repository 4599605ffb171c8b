"""The one training loop of snnconv: seeded, with progress, checkpoints after every epoch, and resume.

Every method that trains something (the SEENN-II policy network now; TEAS and TTFS fine-tuning and
DTS masks on the same loop) supplies a model, a loss on one batch, and its training tensors; the loop
owns the optimizer, the schedule, the shuffling and the checkpoint. Shuffling draws from a generator
seeded by (seed, epoch), so a run resumed from its checkpoint replays the remaining epochs exactly as
an uninterrupted run would.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..config import _Plain
from ..errors import ConfigError, OutputError

# loss(model, batch tensors) -> scalar loss
LossFn = Callable[[nn.Module, Sequence[torch.Tensor]], torch.Tensor]
# progress(description, total) -> advance(n), as in snnconv.api
ProgressFactory = Callable[[str, int], Callable[[int], None]]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainConfig(_Plain):
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine: annealed to 0 over all iterations, stepped every iteration
    seed: int = 0

    def __post_init__(self):
        if self.epochs <= 0:
            raise ConfigError(f"Training epochs must be positive, got {self.epochs}.")
        if self.batch_size <= 0:
            raise ConfigError(f"Training batch size must be positive, got {self.batch_size}.")
        if not self.lr > 0:
            raise ConfigError(f"Learning rate must be positive, got {self.lr}.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Optimizer '{self.optimizer}' is unknown; choose from {', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"Schedule '{self.schedule}' is unknown; choose from {', '.join(SCHEDULES)}.")


@dataclass
class TrainLog:
    """Mean training loss of every epoch, and where training started (0, or the resumed epoch)."""

    epoch_losses: list[float] = field(default_factory=list)
    resumed_from_epoch: int = 0


def _optimizer(model: nn.Module, config: TrainConfig, lr_scales: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """One parameter group at ``config.lr``, plus one per ``lr_scales`` entry (parameter-name prefix -> factor)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = []
    for prefix, scale in (lr_scales or {}).items():
        chosen = [p for name, p in named if name.startswith(prefix)]
        named = [(name, p) for name, p in named if not name.startswith(prefix)]
        if chosen:
            groups.append({"params": chosen, "lr": config.lr * scale})
    if named:
        groups.insert(0, {"params": [p for _, p in named]})
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, iterations: int):
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _i: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, iterations) / iterations)))


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        torch.save(state, partial)
        os.replace(partial, path)  # a cut-off run leaves the previous checkpoint intact
    except OSError as exc:
        raise OutputError(f"Cannot write the training checkpoint '{path}': {exc.strerror or exc}.") from None


def fit(model: nn.Module, tensors: Sequence[torch.Tensor], loss_fn: LossFn, config: TrainConfig = TrainConfig(), *,
        checkpoint: Path | None = None, resume: bool = False, progress: ProgressFactory | None = None,
        description: str = "Training", lr_scales: dict[str, float] | None = None) -> TrainLog:
    """Train ``model`` in place on ``tensors`` (all indexed by sample, shuffled together each epoch).

    With ``checkpoint``, the model, optimizer, schedule and log are saved there after every epoch; with
    ``resume`` too, training continues from that file when it exists (it must come from the same config).
    ``lr_scales`` gives the parameters whose names start with a prefix their own learning rate, ``lr x factor``
    (DTS: the time masks learn faster than the weights).
    """
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ConfigError("Training tensors must all hold the same number of samples.")
    if n == 0:
        raise ConfigError("Training needs at least one sample.")
    device = next(model.parameters()).device
    per_epoch = math.ceil(n / config.batch_size)
    optimizer = _optimizer(model, config, lr_scales)
    scheduler = _schedule(optimizer, config, per_epoch * config.epochs)
    log = TrainLog()
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state.get("config") != config.to_dict():
            raise ConfigError(f"Checkpoint '{checkpoint}' was written with another training configuration; "
                              "remove it or train without --resume.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        log = TrainLog(epoch_losses=list(state["epoch_losses"]), resumed_from_epoch=int(state["epoch"]))
        start = int(state["epoch"])
    advance = (progress or (lambda _d, _t: (lambda _n: None)))(description, per_epoch * (config.epochs - start))
    was_training = model.training
    model.train()
    for epoch in range(start, config.epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        total = 0.0
        for first in range(0, n, config.batch_size):
            index = order[first:first + config.batch_size]
            batch = [t[index].to(device) for t in tensors]
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss.detach()):
                raise ConfigError(f"{description}: the loss became {float(loss)} in epoch {epoch + 1}; "
                                  "lower the learning rate.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(index)
            advance(1)
        log.epoch_losses.append(total / n)
        if checkpoint is not None:
            _save_checkpoint(Path(checkpoint), {
                "config": config.to_dict(), "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch_losses": log.epoch_losses})
    model.train(was_training)
    return log
