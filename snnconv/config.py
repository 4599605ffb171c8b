"""Typed, frozen configuration for each stage, validated on construction.

Every option has exactly one type; per-layer overrides are keyed by the layer's node name. ``to_dict``
and ``from_dict`` give the plain data stored in artifact manifests and printed in reports.
"""
from __future__ import annotations

import numbers
from dataclasses import MISSING, asdict, dataclass, field, fields

from .errors import ConfigError

BALANCE_METHODS = ("max", "percentile", "mse")
GRANULARITIES = ("layer", "channel")
CALIBRATIONS = ("none", "light", "advanced", "weights")
MAXPOOL_MODES = ("gate", "avg")
# how a spike train crossing into a layer with another window is re-timed (docs/teas.md, "5. Execute"):
# linear: t' = floor(t W / S); substep: from the interpolated threshold-crossing time x + f;
# substep-vfire: from the slides' literal x + theta / V_fire
SPIKE_TIMINGS = ("linear", "substep", "substep-vfire")


def check_timing(timing: str) -> str:
    """``timing`` if it is one of :data:`SPIKE_TIMINGS`, else a ConfigError naming the option."""
    if timing not in SPIKE_TIMINGS:
        raise ConfigError(f"--timing must be one of {', '.join(SPIKE_TIMINGS)}, got '{timing}'.")
    return timing


class _Plain:
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"Unknown {cls.__name__} option(s): {', '.join(sorted(unknown))}.")
        values = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            nested = isinstance(default, _Plain) and isinstance(value, dict)  # a nested config, e.g. balance
            values[f.name] = type(default).from_dict(value) if nested else value
        return cls(**values)


@dataclass(frozen=True)
class BalanceConfig(_Plain):
    """How thresholds are chosen. ``time_steps`` is the T the MSE quantizer targets; None (the default) is half
    the T the network is converted for (ConvertConfig.balance_steps)."""

    method: str = "mse"
    percentile: float = 99.99
    granularity: str = "channel"
    time_steps: int | None = None
    overrides: dict = field(default_factory=dict)  # node name -> threshold (activation units)

    def __post_init__(self):
        if self.method not in BALANCE_METHODS:
            raise ConfigError(f"--balance must be one of {', '.join(BALANCE_METHODS)}, got '{self.method}'.")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"--granularity must be one of {', '.join(GRANULARITIES)}, got '{self.granularity}'.")
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"--percentile must be in (0, 100], got {self.percentile}.")
        if self.time_steps is not None and self.time_steps <= 0:
            raise ConfigError(f"--balance-steps must be positive, got {self.time_steps}.")


@dataclass(frozen=True)
class ConvertConfig(_Plain):
    """The whole conversion pipeline: balance, neuron options, max pooling, calibration."""

    balance: BalanceConfig = field(default_factory=BalanceConfig)
    half_init: bool = True  # initial membrane potential theta/2
    signed_spikes: bool = False  # neurons may emit negative spikes that retract earlier ones (neurons/if_neuron.py)
    maxpool: str = "gate"
    calibrate: str = "advanced"  # Li et al. 2021 bias + potential calibration: docs/benchmarks.md, section 1
    calibration_samples: int = 256  # samples of the calibration set used by light/advanced calibration
    time_steps: int = 32  # the T conversion and calibration target
    weight_calibration_steps: int = 200  # Adam steps per layer of weight calibration (calibrate="weights")
    weight_calibration_lr: float = 1e-3  # its peak learning rate (cosine decay to zero)

    @property
    def balance_steps(self) -> int:
        """The T the MSE threshold search quantizes for: ``balance.time_steps`` if set, else half the conversion T.
        Deep layers start firing steps after the input arrives, so they integrate over fewer steps than T; a
        quantizer with half the levels picks the lower thresholds that suit them (docs/design.md, "Thresholds
        instead of weight normalization")."""
        return self.balance.time_steps or max(1, self.time_steps // 2)

    def __post_init__(self):
        if self.maxpool not in MAXPOOL_MODES:
            raise ConfigError(f"--maxpool must be one of {', '.join(MAXPOOL_MODES)}, got '{self.maxpool}'.")
        if self.calibrate not in CALIBRATIONS:
            raise ConfigError(f"--calibrate must be one of {', '.join(CALIBRATIONS)}, got '{self.calibrate}'.")
        if self.time_steps <= 0:
            raise ConfigError(f"Time steps T must be positive, got {self.time_steps}.")
        if self.calibration_samples <= 0:
            raise ConfigError(f"Calibration samples must be positive, got {self.calibration_samples}.")
        if self.weight_calibration_steps <= 0 or not self.weight_calibration_lr > 0:
            raise ConfigError("Weight calibration needs positive steps and learning rate, got "
                              f"{self.weight_calibration_steps} and {self.weight_calibration_lr}.")


@dataclass(frozen=True)
class SimulationConfig(_Plain):
    """How the time engine runs: the steps to simulate, chunking, batching, device."""

    time_steps: int = 32
    chunk_steps: int | None = None  # None: the network's automatic chunk (SpikingNetwork.chunk_steps_for)
    batch_size: int = 256
    device: str = "cpu"
    timing: str | None = None  # spike timing between per-layer windows; None: the network's own (SPIKE_TIMINGS)

    def __post_init__(self):
        for name in ("time_steps", "chunk_steps", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                                      or value <= 0):
                raise ConfigError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}.")
        if self.timing is not None:
            check_timing(self.timing)

