"""The one representation every importer produces."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.fx

from ..errors import ModelLoadError


@dataclass
class ImportedModel:
    """A source network as a torch.fx GraphModule in eval mode, plus where it came from.

    Nothing downstream of import looks at ``source_format``; it is kept for the manifest only.
    """

    graph: torch.fx.GraphModule
    source: str  # what the user named: a path or a factory spec
    source_format: str  # "pytorch" | "torchscript" | "onnx"
    source_hash: str  # sha256 of the source file, or of the state dict for in-memory modules
    input_shape: tuple[int, ...] | None = None  # per-sample input shape when the source declares it
    import_check: dict = field(default_factory=dict)  # oracle comparison, e.g. onnxruntime's max abs diff


def non_finite_error(source: str, name: str) -> ModelLoadError:
    return ModelLoadError(f"Model '{source}' has NaN or Inf values in '{name}'; fix the weights before converting.")


def require_finite(named_tensors: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
    """NaN/Inf weights make every threshold and spike count meaningless: refuse them, naming the tensor."""
    for name, tensor in named_tensors:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise non_finite_error(source, name)
