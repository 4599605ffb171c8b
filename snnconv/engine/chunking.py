"""How many time steps a chunk simulates together when the caller leaves it open.

The engine runs a stateless layer once per chunk on ``[chunk_steps * batch, ...]`` rows, and every IF layer
walks that block step by step. Large blocks are cheap in Python overhead but leave the CPU's caches: at batch
256, a chunk of 8 steps of CIFAR-10 ResNet-20's first stage is 134 MB per layer, and the run was 1.45x the
ANN's time against 1.21x with chunks of one step, whose 17 MB block the next layer reads while it is still
cached (docs/benchmarks.md, section 3). Small batches want the opposite: at batch 1, one step per chunk made
the same network 2.4x slower than 8, all of it per-op overhead. So the automatic chunk is the largest
number of steps, up to 8, whose block of the network's largest layer stays within CHUNK_BYTES. On other
devices than the CPU the chunk stays 8, the engine's fixed chunk before this rule: nothing was measured there.
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
        if isinstance(output, torch.Tensor):
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
