"""The TTFS time engine: every neuron fires at most once, against a falling threshold (ALGORITHMS 2A, 6.3).

Timing. A neuron layer's depth d is 1 + the largest depth among the neuron layers it reads (through
convolutions, pooling, adds, ...); a layer fed only by the analog input has depth 1. Layer d fires in the
global window [(d - 1) T_s, (d - 1) T_s + T_w) at local time tau = t - (d - 1) T_s. It integrates every
spike its sources emit, each weighted by the source's kernel: a spike at the source's local time tau'
adds W * theta_src * exp(-(tau' - td_src) / tc_src). A spike that arrives before the layer's window opens
(a skip connection from a shallower layer) waits at the dendrite and counts from the window's start. The
readout integrates the last layers' spikes the same way and is read at every global step; the latency is
(D - 1) T_s + T_w steps, D the deepest layer. With T_s = T_w a layer has all its input before it fires;
with T_s < T_w (early firing) it fires on what has arrived so far.

Execution. Within a layer's fire window the membrane changes only while its sources still fire, so the
engine evaluates the layer's input (convolutions and all) once per step of that overlap, T_w - T_s
times (once when T_s = T_w), with those steps folded into the batch. The falling threshold is then
compared at every step of the window, and a neuron that has fired is blocked. Max pooling passes the
earliest spike of its window (the largest value: the kernel falls with time).

Counting. Spikes per global step per layer; synaptic operations per global step: for each weighted
layer, the input elements whose value changes at that step (a spike arrives) times their fan-out.
"""
from __future__ import annotations

import operator
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.node import map_arg

from ..errors import ConfigError
from ..neurons.ttfs import NO_SPIKE, TTFSCoding, decode, dynamic_threshold
from ..results import NeuronLayerStats, SimulationResult, SynapticLayerStats
from .fanout import dense_macs, input_fanout
from .program import Op, call_op, compile_program, fetch_attr

ProgressFn = Callable[[int], None]
NEURON_KIND = "ttfs"

# Ops that only move or select elements: each output element still changes at most once, when its spike
# arrives, so its event time is the op applied to the input's event times.
_REARRANGING_METHODS = frozenset({"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "permute",
                                  "transpose", "clone", "float", "size", "dim"})
_REARRANGING_FUNCTIONS = frozenset({torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, operator.getitem,
                                    torch.cat, torch.concat, getattr})
_REARRANGING_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity)


@dataclass(frozen=True)
class Window:
    """Global steps [start, start + length) during which something happens."""

    start: int
    length: int

    @property
    def end(self) -> int:  # exclusive
        return self.start + self.length


