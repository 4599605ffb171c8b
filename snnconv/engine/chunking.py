"""How many time steps a chunk simulates together when the caller leaves it open.

The engine runs a stateless layer once per chunk on ``[chunk_steps * batch, ...]`` rows, and every IF layer
walks that block step by step. Many steps per chunk save per-op Python work, which is what a small batch
needs; but at batch 256 a chunk of 8 steps of CIFAR-10 ResNet-20's first stage is a 134 MB block per layer, and
the network ran slower than with one step per chunk (17 MB blocks): measured in docs/benchmarks.md, section 3,
"Chunk size", with docs/design.md ("Chunks") summing it up. So the automatic chunk is the largest number of
steps, up to 8, whose block of the network's largest layer stays within CHUNK_BYTES. Other devices than the
CPU keep 8 steps, the engine's fixed chunk before this rule: nothing was measured there.
"""
from __future__ import annotations

import torch

CHUNK_BYTES = 16 << 20
MAX_CHUNK_STEPS = 8
# conversion's calibration runs keep a fixed chunk, so that a network converts to the same values whatever the
# batch size (another chunk regroups the convolutions' rows, which can change float sums in the last bit)
CALIBRATION_CHUNK_STEPS = 8


def largest_layer_bytes(graph: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """Bytes per sample and step of the largest output of any leaf module (one sample through the graph, whose
    spiking layers act as the ReLUs they replace outside the engine)."""
    largest = 0

    def measure(_module, _inputs, output):
        nonlocal largest
        if isinstance(output, torch.Tensor) and output.dim() > 0:  # [1, ...]: one sample's values
            largest = max(largest, output[0].numel() * output.element_size())

    leaves = [m for m in graph.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(measure) for m in leaves]
    try:
        with torch.no_grad():
            graph(torch.zeros((1, *input_shape), device=_device(graph)))
    finally:
        for handle in handles:
            handle.remove()
    return largest


def auto_chunk_steps(graph: torch.nn.Module, input_shape: tuple[int, ...], batch_size: int) -> int:
    """The largest chunk, 1 to MAX_CHUNK_STEPS steps, whose block of the largest layer fits CHUNK_BYTES (on the
    CPU; MAX_CHUNK_STEPS elsewhere)."""
    if _device(graph).type != "cpu":
        return MAX_CHUNK_STEPS
    block = batch_size * max(1, largest_layer_bytes(graph, input_shape))
    return max(1, min(MAX_CHUNK_STEPS, CHUNK_BYTES // block))


def _device(graph: torch.nn.Module) -> torch.device:
    return next((p.device for p in graph.parameters()), torch.device("cpu"))
