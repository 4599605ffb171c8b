"""Resuming a simulation part-way through the network from recorded spike trains.

Calibration (stages/calibrate.py) changes one neuron layer at a time, in network order, and after each change
measures that layer again. Simulating from the input every time costs the whole prefix per measurement, which
is quadratic in depth. Instead, the outputs that the rest of the network reads from the finished prefix are
recorded once over their whole windows (a :class:`Trace` each) and replayed chunk by chunk: a run that
resumes after op ``after`` (a :class:`Resume`) executes only the ops behind it, with bit-identical results,
because the schedule of steps per chunk depends only on the plan and the graph.

An IF layer's output is theta * s with s in {0, 1} (or {-1, 0, 1} for signed spikes), so its trace keeps s as
packed bits (one bit plane, two when signed) and theta beside it: 1/32 (1/16) of the float output's memory,
restored exactly.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .program import Program

_BIT_VALUES = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)  # bit k of byte j: position 8 j + k


def pack_spikes(block: torch.Tensor, signed: bool) -> torch.Tensor:
    """[steps, rows, ...] outputs theta * s -> [steps, planes, bytes] uint8: bit planes of s > 0 (and s < 0)."""
    flat = block.reshape(block.shape[0], -1)
    planes = torch.stack([flat > 0, flat < 0], 1) if signed else (flat > 0).unsqueeze(1)
    if flat.shape[1] % 8:
        planes = F.pad(planes, (0, -flat.shape[1] % 8))
    eighths = planes.view(*planes.shape[:2], -1, 8).to(torch.uint8)
    packed = eighths[..., 0].clone()
    for bit in range(1, 8):  # one byte-sized pass per bit: no temporary eight times the packed size
        packed |= eighths[..., bit] << bit
    return packed


def unpack_outputs(packed: torch.Tensor, shape: torch.Size, threshold: torch.Tensor, dtype: torch.dtype
                   ) -> torch.Tensor:
    """The outputs theta * s [steps, *shape] (in ``dtype``) that :func:`pack_spikes` packed."""
    bits = (packed.unsqueeze(-1) & _BIT_VALUES.to(packed.device)).ne_(0).view(*packed.shape[:2], -1)
    bits = bits[..., :shape.numel()]
    outputs = bits[:, 0].to(dtype)
    if packed.shape[1] == 2:
        outputs -= bits[:, 1].to(dtype)
    return outputs.view(packed.shape[0], *shape).mul_(threshold)  # in place: one float block, as a run makes


@dataclass
class Trace:
    """One temporal op's output over its whole window: [window, rows, ...]."""

    values: torch.Tensor | None  # the output, or an IF layer's packed spikes when ``threshold`` is set
    threshold: torch.Tensor | None = None  # broadcastable against one step [rows, ...]
    shape: torch.Size | None = None  # of one step [rows, ...], for packed spikes
    fractions: torch.Tensor | None = None  # sub-step crossing fractions, for an IF layer re-timed by them
    dtype: torch.dtype = torch.float32  # of the restored output
    # an output that is not a tensor (a size read off a folded tensor depends on the steps folded): per chunk,
    # keyed by its first step
    per_chunk: dict[int, object] | None = None
    starts: tuple[int, ...] = (0,)  # the first step of each chunk's block, as the run produced them

    def block(self, start: int, goal: int):
        """The output of steps start..goal-1."""
        if self.per_chunk is not None:
            return self.per_chunk[start]
        values = self.values[start:goal]
        return values if self.threshold is None else unpack_outputs(values, self.shape, self.threshold, self.dtype)

    def total(self) -> torch.Tensor:
        """The output summed over the window, per sample: summed per chunk, then over chunks, as a run records it
        (the same float sums, bit for bit)."""
        bounds = list(self.starts) + [self.values.shape[0]]
        summed = None
        for start, goal in itertools.pairwise(bounds):
            block = self.block(start, goal).sum(0)
            summed = block if summed is None else summed + block
        return summed


@dataclass
class Resume:
    """A run that starts after op ``after`` (program order) and replays ``traces`` for what later ops read."""

    after: str
    traces: dict[str, Trace]


def frontier(program: Program, after: str, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The temporal ops at or before ``after`` whose outputs an op behind it reads, plus those of ``keep`` there."""
    index = {op.name: i for i, op in enumerate(program.ops)}
    cut = index[after]
    read_later = {source.name for op in program.ops[cut + 1:] for source in op.node.all_input_nodes}
    return [op.name for op in program.ops[:cut + 1] if not op.static and (op.name in read_later or op.name in keep)]


class TraceRecorder:
    """Writes one op's output blocks over its ``window`` as a run produces them; an IF layer's (``spikes``) as
    packed bits. The trace is allocated once, so recording never holds more than the trace and one block."""

    def __init__(self, spikes: bool, window: int):
        self.spikes, self.window = spikes, window
        self.starts: list[int] = []
        self.values: torch.Tensor | None = None
        self.fractions: torch.Tensor | None = None
        self.per_chunk: dict[int, object] = {}
        self.threshold: torch.Tensor | None = None
        self.dtype = torch.float32

    def add(self, start: int, value, fractions: torch.Tensor | None, neuron=None) -> None:
        """One chunk's block [steps, rows, ...] from step ``start``; ``neuron`` the IF layer that emitted it."""
        self.starts.append(start)
        if not isinstance(value, torch.Tensor):
            self.per_chunk[start] = value
            return
        goal = start + value.shape[0]
        stored = pack_spikes(value, neuron.signed) if self.spikes else value
        if self.values is None:
            self.dtype, self.shape = value.dtype, value.shape[1:]
            if self.spikes:
                self.threshold = neuron.broadcast(neuron.threshold, value.dim() - 1).detach().clone()
            self.values = stored.new_empty((self.window, *stored.shape[1:]))
        self.values[start:goal] = stored
        if fractions is not None:
            if self.fractions is None:
                self.fractions = fractions.new_empty((self.window, *fractions.shape[1:]))
            self.fractions[start:goal] = fractions

    def finish(self) -> Trace:
        if self.per_chunk:
            return Trace(None, per_chunk=self.per_chunk, starts=tuple(self.starts))
        return Trace(self.values, self.threshold, self.shape if self.spikes else None, self.fractions, self.dtype,
                     starts=tuple(self.starts))