class TTFSEngine:
    """Simulates a converted graph (IF neurons, max-pool gates) with TTFS coding; no state across batches."""

    def __init__(self, graph: torch.fx.GraphModule, coding: TTFSCoding, device: torch.device | str = "cpu"):
        self.graph = graph
        self.coding = coding
        self.device = torch.device(device)
        self.program = compile_program(graph)
        self.ops = {op.name: op for op in self.program.ops}
        self.neurons = [op for op in self.program.ops if op.kind == "neuron"]
        missing = [op.name for op in self.neurons if op.name not in coding.kernels]
        if missing:
            raise ConfigError(f"The TTFS coding has no temporal kernel for neuron layer '{missing[0]}'.")
        self.depth = self._depths()
        self.fire_window = {op.name: Window((self.depth[op.name] - 1) * coding.fire_start, coding.window)
                            for op in self.neurons}
        deepest = max(self.depth[op.name] for op in self.neurons)
        self.latency = (deepest - 1) * coding.fire_start + coding.window

    # ------------------------------------------------------------------ structure
    def _depths(self) -> dict[str, int]:
        depth: dict[str, int] = {}
        for op in self.program.ops:
            upstream = max((depth.get(n.name, 0) for n in op.node.all_input_nodes), default=0)
            depth[op.name] = upstream + 1 if op.kind == "neuron" else upstream
        return depth

    def _source_neurons(self, op: Op) -> list[str]:
        """Neuron layers whose spikes reach ``op`` without crossing another neuron layer."""
        found, stack, seen = [], list(op.node.all_input_nodes), set()
        while stack:
            node = stack.pop()
            if node.name in seen:
                continue
            seen.add(node.name)
            source = self.ops[node.name]
            if source.kind == "neuron":
                found.append(node.name)
            elif not source.static:
                stack.extend(node.all_input_nodes)
        return found

    def input_changes(self, op: Op) -> Window:
        """The global steps at which ``op``'s input can change: the union of its source neurons' windows."""
        sources = self._source_neurons(op)
        if not sources:
            return Window(0, 1)
        start = min(self.fire_window[s].start for s in sources)
        end = max(self.fire_window[s].end for s in sources)
        return Window(start, end - start)

    # ------------------------------------------------------------------ evaluation
    def _static_values(self, x: torch.Tensor) -> dict[str, object]:
        static: dict[str, object] = {}
        for op in self.program.ops:
            if not op.static or op.kind == "output":
                continue
            if op.kind == "input":
                static[op.name] = x
            elif op.kind == "constant":
                static[op.name] = fetch_attr(self.graph, op.node.target)
            else:
                args = map_arg(op.node.args, lambda n: static[n.name])
                kwargs = map_arg(op.node.kwargs, lambda n: static[n.name])
                static[op.name] = self._call(op, args, kwargs)
        return static

    def _values_at(self, target: str, times: torch.Tensor, spikes: dict[str, torch.Tensor],
                   static: dict[str, object]) -> torch.Tensor:
        """``target``'s value at each global step in ``times``: [len(times) * batch, ...], row = step * batch + sample.

        Neuron layers contribute theta * value of their spike once it has happened (times of ``spikes`` are
        global); static values are repeated per step.
        """
        steps = len(times)
        memo: dict[str, object] = {}

        def value(name: str):
            if name in memo:
                return memo[name]
            op = self.ops[name]
            if op.static:
                result = static[name]
                if op.batched and isinstance(result, torch.Tensor):
                    result = result.unsqueeze(0).expand(steps, *result.shape).reshape(-1, *result.shape[1:])
            elif op.kind == "neuron":
                spike_time = spikes[name]
                theta = op.module.broadcast(op.module.threshold, spike_time.dim())
                kernel = self.coding.kernels[name]
                local = spike_time - self.fire_window[name].start
                represented = (theta * decode(local, kernel.tc, kernel.td)).float()
                arrived = spike_time.unsqueeze(0) <= times.view(-1, *([1] * spike_time.dim()))
                result = torch.where(arrived, represented.unsqueeze(0), torch.zeros((), device=spike_time.device))
                result = result.reshape(-1, *spike_time.shape[1:])
            elif op.kind == "output":
                result = value(op.node.args[0].name)
            else:  # stateless ops; a max-pool gate is max pooling of what has arrived (the earliest spike)
                args = map_arg(op.node.args, lambda n: value(n.name))
                kwargs = map_arg(op.node.kwargs, lambda n: value(n.name))
                result = self._call(op, args, kwargs)
            memo[name] = result
            return result

        return value(target)

    def event_times(self, target: str, spikes: dict[str, torch.Tensor], memo: dict | None = None):
        """The global step at which each element of ``target`` changes, when every element changes at most
        once (spikes, moved or max-pooled); None when some element can change more than once (sums, averages)."""
        memo = {} if memo is None else memo
        if target in memo:
            return memo[target]
        op = self.ops[target]
        node = op.node
        result = None
        if op.kind == "neuron":
            result = spikes[target]
        elif op.kind == "gate":
            times = self.event_times(node.args[0].name, spikes, memo)
            if times is not None:
                pool = op.module.pool
                result = -F.max_pool2d(-times, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                       ceil_mode=pool.ceil_mode)
        elif op.kind == "stateless" and not op.static and (
                (node.op == "call_method" and node.target in _REARRANGING_METHODS)
                or (node.op == "call_function" and node.target in _REARRANGING_FUNCTIONS)
                or (node.op == "call_module" and isinstance(op.module, _REARRANGING_MODULES))):
            inputs = {n.name: self.event_times(n.name, spikes, memo) if not self.ops[n.name].static else None
                      for n in node.all_input_nodes}
            if all(value is not None for value in inputs.values()):
                args = map_arg(node.args, lambda n: inputs[n.name])
                kwargs = map_arg(node.kwargs, lambda n: inputs[n.name])
                result = self._call(op, args, kwargs)
        memo[target] = result
        return result

    def _call(self, op: Op, args, kwargs):
        return call_op(self.graph, op, args, kwargs)

    def _fire(self, op: Op, spikes: dict[str, torch.Tensor], static: dict[str, object]) -> tuple[torch.Tensor, int]:
        """First-spike times (global steps, inf = silent) of one neuron layer, and the most spikes any of its
        neurons emitted (the refractory block makes it at most 1; counted, not assumed)."""
        window = self.fire_window[op.name]
        changes = self.input_changes(op)
        # steps of the fire window during which the input still changes; afterwards it holds its last value
        distinct = max(1, min(window.length, changes.end - window.start))
        times = torch.arange(window.start, window.start + distinct, device=self.device)
        source = op.node.args[0].name
        current = self._values_at(source, times, spikes, static)
        current = current.view(distinct, -1, *current.shape[1:])
        neuron, kernel = op.module, self.coding.kernels[op.name]
        theta = neuron.broadcast(neuron.threshold, current.dim() - 1)
        potential = current / theta  # threshold units
        first = torch.full(potential.shape[1:], NO_SPIKE, dtype=torch.float64, device=self.device)
        silent = torch.ones(potential.shape[1:], dtype=torch.bool, device=self.device)
        emitted = torch.zeros(potential.shape[1:], dtype=torch.int16, device=self.device)
        thresholds = torch.tensor([dynamic_threshold(tau, kernel.tc, kernel.td) for tau in range(window.length)],
                                  dtype=potential.dtype, device=self.device)
        settled = distinct - 1  # from this local step on the potential no longer changes
        for tau in range(settled):  # inputs still arriving: step by step
            fires = silent & (potential[tau] >= thresholds[tau])
            first[fires] = window.start + tau
            emitted += fires
            silent &= ~fires
        # constant potential against a falling threshold: the first crossing is after the steps whose
        # threshold is still above it (the same float comparisons as stepping, counted at once)
        tail = thresholds[settled:]
        final = potential[settled].contiguous()
        above = len(tail) - torch.searchsorted(tail.flip(0).contiguous(), final, right=True)
        fires = silent & (above < len(tail))
        first = torch.where(fires, (window.start + settled + above).double(), first)
        emitted += fires
        return first, int(emitted.max()) if emitted.numel() else 0

    # ------------------------------------------------------------------ batches
    def run_batch(self, x: torch.Tensor, y: torch.Tensor | None = None, counters: "_TTFSCounters | None" = None) -> dict:
        """Simulate one batch. Returns the readout after every global step [latency, batch, classes] and
        each neuron layer's first-spike times (global steps, inf = silent)."""
        static = self._static_values(x)
        spikes: dict[str, torch.Tensor] = {}
        most = 0
        for op in self.program.ops:
            if op.kind == "neuron":
                spikes[op.name], emitted = self._fire(op, spikes, static)
                most = max(most, emitted)
        output = self.program.output
        readout_window = self.input_changes(output)
        times = torch.arange(readout_window.start - 1, readout_window.end, device=self.device)
        values = self._values_at(output.name, times, spikes, static)
        values = values.view(len(times), x.shape[0], -1)
        trace = torch.empty(self.latency, *values.shape[1:], device=self.device)
        before, changing = values[0], values[1:]
        start = readout_window.start
        trace[:start] = before
        trace[start:start + len(changing)] = changing[: self.latency - start]
        trace[start + len(changing):] = changing[-1]
        if counters is not None:
            counters.add(self, x.shape[0], spikes, static, trace, y, most)
        return {"readout": trace, "spike_times": spikes, "most_spikes_per_neuron": most}

    def simulate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                 progress: ProgressFn | None = None) -> SimulationResult:
        counters = _TTFSCounters(self)
        begin = time.perf_counter()
        with torch.no_grad():
            for x, y in batches:
                self.run_batch(x.to(self.device), y.to(self.device), counters)
                if progress is not None:
                    progress(x.shape[0])
        return counters.result(time.perf_counter() - begin)

    def neuron_active_window(self, name: str) -> Window:
        """Steps a neuron layer's membrane is busy: integrating its sources' spikes, then firing."""
        fire = self.fire_window[name]
        start = min(fire.start, self.input_changes(self.ops[name]).start)
        return Window(start, fire.end - start)


