"""The one representation every importer produces."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.fx


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
