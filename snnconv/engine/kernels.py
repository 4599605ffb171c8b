"""Fused CPU loops for the engine's per-step work: the IF neuron (plain or signed) and the max-pool gate.

Run as torch ops, one IF step is four passes over the layer (integrate, compare, scale, reset) and one
gate step allocates its accumulated input, pools it and subtracts; on CPU those passes, not the
convolutions, are what made a simulation cost more than T forward passes of the ANN. Compiled with numba,
a block of neurons keeps its membranes in cache while the loop walks the chunk's steps, the gate pools each
channel plane while accumulating it, and both count their outputs per position for the statistics.

The loops do the same float32 operations in the same order as :func:`snnconv.neurons.if_step_`,
:func:`snnconv.neurons.signed_if_step_` and :func:`snnconv.neurons.maxpool_gate_step`, so their results are bit-identical (tests/test_kernels.py).
They are used for float32 tensors on the CPU when numba imports; anything else (CUDA, float64, training
with surrogate gradients, sub-step timing, max pooling with padding, dilation or ceil mode,
``SNNCONV_FUSED=0``) runs the torch ops. numba is imported on
first use and its compiled loops are cached on disk.
"""
from __future__ import annotations

import contextlib
import os
import threading

import torch
from torch.nn.modules.utils import _pair

_compiled: dict[str, object] = {}
# numba's built-in thread pool (workqueue) aborts the process when two Python threads launch loops at once
_launch = threading.Lock()
_NEURON_BLOCK = 2048  # neurons per parallel task of the IF loop: 8 KB of membrane per row
PARALLEL_FROM = 1 << 18  # neuron-steps from which a loop runs on several threads (see _parallel)


def _numba():
    """The numba module, or None where it cannot be used (not installed, or disabled by SNNCONV_FUSED=0)."""
    if "numba" not in _compiled:
        module = None
        if os.environ.get("SNNCONV_FUSED", "1") != "0":
            try:
                import numba as module
            except ImportError:
                module = None
            if module is not None and "NUMBA_THREADING_LAYER" not in os.environ:
                # numba's OpenMP layer (its default where libgomp is found) runs a second OpenMP runtime beside
                # torch's; once a parallel loop has run, each small torch op pays a fixed cost (a batch-8 conv
                # took 16 ms instead of 0.8 ms), which made early-exit and chunk-of-1 runs several times slower.
                # The workqueue layer has no OpenMP; its one-launcher-at-a-time rule is kept by _launch.
                module.config.THREADING_LAYER = "workqueue"
        _compiled["numba"] = module
    return _compiled["numba"]


@contextlib.contextmanager
def disabled():
    """Within this block the engine runs the torch ops, as where numba is missing (for side-by-side checks)."""
    module = _numba()
    _compiled["numba"] = None
    try:
        yield
    finally:
        _compiled["numba"] = module


