"""The shared training loop (surrogate-model and policy training, checkpoints, resume, progress)."""
from .loop import ParamGroup, TrainConfig, TrainLog, fit

__all__ = ["ParamGroup", "TrainConfig", "TrainLog", "fit"]
