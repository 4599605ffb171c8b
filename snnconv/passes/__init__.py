"""Graph passes with declared contracts, and the normalization pipeline built from them."""
from . import normalize  # noqa: F401  (registers the passes)
from .normalize import NORMALIZE_ORDER
from .registry import PASSES, GraphPass, PassRecord, register_pass

__all__ = ["PASSES", "GraphPass", "PassRecord", "register_pass", "NORMALIZE_ORDER"]