def fused_available(*tensors: torch.Tensor) -> bool:
    """Whether the fused loops can run on these tensors: float32, on the CPU, with numba present."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and _numba() is not None


def _kernels(parallel: bool, in_place: bool = False):
    """The loops (IF, signed IF, gate), built for numba's threads or for the calling thread alone; with
    ``in_place`` the IF loops write their outputs over their input current (``out`` is not read)."""
    key = ("parallel" if parallel else "serial") + (" in place" if in_place else "")
    if key not in _compiled:
        _compiled[key] = _build(_numba(), parallel, in_place)
    return _compiled[key]


def _build(numba, parallel: bool, in_place: bool):
    njit, float32 = numba.njit, numba.float32
    # the outer loops' range: numba splits a prange over its threads. The builds differ in closure variables
    # (this one and in_place), which keeps their entries apart in numba's on-disk cache (its key hashes them).
    prange = numba.prange if parallel else range

    @njit(cache=True, nogil=True, parallel=parallel)
    def if_chunk(current, v, threshold, compare, out, counts, block):  # pragma: no cover - compiled
        # current, out [steps, rows, neurons]; v [rows, neurons]; threshold [neurons]; compare [steps, neurons];
        # counts [steps, neurons] float32 += spikes summed over rows (exact below 2**24 rows). Threads split the
        # neurons, so each owns its counts; counting in a second loop keeps the first one vectorized.
        steps, rows, neurons = current.shape
        zero, one = float32(0.0), float32(1.0)
        for first in prange((neurons + block - 1) // block):
            lo = first * block
            hi = min(neurons, lo + block)
            theta = threshold[lo:hi]
            for row in range(rows):
                membrane = v[row, lo:hi]
                for t in range(steps):
                    step_current, step_compare = current[t, row, lo:hi], compare[t, lo:hi]
                    # in place, the outputs overwrite the current: one array, so the loop stays vectorized (a
                    # separate ``out`` that aliases ``current`` would make LLVM fall back to scalar code)
                    step_out = step_current if in_place else out[t, row, lo:hi]
                    step_counts = counts[t, lo:hi]
                    for j in range(hi - lo):
                        potential = membrane[j] + step_current[j]
                        fired = theta[j] if potential >= step_compare[j] else zero
                        step_out[j] = fired
                        membrane[j] = potential - fired
                    for j in range(hi - lo):
                        step_counts[j] += one if step_out[j] != zero else zero

    @njit(cache=True, nogil=True, parallel=parallel)
    def signed_if_chunk(current, v, net, threshold, compare, out, counts, block):  # pragma: no cover - compiled
        # if_chunk with signed spikes: net [rows, neurons] is each neuron's net spike count (float32, exact).
        # A loop of its own, not a flag of if_chunk, so that the plain loop stays branch-free and vectorized.
        steps, rows, neurons = current.shape
        zero, one = float32(0.0), float32(1.0)
        for first in prange((neurons + block - 1) // block):
            lo = first * block
            hi = min(neurons, lo + block)
            theta = threshold[lo:hi]
            for row in range(rows):
                membrane, fired_net = v[row, lo:hi], net[row, lo:hi]
                for t in range(steps):
                    step_current, step_compare = current[t, row, lo:hi], compare[t, lo:hi]
                    # in place, the outputs overwrite the current: one array, so the loop stays vectorized (a
                    # separate ``out`` that aliases ``current`` would make LLVM fall back to scalar code)
                    step_out = step_current if in_place else out[t, row, lo:hi]
                    step_counts = counts[t, lo:hi]
                    for j in range(hi - lo):
                        potential = membrane[j] + step_current[j]
                        sign = zero
                        if potential >= step_compare[j]:
                            sign = one
                        elif potential < step_compare[j] - theta[j] and fired_net[j] > zero:
                            sign = -one
                        fired_net[j] += sign
                        fired = sign * theta[j]
                        step_out[j] = fired
                        membrane[j] = potential - fired
                    for j in range(hi - lo):
                        step_counts[j] += one if step_out[j] != zero else zero

    @njit(cache=True, nogil=True, parallel=parallel)
    def gate_chunk(x, accumulated, window_max, out, counts, kernel_h, kernel_w, stride_h, stride_w):  # pragma: no cover
        # x [steps, rows, C, H, W]; accumulated [rows, C, H, W]; window_max [rows, C, Ho, Wo];
        # out [steps, rows, C, Ho, Wo]; counts [steps, C, Ho, Wo] float32 += nonzero outputs summed over rows.
        # Threads split the channels, so each owns its counts.
        steps, rows, channels, height, width = x.shape
        out_h, out_w = window_max.shape[2], window_max.shape[3]
        zero, one = float32(0.0), float32(1.0)
        for channel in prange(channels):
            for row in range(rows):
                acc, previous = accumulated[row, channel], window_max[row, channel]
                for t in range(steps):
                    step_x, step_out, step_counts = x[t, row, channel], out[t, row, channel], counts[t, channel]
                    for i in range(height):
                        for j in range(width):
                            acc[i, j] = acc[i, j] + step_x[i, j]
                    for i in range(out_h):
                        for j in range(out_w):
                            top, left = i * stride_h, j * stride_w
                            largest = acc[top, left]
                            for di in range(kernel_h):
                                for dj in range(kernel_w):
                                    value = acc[top + di, left + dj]
                                    if value > largest:
                                        largest = value
                            emitted = largest - previous[i, j]
                            step_out[i, j] = emitted
                            previous[i, j] = largest
                            step_counts[i, j] += one if emitted != zero else zero

    return if_chunk, signed_if_chunk, gate_chunk


def warm_up(signed: bool = False) -> None:
    """Load (or compile) the loops now, on tiny arrays, once per process; the signed IF loop only when
    ``signed`` (a network with signed spikes), so plain networks never load it.

    The engine calls this before its first chunk: loading puts numba's and LLVM's long-lived allocations
    below the chunk buffers in the heap instead of between them, where they split the freed buffers
    (measured: up to 0.5 GB more peak memory on ResNet-20, varying from run to run)."""
    if _numba() is None:
        return
    for parallel in (False, True) if _threads() > 1 else (False,):
        for in_place in (False, True):
            if_chunk, signed_if_chunk, gate_chunk = _kernels(parallel, in_place)
            with _launch:
                if ("warm", parallel, in_place) not in _compiled:
                    if_chunk(*(torch.zeros(shape).numpy()
                               for shape in ((1, 1, 1), (1, 1), (1,), (1, 1), (1, 1, 1), (1, 1))), 1)
                    if not in_place:
                        gate_chunk(*(torch.zeros(shape).numpy()
                                     for shape in ((1, 1, 1, 2, 2), (1, 1, 2, 2), (1, 1, 1, 1), (1, 1, 1, 1, 1),
                                                   (1, 1, 1, 1))), 2, 2, 2, 2)
                    _compiled["warm", parallel, in_place] = True
                if signed and ("warm signed", parallel, in_place) not in _compiled:
                    signed_if_chunk(*(torch.zeros(shape).numpy()
                                      for shape in ((1, 1, 1), (1, 1), (1, 1), (1,), (1, 1), (1, 1, 1), (1, 1))), 1)
                    _compiled["warm signed", parallel, in_place] = True


def _threads() -> int:
    """The threads a parallel loop may use: torch's setting, within what numba started with."""
    return max(1, min(torch.get_num_threads(), _numba().config.NUMBA_NUM_THREADS))


