"""One exception family for everything a user can get wrong.

Every message is one sentence that names the file, layer or option at fault and says what to do.
Each class carries its own process exit code so that scripts and CI can tell failures apart; the
codes are listed in docs/cli.md.
"""
from __future__ import annotations


class SnnconvError(Exception):
    """Base class: a problem with the user's input, not a bug in snnconv."""

    exit_code = 1


class ConfigError(SnnconvError, ValueError):
    """An option has a value that cannot work (T <= 0, unknown preset, ...)."""

    exit_code = 3


class ModelLoadError(SnnconvError):
    """A model file is missing, unreadable or not a model."""

    exit_code = 4


class UnsafeModelError(SnnconvError):
    """A model would have to be unpickled, which runs code, and the user did not opt in."""

    exit_code = 5


class UnsupportedLayerError(SnnconvError):
    """A graph node has no conversion rule, or the model has nothing to convert."""

    exit_code = 6


class ImportMismatchError(SnnconvError):
    """An imported ONNX graph does not reproduce onnxruntime's output within tolerance."""

    exit_code = 7


class DataError(SnnconvError):
    """A dataset is missing, empty, of the wrong shape or dtype, or holds NaN/Inf."""

    exit_code = 8


class OutputError(SnnconvError):
    """An output location cannot be written."""

    exit_code = 9


class ArtifactError(SnnconvError):
    """An artifact directory is incomplete, corrupt, or from a newer schema."""

    exit_code = 10


class GateFailed(SnnconvError):
    """A CI gate (accuracy drop, average T, energy ratio) was not met.

    Each gate has its own exit code so that a pipeline can tell which one failed.
    """

    GATE_EXIT_CODES = {"max-acc-drop": 20, "max-avg-t": 21, "min-energy-ratio": 22}

    def __init__(self, gate: str, message: str):
        super().__init__(message)
        self.gate = gate
        self.exit_code = self.GATE_EXIT_CODES[gate]
        self.result = None  # the run whose summary failed the gate (workflows.run_evaluate), for its report
