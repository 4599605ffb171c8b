"""Trace a PyTorch module into a torch.fx GraphModule, turning fx's errors into a sentence a user can act on."""
from __future__ import annotations

import torch
import torch.fx
from torch import nn

from ..errors import UnsupportedLayerError


def trace_module(module: nn.Module, source: str) -> torch.fx.GraphModule:
    """Symbolically trace ``module``; leaf modules are torch.nn's own, user modules are traced through."""
    module = module.eval()
    try:
        return torch.fx.symbolic_trace(module)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ... depending on the construct
        raise UnsupportedLayerError(
            f"Model '{source}' cannot be traced by torch.fx ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "remove data-dependent Python control flow from its forward or export it to ONNX."
        ) from exc