class _TTFSCounters:
    """Totals over batches: correct readouts per step, spikes and synaptic operations per global step."""

    def __init__(self, engine: TTFSEngine):
        self.engine = engine
        steps = engine.latency
        self.samples = 0
        self.correct = np.zeros(steps, dtype=np.int64)
        self.spikes = {op.name: np.zeros(steps, dtype=np.int64) for op in engine.neurons}
        self.neurons: dict[str, int] = {}
        self.most_spikes_per_neuron = 0
        self.synapses = [op for op in engine.program.ops if op.role == "synapse"]
        self.synops = {op.name: np.zeros(steps, dtype=np.float64) for op in self.synapses}
        self.fanout: dict[str, torch.Tensor] = {}
        self.input_elements: dict[str, int] = {}
        self.dense_macs: dict[str, int] = {}

    def add(self, engine: TTFSEngine, batch: int, spikes, static, readout: torch.Tensor, y, most: int) -> None:
        self.samples += batch
        if y is not None:
            self.correct += (readout.argmax(-1) == y.unsqueeze(0)).sum(1).cpu().numpy()
        for name, first in spikes.items():
            self.neurons[name] = int(first[0].numel())
            fired = first[torch.isfinite(first)].long()
            self.spikes[name] += torch.bincount(fired, minlength=engine.latency).cpu().numpy()[: engine.latency]
        self.most_spikes_per_neuron = max(self.most_spikes_per_neuron, most)
        for op in self.synapses:
            self._count(engine, op, spikes, static)

    def _count(self, engine: TTFSEngine, op: Op, spikes, static, chunk: int = 8) -> None:
        source = op.node.args[0].name
        if op.static:
            shape = static[source].shape[1:]
            self.input_elements[op.name] = int(shape.numel())
            out_shape = static[op.name].shape[1:]
            self.dense_macs[op.name] = dense_macs(op.module, out_shape)
            return
        times = engine.event_times(source, spikes)
        if isinstance(times, torch.Tensor):
            self._count_events(engine, op, times)
            return
        pooled = self._pooled_event_times(engine, engine.ops[source], spikes)
        if pooled is not None:
            self._count_events(engine, op, pooled)
            return
        window = engine.input_changes(op)
        previous = None
        for first in range(window.start - 1, window.end, chunk):
            times = torch.arange(first, min(first + chunk, window.end), device=engine.device)
            values = engine._values_at(source, times, spikes, static)
            values = values.view(len(times), -1, *values.shape[1:])
            self._describe(op, values.shape[2:], values.device)
            stacked = values if previous is None else torch.cat([previous.unsqueeze(0), values])
            offset = first if previous is None else first - 1
            changed = (stacked[1:] != stacked[:-1]).flatten(2).float()  # [steps, batch, elements]
            per_step = (changed @ self.fanout[op.name]).sum(1, dtype=torch.float64).cpu().numpy()
            steps = np.arange(offset + 1, offset + 1 + len(per_step))
            self.synops[op.name][steps] += per_step
            previous = values[-1]

    def _describe(self, op: Op, shape: torch.Size, device) -> None:
        if op.name in self.fanout:
            return
        self.fanout[op.name] = input_fanout(op.module, shape).to(device).reshape(-1)
        self.input_elements[op.name] = int(shape.numel())
        with torch.no_grad():
            out_shape = op.module(torch.zeros((1, *shape), device=device)).shape[1:]
        self.dense_macs[op.name] = dense_macs(op.module, out_shape)

    @staticmethod
    def _pooled_event_times(engine: TTFSEngine, pool_op: Op, spikes) -> torch.Tensor | None:
        """For an average pooling of spikes: each pooled element's distinct event times, [batch, ..., k*k].

        The average of positive values changes exactly when one of its inputs spikes, so the element has one
        event per distinct spike time in its window (repeats become inf). None when the pooling does not fit
        this (padding, overlapping windows, input that is not single-event).
        """
        module = pool_op.module
        if not isinstance(module, nn.AvgPool2d) or pool_op.static:
            return None
        kernel, stride = nn.modules.utils._pair(module.kernel_size), nn.modules.utils._pair(module.stride or module.kernel_size)
        if nn.modules.utils._pair(module.padding) != (0, 0) or kernel != stride or module.ceil_mode:
            return None
        times = engine.event_times(pool_op.node.args[0].name, spikes)
        if not isinstance(times, torch.Tensor) or times.dim() != 4:
            return None
        batch, channels, height, width = times.shape
        rows, cols = height // kernel[0], width // kernel[1]
        windows = times[:, :, :rows * kernel[0], :cols * kernel[1]].reshape(batch, channels, rows, kernel[0], cols, kernel[1])
        windows = windows.permute(0, 1, 2, 4, 3, 5).reshape(batch, channels, rows, cols, -1)
        ordered = windows.sort(-1).values
        repeat = torch.zeros_like(ordered, dtype=torch.bool)
        repeat[..., 1:] = ordered[..., 1:] == ordered[..., :-1]
        return torch.where(repeat, torch.full_like(ordered, NO_SPIKE), ordered)

    def _count_events(self, engine: TTFSEngine, op: Op, times: torch.Tensor) -> None:
        """Each input element changes at its event times (one, or one per trailing slot for pooled spikes):
        ops at step t = fan-out summed over the elements with an event at t."""
        per_element = times.dim() == 5  # pooled: [batch, C, H, W, slots]
        self._describe(op, times.shape[1:4] if per_element else times.shape[1:], times.device)
        flat = times.reshape(times.shape[0], -1, times.shape[-1]) if per_element else times.reshape(times.shape[0], -1, 1)
        arrived = torch.isfinite(flat)
        weights = self.fanout[op.name].double().view(1, -1, 1).expand_as(flat)[arrived]
        per_step = torch.bincount(flat[arrived].long(), weights=weights, minlength=engine.latency)
        self.synops[op.name] += per_step.cpu().numpy()[: engine.latency]

    def result(self, wall: float) -> SimulationResult:
        engine = self.engine
        neuron_layers = []
        for op in engine.neurons:
            active = engine.neuron_active_window(op.name)
            neuron_layers.append(NeuronLayerStats(
                name=op.name, kind=NEURON_KIND, neurons=self.neurons.get(op.name, 0),
                threshold_mean=float(op.module.threshold.float().mean()), time_steps=engine.latency,
                spikes_per_step=self.spikes[op.name], active_window=(active.start, active.end)))
        synaptic_layers = []
        for op in self.synapses:
            if op.name not in self.dense_macs:
                continue
            changes = engine.input_changes(op)
            synaptic_layers.append(SynapticLayerStats(
                name=op.name, kind="linear" if isinstance(op.module, torch.nn.Linear) else "conv",
                spiking_input=not op.static, macs_per_sample_dense=self.dense_macs[op.name],
                input_elements=self.input_elements[op.name], time_steps=engine.latency,
                ops_per_step=self.synops[op.name].round().astype(np.int64),
                active_window=None if op.static else (changes.start, changes.end)))
        return SimulationResult(samples=self.samples, time_steps=engine.latency, correct_per_step=self.correct,
                                neuron_layers=neuron_layers, synaptic_layers=synaptic_layers, wall_time_s=wall,
                                most_spikes_per_neuron=self.most_spikes_per_neuron)
