"""The shared training loop (surrogate-model and policy training, checkpoints, resume, progress)."""
from .loop import TrainConfig, TrainLog, fit

__all__ = ["TrainConfig", "TrainLog", "fit"]