def _parallel(work: int) -> bool:
    """Whether a loop over ``work`` neuron-steps runs on numba's threads; sets their number if so.

    Launching a parallel loop costs about 0.1 ms even on one thread (measured: 119 us against 2 us for the
    serial loop on one row of 6272 neurons), more than the whole loop of a small chunk. Early exit runs
    step by step on batches that shrink to a few rows, where that cost made up a large part of the run."""
    threads = _threads()
    if threads == 1 or work < PARALLEL_FROM:
        return False
    _numba().set_num_threads(threads)
    return True


def if_chunk_(per_step: torch.Tensor, v: torch.Tensor, threshold: torch.Tensor, compare: torch.Tensor,
              out: torch.Tensor, net: torch.Tensor | None = None) -> torch.Tensor:
    """Run IF steps in place, as :func:`snnconv.neurons.if_step_` applied to each step of ``per_step`` (with
    ``net``, the signed neuron's net spike counts [rows, ...] float32 contiguous, as
    :func:`snnconv.neurons.signed_if_step_`).

    ``per_step`` [steps, rows, ...] is the input current (a constant current may be an expanded view);
    ``v`` [rows, ...] the membrane, contiguous, updated in place; ``threshold`` broadcasts against
    [1, ...]; ``compare`` [steps or 1, 1, ...] is, per step, what the membrane is tested against;
    ``out`` [steps, rows, ...] receives theta * s; it may be ``per_step`` itself (contiguous), whose current
    the outputs then overwrite. Returns the spikes per step and neuron position, summed over rows
    ([steps, neurons] float64).
    """
    steps, rows = per_step.shape[:2]
    shape = v.shape[1:]
    neurons = shape.numel()
    in_place = out.data_ptr() == per_step.data_ptr() and out.shape == per_step.shape and per_step.is_contiguous()
    if_chunk, signed_if_chunk, _ = _kernels(_parallel(steps * rows * neurons), in_place)
    flat_threshold = torch.broadcast_to(threshold, (1, *shape)).reshape(neurons).contiguous()
    flat_compare = torch.broadcast_to(compare, (steps, 1, *shape)).reshape(steps, neurons).contiguous()
    counts = torch.zeros((steps, neurons), dtype=torch.float32)
    # an IF step's output carries no gradient (a comparison), so detached inputs give the same values
    current, membrane = per_step.detach().reshape(steps, rows, neurons).numpy(), v.detach().view(rows, neurons).numpy()
    rest = (flat_threshold.detach().numpy(), flat_compare.detach().numpy(), out.view(steps, rows, neurons).numpy(),
            counts.numpy(), _NEURON_BLOCK)
    with _launch:
        if net is None:
            if_chunk(current, membrane, *rest)
        else:
            signed_if_chunk(current, membrane, net.view(rows, neurons).numpy(), *rest)
    return counts.to(torch.float64)


def gate_fusable(pool: torch.nn.MaxPool2d, x: torch.Tensor) -> bool:
    """Whether :func:`gate_chunk_` handles this pooling: 2-D, no padding or dilation, floor mode."""
    return (x.dim() == 5 and not pool.ceil_mode and _pair(pool.padding) == (0, 0)
            and _pair(pool.dilation) == (1, 1) and fused_available(x))


def gate_chunk_(per_step: torch.Tensor, accumulated: torch.Tensor, window_max: torch.Tensor, out: torch.Tensor,
                pool: torch.nn.MaxPool2d) -> torch.Tensor:
    """Run max-pool gate steps in place, as :func:`snnconv.neurons.maxpool_gate_step` applied to each step.

    ``per_step`` [steps, rows, C, H, W]; ``accumulated`` [rows, C, H, W] and ``window_max`` [rows, C, Ho, Wo]
    are the gate's state, contiguous, updated in place; ``out`` [steps, rows, C, Ho, Wo] receives the output.
    Returns the nonzero outputs per step and position, summed over rows ([steps, C * Ho * Wo] float64).
    """
    steps = per_step.shape[0]
    kernel_h, kernel_w = _pair(pool.kernel_size)
    stride_h, stride_w = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
    _, _, gate_chunk = _kernels(_parallel(per_step.numel()))
    counts = torch.zeros((steps, *window_max.shape[1:]), dtype=torch.float32)
    with _launch:
        gate_chunk(per_step.numpy(), accumulated.numpy(), window_max.numpy(), out.numpy(), counts.numpy(),
                   kernel_h, kernel_w, stride_h, stride_w)
    return counts.reshape(steps, -1).to(torch.float64)
