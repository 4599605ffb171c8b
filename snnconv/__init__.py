"""snnconv: convert trained CNNs into integrate-and-fire spiking networks and compress them in time."""
__version__ = "0.1.0"

from .api import Evaluation, convert, evaluate, load_model  # noqa: E402
from .artifacts import load, save  # noqa: E402
from .config import BalanceConfig, ConvertConfig, SimulationConfig  # noqa: E402
from .network import SpikingNetwork  # noqa: E402

__all__ = ["__version__", "load_model", "convert", "evaluate", "save", "load", "Evaluation", "SpikingNetwork",
           "BalanceConfig", "ConvertConfig", "SimulationConfig"]
