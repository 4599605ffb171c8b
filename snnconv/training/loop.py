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
            raise ConfigError(f"Training epochs (--epochs) must be positive, got {self.epochs}.")
        if self.batch_size <= 0:
            raise ConfigError(f"Training batch size must be positive, got {self.batch_size}.")
        if not self.lr > 0:
            raise ConfigError(f"Learning rate (--lr) must be positive, got {self.lr}.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Optimizer '{self.optimizer}' is unknown; choose from {', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"Schedule '{self.schedule}' is unknown; choose from {', '.join(SCHEDULES)}.")


@dataclass
class TrainLog:
    """Mean training loss of every epoch, and where training started (0, or the resumed epoch)."""

    epoch_losses: list[float] = field(default_factory=list)
    resumed_from_epoch: int = 0


@dataclass(frozen=True)
class ParamGroup(_Plain):
    """Parameters whose names start with ``prefix`` train with their own learning rate, and optionally their own
    optimizer (DTS: time masks learn with SGD at a higher rate while Adam trains a transformer's weights)."""

    prefix: str
    lr: float
    optimizer: str | None = None  # None: in the main optimizer, only the learning rate differs
    momentum: float = 0.9  # for a separate SGD optimizer

    def __post_init__(self):
        if not self.lr > 0:
            raise ConfigError(f"Learning rate of '{self.prefix}*' must be positive, got {self.lr}.")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Optimizer '{self.optimizer}' is unknown; choose from {', '.join(OPTIMIZERS)}.")


def _build(kind: str, groups: list[dict], lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _optimizers(model: nn.Module, config: TrainConfig, param_groups: Sequence[ParamGroup]) -> list[torch.optim.Optimizer]:
    """The main optimizer (``config``) and one more per group that names a different optimizer kind."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    shared, separate = [], []
    for group in param_groups:
        chosen = [p for name, p in named if name.startswith(group.prefix)]
        named = [(name, p) for name, p in named if not name.startswith(group.prefix)]
        if not chosen:
            continue
        if group.optimizer is None or group.optimizer == config.optimizer:
            shared.append({"params": chosen, "lr": group.lr})
        else:
            separate.append(_build(group.optimizer, [{"params": chosen}], group.lr, group.momentum, 0.0))
    if named:
        shared.insert(0, {"params": [p for _, p in named]})
    main = [_build(config.optimizer, shared, config.lr, config.momentum, config.weight_decay)] if shared else []
    return main + separate


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
        description: str = "Training", param_groups: Sequence[ParamGroup] = (),
        fingerprint: dict | None = None) -> TrainLog:
    """Train ``model`` in place on ``tensors`` (all indexed by sample, shuffled together each epoch).

    With ``checkpoint``, the model, optimizer, schedule and log are saved there after every epoch; with
    ``resume`` too, training continues from that file when it exists (it must come from the same config).
    ``param_groups`` give the parameters under a name prefix their own learning rate or optimizer (every group
    follows the same schedule). ``fingerprint`` describes whatever else makes a run what it is (the loss and its
    weights): a checkpoint is resumed only under the same config, groups and fingerprint.
    """
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ConfigError("Training tensors must all hold the same number of samples.")
    if n == 0:
        raise ConfigError("Training needs at least one sample.")
    device = next(model.parameters()).device
    per_epoch = math.ceil(n / config.batch_size)
    optimizers = _optimizers(model, config, param_groups)
    schedulers = [_schedule(o, config, per_epoch * config.epochs) for o in optimizers]
    identity = {"train": config.to_dict(), "param_groups": [g.to_dict() for g in param_groups],
                "fingerprint": fingerprint or {}}
    log = TrainLog()
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state.get("config") != identity:
            raise ConfigError(f"Checkpoint '{checkpoint}' was written with another training configuration; "
                              "remove it or train without --resume.")
        model.load_state_dict(state["model"])
        for optimizer, saved in zip(optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(schedulers, state["schedulers"]):
            scheduler.load_state_dict(saved)
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
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer, scheduler in zip(optimizers, schedulers):
                optimizer.step()
                scheduler.step()
            total += float(loss.detach()) * len(index)
            advance(1)
        log.epoch_losses.append(total / n)
        if checkpoint is not None:
            _save_checkpoint(Path(checkpoint), {
                "config": identity, "epoch": epoch + 1, "model": model.state_dict(),
                "optimizers": [o.state_dict() for o in optimizers], "schedulers": [s.state_dict() for s in schedulers],
                "epoch_losses": log.epoch_losses})
    model.train(was_training)
    return log
