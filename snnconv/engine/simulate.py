"""The time engine: chunked streaming simulation of a converted network (ALGORITHMS.md section 6.1).

Time is cut into chunks of ``chunk_steps`` steps. Per batch, the static prefix (everything before the
first neuron) is computed once; in each chunk, stateless layers run once on the chunk's steps folded
into the batch dimension (row index = step * batch + sample), and only neurons and max-pool gates
loop over the steps. Membrane potentials live across chunks; activations live for one chunk. Memory
is therefore bounded by the chunk, not by T.

The readout accumulates the output layer over steps (the membrane of a non-spiking output layer);
the prediction after step t is the argmax of that sum, recorded for every t in the same pass.

Early exit: an :class:`ExitPolicy` is asked at every chunk boundary which samples may stop. Those
samples leave the batch: their rows are dropped from every state tensor and cached value, so later
chunks cost less.

Prefix masks (DTS): a neuron layer named in ``TimePlan.prefix_steps`` runs only the first T_l steps of its
window and emits zeros after, without re-timing. Every op whose temporal inputs are all silent from some
step on computes that constant tail once per chunk instead of once per step, so the skipped steps cost
no neuron updates and no synaptic operations.
"""
from __future__ import annotations

import abc
import operator
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from torch.fx.node import map_arg

from ..config import check_timing
from ..errors import ConfigError
from ..neurons import (crossing_fraction, if_step_, if_step_surrogate, if_step_timed_, maxpool_gate_step,
                       signed_if_step_, signed_if_step_surrogate)
from ..results import NeuronLayerStats, SimulationResult, SynapticLayerStats
from .allocator import keep_large_buffers
from .fanout import dense_macs, input_fanout
from .kernels import fused_available, gate_chunk_, gate_fusable, if_chunk_, warm_up
from .program import Op, Program, call_op, compile_program, fetch_attr
from .replay import Resume, TraceRecorder, frontier


class ExitPolicy(abc.ABC):
    """Decides, at every chunk boundary, which of the samples still running stop there.

    ``chunk_steps`` is the decision interval the policy was chosen for (1 = after every readout step);
    :func:`snnconv.evaluate` simulates with it. None leaves the caller's chunk size.
    """

    chunk_steps: int | None = None

    def start_batch(self, x: torch.Tensor) -> None:
        """Called with each batch's input before its first step (a policy network decides here)."""

    def check_time_steps(self, time_steps: int) -> None:
        """Raise ConfigError when the policy cannot decide for a readout of ``time_steps`` steps."""

    def describe(self) -> dict:
        """Plain data that rebuilds the policy (with :meth:`state_dict`), stored in artifact manifests."""
        raise ConfigError(f"{type(self).__name__} cannot be saved in an artifact; only snnconv's exit policies can.")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors the policy needs besides :meth:`describe` (a policy network's weights)."""
        return {}

    def cost_layers(self) -> list[SynapticLayerStats]:
        """The policy's own weighted layers, once per sample (a policy network's MACs), for the energy table."""
        return []

    @abc.abstractmethod
    def should_exit(self, accumulated_output: torch.Tensor, step: int, rows: torch.Tensor) -> torch.Tensor:
        """Bool mask [active samples]: which samples stop after ``step`` readout steps.

        ``accumulated_output`` [active, classes] is their output summed over steps 1..step; ``rows`` [active]
        their index in the batch given to :meth:`start_batch`.
        """


@dataclass(frozen=True)
class TimePlan:
    """How many steps to simulate and how they are cut into chunks.

    ``time_steps`` is the readout window: the output is accumulated over that many steps. ``layer_steps``
    gives neuron layers their own windows T_l (TEAS); layers not named run ``time_steps``. Stateless ops
    run in the window of the layer they feed, and a signal that crosses into a different window is
    re-timed (see :func:`retime`). Chunk k advances every op to the same fraction of its window,
    ``ceil((k + 1) * chunk_steps * T_op / T_max)`` steps, as far as its inputs allow.

    ``prefix_steps`` (DTS) names neuron layers that run only the first T_l steps of their window and emit
    zeros afterwards; their consumers keep their own windows (no re-timing). T_l = 0 silences a layer.

    ``timing`` (one of ``snnconv.config.SPIKE_TIMINGS``) is how an IF layer's spikes are re-timed into a
    window of another length: ``linear`` maps step t to floor(t W / S); ``substep`` and ``substep-vfire`` map
    the sub-step crossing time of each spike (see :func:`retime_substep`). Every other crossing signal (a
    max-pool gate's output, pooled or added spikes, a current) is re-timed linearly; :meth:`Engine.crossings`
    lists which map each crossing gets.
    """

    time_steps: int
    chunk_steps: int = 8
    layer_steps: tuple[tuple[str, int], ...] = ()
    prefix_steps: tuple[tuple[str, int], ...] = ()
    timing: str = "linear"

    def __post_init__(self):
        if self.time_steps <= 0:
            raise ConfigError(f"Time steps T must be positive, got {self.time_steps}.")
        if self.chunk_steps <= 0:
            raise ConfigError(f"--chunk-steps must be positive, got {self.chunk_steps}.")
        for name, steps in self.layer_steps:
            if int(steps) <= 0:
                raise ConfigError(f"Layer '{name}' has T_l = {steps}; per-layer time steps must be positive.")
        for name, steps in self.prefix_steps:
            if int(steps) < 0:
                raise ConfigError(f"Layer '{name}' has a prefix mask of {steps} steps; it must be 0 or more.")
        check_timing(self.timing)

    @classmethod
    def per_layer(cls, time_steps: int, layer_steps: dict[str, int] | None, chunk_steps: int = 8,
                  prefix_steps: dict[str, int] | None = None, timing: str = "linear") -> "TimePlan":
        return cls(time_steps, chunk_steps, tuple(sorted((k, int(v)) for k, v in (layer_steps or {}).items())),
                   tuple(sorted((k, int(v)) for k, v in (prefix_steps or {}).items())), timing)

    @property
    def max_steps(self) -> int:
        return max([self.time_steps] + [steps for _, steps in self.layer_steps])

    def chunk_count(self) -> int:
        return -(-self.max_steps // self.chunk_steps)

    def target(self, chunk: int, window: int) -> int:
        """Steps an op with ``window`` steps should have completed by the end of ``chunk``."""
        return min(window, -(-(chunk + 1) * self.chunk_steps * window // self.max_steps))


def retime(block: torch.Tensor, first: int, source_steps: int, target_steps: int, start: int, count: int) -> torch.Tensor:
    """Re-time a spike train (or current) from a window of ``source_steps`` into one of ``target_steps``.

    ``block`` [m, ...] holds source steps first..first+m-1; returns target steps start..start+count-1.
    Source step t lands on target step floor(t * target / source); values landing on one step are summed
    (a graded count) and scaled by target / source, so the charge a layer integrates over its own window
    equals the rate code of the source (ALGORITHMS.md section 6.2).
    """
    index = torch.arange(first, first + block.shape[0], device=block.device) * target_steps // source_steps - start
    out = torch.zeros((count, *block.shape[1:]), dtype=block.dtype, device=block.device)
    out.index_add_(0, index, block)
    return out.mul_(target_steps / source_steps)


# timing -> the crossing-fraction reading of snnconv.neurons.crossing_fraction (None: the linear map)
CROSSING_READING = {"linear": None, "substep": "interpolate", "substep-vfire": "vfire"}


def retime_substep(spikes: torch.Tensor, fraction: torch.Tensor, first: int, source_steps: int, target_steps: int,
                   start: int, count: int) -> torch.Tensor:
    """Re-time an IF layer's spikes by their sub-step crossing times (TEAS slides: x_T = x + f).

    ``spikes`` [m, ...] holds source steps first..first+m-1 and ``fraction`` [m, ...] each neuron's crossing
    fraction f in [0, 1] at that step. A spike of step x lands on target step floor((x + f) W / S), clipped
    to W - 1; returns target steps start..start+count-1, values landing on one step summed and scaled by
    W / S as in :func:`retime`, so the charge over the window is the same rate code. Spikes landing outside
    start..start+count-1 are left out: the caller passes every source step that can land inside (one more
    on each side than the linear map needs, since x + f reaches up to x + 1).
    """
    shape = (spikes.shape[0],) + (1,) * (spikes.dim() - 1)
    steps = torch.arange(first, first + spikes.shape[0], dtype=torch.float64, device=spikes.device).view(shape)
    landing = torch.floor((steps + fraction.to(torch.float64)) * target_steps / source_steps)
    landing = landing.clamp_(max=target_steps - 1).to(torch.int64) - start
    inside = (landing >= 0) & (landing < count)
    values = torch.where(inside, spikes, torch.zeros_like(spikes))
    out = spikes.new_zeros((count, *spikes.shape[1:])).scatter_add(0, landing.clamp_(0, count - 1), values)
    return out.mul(target_steps / source_steps)


@dataclass(frozen=True)
class Crossing:
    """A signal crossing from ``source`` (window ``source_steps``) into ``consumer`` (``target_steps``).

    ``signal``: ``spikes`` (an IF layer's output), ``gate`` (a max-pool gate's output) or ``computed`` (a
    stateless op's output: pooled or added spikes, a current). ``timing``: the map it gets, the plan's
    timing for IF spikes and ``linear`` for everything else.
    """

    source: str
    consumer: str
    source_steps: int
    target_steps: int
    signal: str
    timing: str


ProgressFn = Callable[[int], None]  # called with the number of samples finished
InputProbe = Callable[[str, int, torch.Tensor], None]  # (neuron layer, first step, input current)


class _Counters:
    """Per-layer statistics accumulated over batches, kept on the simulation device."""

    def __init__(self, program: Program, windows: dict[str, int], readout_steps: int, device: torch.device,
                 live: dict[str, int] | None = None):
        self.windows = windows
        self.live = live or windows  # steps each op really runs (DTS prefix masks), see Engine.live_steps
        self.spikes = {op.name: torch.zeros(windows[op.name], dtype=torch.float64, device=device)
                       for op in program.neuron_ops}
        self.synops = {op.name: torch.zeros(windows[op.name], dtype=torch.float64, device=device)
                       for op in program.synapse_ops if not op.static}
        self.correct = torch.zeros(readout_steps, dtype=torch.int64, device=device)
        self.neurons: dict[str, int] = {}
        self.fanout: dict[str, torch.Tensor] = {}
        self.input_elements: dict[str, int] = {}
        self.dense_macs: dict[str, int] = {}
        # this chunk's spikes per step and neuron position, summed over rows, of the layers whose output a
        # weighted layer reads unchanged: name -> (first step, [steps, neurons] float64)
        self.positions: dict[str, tuple[int, torch.Tensor]] = {}


class Engine:
    """Runs one converted network; reusable across batches and evaluation sets."""

    def __init__(self, graph: torch.fx.GraphModule, device: torch.device | str = "cpu",
                 surrogate_width: float | None = None, time_masks: Mapping[str, Callable[[], torch.Tensor]] | None = None):
        """``surrogate_width``: run neurons differentiably (exact spikes, triangle surrogate gradient of that
        width in thresholds) so a loss on the outputs can be backpropagated through time; None for inference.
        ``time_masks``: neuron layer name -> a callable returning its mask TM [window] (DTS training); the
        layer's output at step t is multiplied by TM[t], so gradients reach the mask."""
        self.device = torch.device(device)
        if self.device.type == "cpu":
            keep_large_buffers()
            warm_up(signed=any(getattr(m, "signed", False) for m in graph.modules()))
        self.surrogate_width = surrogate_width
        self.time_masks = dict(time_masks or {})
        self._live: dict[TimePlan, dict[str, int]] = {}
        self._schedules: dict[TimePlan, list[dict[str, tuple[int, int]]]] = {}
        self.graph = graph.to(self.device).eval()
        self.program = compile_program(self.graph)
        self._ops = {op.name: op for op in self.program.ops}
        self._op_index = {op.name: index for index, op in enumerate(self.program.ops)}
        self._batched_static = {op.name for op in self.program.ops if op.static and op.batched}
        # weighted layers that read a neuron layer's output unchanged: their synaptic ops come from that layer's
        # spike counts per position (one reduction over rows) instead of a nonzero pass over their whole input
        neurons = {op.name for op in self.program.neuron_ops}
        self._spike_fed = {op.name: op.node.args[0].name for op in self.program.synapse_ops
                           if not op.static and op.node.args and isinstance(op.node.args[0], torch.fx.Node)
                           and op.node.args[0].name in neurons}
        self._spike_sources = set(self._spike_fed.values())
        # Buffers a reader may overwrite (docs/design.md, "Spikes over their input current"): a temporal op's output
        # that one op alone reads belongs to that reader once the op has run. An IF layer that owns its current
        # writes its spikes over it; a residual add that owns its first operand adds the second into it.
        self._sole_reader = {op.name: next(iter(op.node.users)).name for op in self.program.ops
                             if not op.static and len(op.node.users) == 1}
        self._in_place_adds = {op.name for op in self.program.ops
                               if op.kind == "stateless" and op.node.op == "call_function"
                               and op.node.target in (operator.add, torch.add) and not op.node.kwargs
                               and len(op.node.args) == 2 and isinstance(op.node.args[0], torch.fx.Node)
                               and self._sole_reader.get(op.node.args[0].name) == op.name}

    def windows(self, plan: TimePlan) -> dict[str, int]:
        """The window (steps) of every temporal op: neurons their T_l, other ops that of the layer they feed."""
        layer_steps = dict(plan.layer_steps)
        neuron_names = {op.name for op in self.program.neuron_ops if op.kind == "neuron"}
        unknown = sorted(set(layer_steps) - neuron_names)
        if unknown:
            raise ConfigError(f"Per-layer time steps name {', '.join(repr(n) for n in unknown)}, which "
                              f"{'is not a neuron layer' if len(unknown) == 1 else 'are not neuron layers'} of this "
                              f"network; its neuron layers are {', '.join(sorted(neuron_names))}.")
        windows: dict[str, int] = {}
        for op in reversed(self.program.ops):
            if op.static:
                continue
            if op.kind == "output":
                windows[op.name] = plan.time_steps
            elif op.kind == "neuron":
                windows[op.name] = int(layer_steps.get(op.name, plan.time_steps))
            else:
                consumers = [windows[user.name] for user in op.node.users if user.name in windows]
                windows[op.name] = max(consumers) if consumers else plan.time_steps
        for name, steps in plan.prefix_steps:
            if name not in neuron_names:
                raise ConfigError(f"A time-step mask names '{name}', which is not a neuron layer of this network; "
                                  f"its neuron layers are {', '.join(sorted(neuron_names))}.")
            if steps > windows[name]:
                raise ConfigError(f"Layer '{name}' is masked to {steps} steps, more than its window of "
                                  f"{windows[name]} steps.")
        for name in self.time_masks:
            if name not in neuron_names:
                raise ConfigError(f"A time-step mask names '{name}', which is not a neuron layer of this network.")
        return windows

    def live_steps(self, plan: TimePlan, windows: dict[str, int] | None = None) -> dict[str, int]:
        """Per temporal op, the leading steps of its window after which its output no longer changes.

        A prefix-masked neuron is live for its T_l steps and emits zeros after. A stateless op is live as
        long as any temporal input is; past that, every input is constant, so its output is too and is
        computed once. A max-pool gate fed only by neurons is live as long as they are (zeros in, zeros
        out). Unmasked neurons, other gates, and every op across a change of window (TEAS re-timing does not
        keep a constant constant) count as live for the whole window.
        """
        if plan in self._live:
            return self._live[plan]
        windows = windows if windows is not None else self.windows(plan)
        prefix = dict(plan.prefix_steps)
        kinds = {op.name: op.kind for op in self.program.ops}
        live: dict[str, int] = {}
        for op in self.program.ops:
            if op.static:
                continue
            window = windows[op.name]
            if op.kind == "neuron":
                live[op.name] = min(window, prefix.get(op.name, window))
            elif op.kind == "stateless":
                sources = self._temporal_sources(op, windows)
                live[op.name] = max((live[s] if windows[s] == window else window for s in sources), default=window)
            elif op.kind == "gate" and all(kinds[s] == "neuron" and windows[s] == window
                                           for s in self._temporal_sources(op, windows)):
                # a max-pool gate fed zeros keeps its maximum and emits zeros
                live[op.name] = max(live[s] for s in self._temporal_sources(op, windows))
            else:
                live[op.name] = window
        self._live[plan] = live
        return live

    def _temporal_sources(self, op: Op, windows: dict[str, int]) -> list[str]:
        return [n.name for n in op.node.all_input_nodes if n.name in windows]

    def crossings(self, plan: TimePlan, windows: dict[str, int] | None = None) -> list[Crossing]:
        """Every edge between ops of different windows, with the re-timing it gets under ``plan.timing``."""
        windows = windows if windows is not None else self.windows(plan)
        kinds = {op.name: op.kind for op in self.program.ops}
        found = []
        for op in self.program.ops:
            if op.static:
                continue
            for source in self._temporal_sources(op, windows):
                if windows[source] == windows[op.name]:
                    continue
                signal = {"neuron": "spikes", "gate": "gate"}.get(kinds[source], "computed")
                found.append(Crossing(source, op.name, windows[source], windows[op.name], signal,
                                      plan.timing if signal == "spikes" else "linear"))
        return found

    def schedule(self, plan: TimePlan, windows: dict[str, int] | None = None) -> list[dict[str, tuple[int, int]]]:
        """Per chunk, the steps [start, goal) each temporal op runs: as far as ``plan.target`` asks and its
        inputs allow (target step j integrates source steps ceil(j S / W) .. ceil((j + 1) S / W) - 1).
        It depends only on the plan and the graph, never on the data, so it is computed once per plan."""
        if plan in self._schedules:
            return self._schedules[plan]
        windows = windows if windows is not None else self.windows(plan)
        done = {name: 0 for name in windows}
        chunks = []
        for chunk_index in range(plan.chunk_count()):
            ranges = {}
            for op in self.program.ops:
                if op.static:
                    continue
                window = windows[op.name]
                goal = plan.target(chunk_index, window)
                for source in self._temporal_sources(op, windows):
                    goal = min(goal, done[source] * window // windows[source])
                if goal > done[op.name]:
                    ranges[op.name] = (done[op.name], goal)
                    done[op.name] = goal
            chunks.append(ranges)
        self._schedules[plan] = chunks
        return chunks

    def decision_steps(self, plan: TimePlan) -> list[int]:
        """Readout steps after which an exit policy is asked: the ends of the output's blocks, before T."""
        output = self.program.output.name
        ends = [ranges[output][1] for ranges in self.schedule(plan) if output in ranges]
        return [t for t in ends if t < plan.time_steps]

    # ------------------------------------------------------------------ evaluation
    def simulate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], plan: TimePlan, *,
                 exit_policy: ExitPolicy | None = None, progress: ProgressFn | None = None,
                 on_batch: Callable[[dict], None] | None = None, trace_output: bool = False) -> SimulationResult:
        """Simulate every batch; ``on_batch`` receives each batch's outcome (see :meth:`run_batch`)."""
        windows = self.windows(plan)
        counters = _Counters(self.program, windows, plan.time_steps, self.device, self.live_steps(plan, windows))
        exit_steps, first_correct, correct_by_sample, exit_correct = [], [], [], 0
        samples = 0
        start = time.perf_counter()
        with torch.no_grad():
            for x, y in batches:
                outcome = self.run_batch(x.to(self.device), y.to(self.device), plan, counters, exit_policy,
                                         trace_output=trace_output)
                samples += x.shape[0]
                exit_steps.append(outcome["exit_step"])
                first_correct.append(outcome["first_correct"])
                correct_by_sample.append(outcome["correct_by_step"])
                exit_correct += outcome["exit_correct"]
                if on_batch is not None:
                    on_batch(outcome)
                if progress is not None:
                    progress(x.shape[0])
        wall = time.perf_counter() - start
        result = self._result(counters, plan, samples, wall, exit_policy is not None,
                              np.concatenate(exit_steps) if exit_steps else np.zeros(0, dtype=np.int64),
                              np.concatenate(first_correct) if first_correct else np.zeros(0, dtype=np.int64),
                              exit_correct, np.concatenate(correct_by_sample) if correct_by_sample else None)
        if exit_policy is not None:
            result.synaptic_layers += exit_policy.cost_layers()
        return result

    def _result(self, counters: _Counters, plan: TimePlan, samples: int, wall: float, exited: bool,
                exit_steps: np.ndarray, first_correct: np.ndarray, exit_correct: int,
                correct_by_sample: np.ndarray | None) -> SimulationResult:
        neuron_layers = []
        for op in self.program.neuron_ops:
            module = op.module
            threshold = float(module.threshold.float().mean()) if op.kind == "neuron" else float("nan")
            neuron_layers.append(NeuronLayerStats(
                name=op.name, kind=module.kind, neurons=counters.neurons.get(op.name, 0), threshold_mean=threshold,
                time_steps=counters.windows[op.name], spikes_per_step=counters.spikes[op.name].cpu().numpy().round().astype(np.int64),
                active_steps=_active(counters, op.name)))
        synaptic_layers = []
        for op in self.program.ops:
            if op.role != "synapse" or op.name not in counters.dense_macs:
                continue
            window = counters.windows.get(op.name, plan.time_steps)
            ops_per_step = counters.synops[op.name].cpu().numpy() if op.name in counters.synops else np.zeros(window)
            synaptic_layers.append(SynapticLayerStats(
                name=op.name, kind="linear" if isinstance(op.module, torch.nn.Linear) else "conv",
                spiking_input=not op.static, macs_per_sample_dense=counters.dense_macs[op.name],
                input_elements=counters.input_elements[op.name], time_steps=window,
                ops_per_step=ops_per_step.round().astype(np.int64), active_steps=_active(counters, op.name)))
        return SimulationResult(
            samples=samples, time_steps=plan.time_steps, correct_per_step=counters.correct.cpu().numpy(),
            neuron_layers=neuron_layers, synaptic_layers=synaptic_layers, wall_time_s=wall,
            exit_steps=exit_steps if exited else None, exit_correct=exit_correct if exited else None,
            oracle_exit_steps=first_correct, correct_by_sample=correct_by_sample)

    # ------------------------------------------------------------------ one batch
    def run_batch(self, x: torch.Tensor, y: torch.Tensor | None, plan: TimePlan, counters: _Counters | None = None,
                  exit_policy: ExitPolicy | None = None, record: Iterable[str] = (), until: str | None = None,
                  trace_output: bool = False, input_probe: InputProbe | None = None, capture: Iterable[str] = (),
                  resume: Resume | None = None) -> dict:
        """Simulate one batch: every layer over its window, the readout over ``plan.time_steps`` steps.

        ``record`` names neuron layers whose output is summed over all steps and returned (per sample),
        for calibration; ``until`` stops every step after that layer (no readout), so calibrating an early
        layer does not pay for the rest of the network. ``trace_output`` keeps the running sum of the output
        after every readout step (``output_trace`` [T, batch, classes]; samples that exit keep their last
        value). Returns a dict with the summed output, exit steps and recorded sums.
        ``input_probe(layer, first_step, current)`` sees every neuron layer's input current [steps, rows, ...]
        as the layer runs (a constant current as an expanded view).
        ``capture`` names temporal ops whose whole output is returned as ``traces`` (name -> :class:`Trace`);
        ``resume`` starts the run after its op, replaying its traces (engine/replay.py). Both are for
        calibration: neither goes with counters or an exit policy.
        """
        capture = set(capture)
        skip = self._check_replay(capture, resume, until, counters is not None or exit_policy is not None)
        batch = x.shape[0]
        labels = y
        steps = plan.time_steps
        windows = counters.windows if counters is not None else self.windows(plan)
        captured = {name: TraceRecorder(self._ops[name].kind == "neuron" and name not in self.time_masks,
                                        windows[name]) for name in capture if self._op_index[name] > skip}
        live = counters.live if counters is not None else self.live_steps(plan, windows)
        record = set(record)
        static: dict[str, object] = {}
        static_owned = False  # whether the batched static values are copies made by this run (see exits below)
        state: dict[str, torch.Tensor] = {}
        recorded: dict[str, torch.Tensor] = {}
        chunks = self.schedule(plan, windows)
        # steps a producer made that its consumer has not used yet: (consumer, producer) -> (first step, [m, rows, ...])
        pending: dict[tuple[str, str], tuple[int, torch.Tensor]] = {}
        # sub-step timing: the IF layers whose spikes cross into another window carry their crossing fractions,
        # kept beside the spikes as a last axis in those crossings' pending blocks ([m, rows, ..., 2])
        reading = CROSSING_READING[plan.timing]
        timed = {(c.consumer, c.source) for c in self.crossings(plan, windows) if c.timing != "linear"}
        timed_sources = {source for _, source in timed}
        accumulated = None
        rows = torch.arange(batch, device=self.device)  # original index of each active row
        exit_step = np.full(batch, steps, dtype=np.int64)
        exit_pred = torch.zeros(batch, dtype=torch.int64, device=self.device)
        first_correct = torch.full((batch,), steps, dtype=torch.int64, device=self.device)
        # [batch, T]: is sample i right from its output summed over steps 1..t (an exited sample keeps its answer)
        correct_by_step = torch.zeros((batch, steps), dtype=torch.bool, device=self.device) if y is not None else None
        trace = None
        if exit_policy is not None:
            exit_policy.start_batch(x)

        for chunk_index in range(plan.chunk_count()):
            active = rows.shape[0]
            if counters is not None:
                counters.positions.clear()
            env: dict[str, tuple[int, torch.Tensor] | None] = {}  # op -> (first step, [n, rows, ...]) of this chunk
            fractions: dict[str, torch.Tensor] = {}  # timed IF layer -> crossing fractions of its env block
            reusable: set[str] = set()  # ops whose output of this chunk its sole reader may overwrite
            for index, op in enumerate(self.program.ops):
                if op.static:
                    if chunk_index == 0:
                        static[op.name] = self._eval_static(op, static, x)
                        if op.role == "synapse" and counters is not None and op.name not in counters.dense_macs:
                            self._describe_static_synapse(op, static, counters)
                    continue
                if index <= skip:  # before the resume point: replayed if a later op reads it, else not needed
                    trace = resume.traces.get(op.name)
                    if trace is not None and op.name in chunks[chunk_index]:
                        start, goal = chunks[chunk_index][op.name]
                        env[op.name] = (start, trace.block(start, goal))
                        if trace.fractions is not None:
                            fractions[op.name] = trace.fractions[start:goal]
                    continue
                sources = self._temporal_sources(op, windows)
                for source in sources:
                    produced = env.get(source)
                    if (op.name, source) in timed and produced is not None:
                        produced = (produced[0], torch.stack([produced[1], fractions[source]], -1))
                    _absorb(pending, (op.name, source), produced)
                if op.name in chunks[chunk_index]:
                    window = windows[op.name]
                    start, goal = chunks[chunk_index][op.name]
                    count = goal - start
                    inputs = {source: self._take(pending, op.name, source, windows[source], window, start, count,
                                                 substep=(op.name, source) in timed)
                              for source in sources}
                    value = self._eval_temporal(op, inputs, static, state, count, active, start, counters,
                                                record, recorded, live[op.name], input_probe,
                                                fractions if op.name in timed_sources else None, reading,
                                                reusable)
                    env[op.name] = (start, value)
                    if op.name in self._sole_reader and op.name not in captured and input_probe is None \
                            and _owned(value, {**{n.name: static.get(n.name) for n in op.node.all_input_nodes},
                                               **inputs}, reusable):
                        reusable.add(op.name)
                    if op.name in captured:
                        captured[op.name].add(start, value, fractions.get(op.name),
                                              op.module if op.kind == "neuron" else None)
                if op.name == until:
                    break
                for name in op.release:
                    env.pop(name, None)
                    fractions.pop(name, None)
            if until is not None:
                continue
            produced = env.get(self.program.output.name)
            if produced is None:
                continue
            t0, out = produced
            t1 = t0 + out.shape[0]
            running = torch.cumsum(out, dim=0)
            if accumulated is not None:
                running = running + accumulated
            accumulated = running[-1]
            if trace_output:
                if trace is None:
                    trace = torch.zeros((steps, batch, out.shape[-1]), dtype=out.dtype, device=self.device)
                trace[t0:t1, rows] = running
            if y is not None:
                hits = running.argmax(-1) == y.unsqueeze(0)  # [steps, active]
                correct_by_step[rows, t0:t1] = hits.T
                if counters is not None:
                    counters.correct[t0:t1] += hits.sum(1)
                step_index = torch.arange(t0 + 1, t1 + 1, device=self.device).unsqueeze(1).expand_as(hits)
                first = torch.where(hits, step_index, torch.full_like(step_index, steps)).min(0).values
                first_correct[rows] = torch.minimum(first_correct[rows], first)
            if exit_policy is not None and t1 < steps:
                leaving = exit_policy.should_exit(accumulated, t1, rows).to(self.device)
                if leaving.any():
                    gone = rows[leaving]
                    exit_step[gone.cpu().numpy()] = t1
                    if trace is not None:  # an exited sample keeps its last running output
                        trace[t1:, gone] = accumulated[leaving]
                    exit_pred[gone] = accumulated[leaving].argmax(-1)
                    if y is not None:  # an exited sample keeps its answer for the remaining steps of the curve
                        kept = accumulated[leaving].argmax(-1) == y[leaving]
                        correct_by_step[gone, t1:] = kept.unsqueeze(1)
                        if counters is not None:
                            counters.correct[t1:] += kept.sum()
                    order, moved_to, moved_from = _rows_after_exit(leaving)
                    rows, accumulated = rows[order], accumulated[order]
                    y = y[order] if y is not None else None
                    batched = {k: v for k, v in static.items() if k in self._batched_static}
                    # the first gather copies them (the input may be a view of the caller's data); those copies
                    # are the engine's own, so later exits can move their rows in place
                    static.update(_drop_rows_in_place(batched, order, moved_to, moved_from) if static_owned else
                                  {k: v.index_select(0, order) for k, v in batched.items()})
                    static_owned = True
                    state = _drop_rows_in_place(state, order, moved_to, moved_from)
                    recorded = {k: v.index_select(0, order) for k, v in recorded.items()}
                    pending = {k: (offset, block.index_select(1, order) if isinstance(block, torch.Tensor) else block)
                               for k, (offset, block) in pending.items()}
                    if rows.numel() == 0:
                        break
        if rows.numel() and accumulated is not None:
            exit_pred[rows] = accumulated.argmax(-1)
            if exit_policy is not None:  # exits reorder the rows (_rows_after_exit): back to the input's order
                back = torch.argsort(rows)
                accumulated = accumulated[back]
                recorded = {k: v[back] for k, v in recorded.items()}
        exit_correct = int((exit_pred == labels).sum()) if labels is not None else 0
        traces = {name: resume.traces[name] for name in capture - set(captured)}
        traces.update({name: recorder.finish() for name, recorder in captured.items()})
        return {"exit_step": exit_step, "first_correct": first_correct.cpu().numpy(), "exit_correct": exit_correct,
                "correct_by_step": correct_by_step.cpu().numpy() if correct_by_step is not None else None,
                "predictions": exit_pred, "recorded": recorded, "accumulated": accumulated, "output_trace": trace,
                "traces": traces}

    def resume_after(self, x: torch.Tensor, plan: TimePlan, after: str, resume: Resume | None = None,
                     keep: Iterable[str] = (), record: Iterable[str] = (), until: str | None = None
                     ) -> tuple[Resume, dict[str, torch.Tensor]]:
        """Run ``x`` (from ``resume``, if given) as far as ``until`` (default ``after``) and return the point
        to resume after op ``after`` (what later ops read, and the ops of ``keep`` before it) with the
        ``record`` sums of the run."""
        names = frontier(self.program, after, set(keep))
        with torch.no_grad():
            outcome = self.run_batch(x, None, plan, record=record, until=until or after, capture=names,
                                     resume=resume)
        return Resume(after, outcome["traces"]), outcome["recorded"]

    def _check_replay(self, capture: set[str], resume: Resume | None, until: str | None, counting: bool) -> int:
        """Validate ``capture`` / ``resume`` for :meth:`run_batch`; the program index of the resume point (-1)."""
        if not capture and resume is None:
            return -1
        if counting:
            raise ValueError("run_batch: capture and resume are for calibration runs, without counters or exits")
        unknown = sorted(name for name in capture | ({resume.after} if resume else set())
                         if name not in self._op_index or self._ops[name].static)
        if unknown:
            raise ValueError(f"run_batch: no temporal op named {', '.join(map(repr, unknown))}")
        skip = self._op_index[resume.after] if resume is not None else -1
        last = self._op_index[until] if until is not None else len(self.program.ops)
        if until is not None and last <= skip:
            raise ValueError(f"run_batch: stops at {until!r}, before the resume point {resume.after!r}")
        late = sorted(name for name in capture if self._op_index[name] > last)
        if late:
            raise ValueError(f"run_batch: cannot capture {', '.join(map(repr, late))} in a run that stops at {until!r}")
        if resume is not None:
            missing = [name for name in frontier(self.program, resume.after) if name not in resume.traces]
            stale = [name for name in capture if self._op_index[name] <= skip and name not in resume.traces]
            if missing or stale:
                raise ValueError(f"run_batch: resuming after {resume.after!r} needs the traces of "
                                 f"{', '.join(map(repr, missing + stale))}")
        return skip

    @staticmethod
    def _take(pending: dict, consumer: str, source: str, source_window: int, window: int, start: int,
              count: int, substep: bool = False) -> torch.Tensor:
        """The source's steps for the consumer's steps start..start+count-1, re-timed when the windows differ.

        ``substep``: the block carries crossing fractions on a last axis (see :func:`retime_substep`)."""
        first, block = pending.pop((consumer, source))
        if not isinstance(block, torch.Tensor):
            return block
        if source_window == window:
            lo, hi = start, start + count
            keep = hi
        else:  # target step j integrates source steps ceil(j*S/W) .. ceil((j+1)*S/W) - 1
            lo, hi = -(-start * source_window // window), -(-(start + count) * source_window // window)
            keep = hi
            if substep:  # x + f reaches up to x + 1: step lo - 1 may land here, step hi - 1 after this block
                lo, keep = max(first, lo - 1), hi - 1
        used = block[lo - first:hi - first]
        # kept even when empty: an up-sampled consumer can run steps that need no new source step (an empty
        # source range), in a chunk where the source produced nothing. A copy, not a view: a view of the
        # rest would keep the whole chunk's buffer alive until the next chunk, for every edge of the graph
        rest = block[keep - first:]
        pending[(consumer, source)] = (keep, rest.clone() if rest.shape[0] < block.shape[0] else rest)
        if source_window == window:
            return used
        if substep:
            return retime_substep(used[..., 0], used[..., 1], lo, source_window, window, start, count)
        return retime(used, lo, source_window, window, start, count)

    # ------------------------------------------------------------------ ops
    def _eval_static(self, op: Op, static: dict, x: torch.Tensor):
        node = op.node
        if op.kind == "input":
            return x
        if op.kind == "constant":
            return fetch_attr(self.graph, node.target)
        args = map_arg(node.args, lambda n: static[n.name])
        kwargs = map_arg(node.kwargs, lambda n: static[n.name])
        return self._call(op, args, kwargs)

    def _eval_temporal(self, op: Op, inputs: dict[str, torch.Tensor], static: dict, state: dict, c: int,
                       active: int, t0: int, counters: _Counters | None, record: set, recorded: dict,
                       live: int | None = None, probe: InputProbe | None = None, fractions: dict | None = None,
                       reading: str | None = None, reusable: set[str] = frozenset()) -> torch.Tensor:
        """Run one temporal op on ``c`` steps; ``inputs`` holds its temporal inputs as [c, rows, ...].

        ``live``: steps of the window after which the op's output is constant (see :meth:`live_steps`).
        ``fractions``: given for an IF layer whose spikes are re-timed by sub-step times; its crossing
        fractions [c, rows, ...] (``reading`` of :func:`snnconv.neurons.crossing_fraction`) are stored there.
        ``reusable``: ops whose output in ``inputs`` belongs to this op alone (it may overwrite it)."""
        node = op.node
        if op.kind == "stateless" and live is not None and t0 + c > live:
            return self._eval_silent_tail(op, inputs, static, state, c, active, t0, counters, record, recorded,
                                          max(0, live - t0))

        def folded(n):
            if n.name in inputs:
                value = inputs[n.name]
                if not isinstance(value, torch.Tensor):
                    return value
                return value.reshape(c * value.shape[1], *value.shape[2:])
            return _temporal(static, n.name, c)

        if op.kind == "output":
            (source,) = inputs.values()
            return source
        if op.kind == "neuron":
            source = node.args[0]
            current = inputs[source.name] if source.name in inputs else static[source.name]
            if probe is not None:
                probe(op.name, t0, current if source.name in inputs else current.unsqueeze(0).expand(c, *current.shape))
            return self._run_neuron(op, current, source.name in inputs, state, c, active, t0, counters, record,
                                    recorded, live, fractions, reading, source.name in reusable)
        if op.kind == "gate":
            return self._run_gate(op, inputs[node.args[0].name], state, c, active, t0, counters)
        args = map_arg(node.args, folded)
        kwargs = map_arg(node.kwargs, folded)
        if op.role == "synapse" and counters is not None:
            self._count_synaptic_ops(op, args[0], c, active, t0, counters)
        if op.name in self._in_place_adds and node.args[0].name in reusable and _addable_in_place(*args):
            value = args[0].add_(args[1])  # the same float sums as a + b, without a new buffer
        else:
            value = self._call(op, args, kwargs)
        if not isinstance(value, torch.Tensor):  # e.g. a size read off a folded tensor: no time axis
            return value
        return value.view(c, active, *value.shape[1:])

    def _eval_silent_tail(self, op: Op, inputs: dict, static: dict, state: dict, c: int, active: int, t0: int,
                          counters: _Counters | None, record: set, recorded: dict, head: int):
        """A stateless op whose inputs are constant from step ``head`` of the chunk on: the first ``head`` steps
        run as usual, the constant rest is computed on one step and repeated (its synaptic ops counted per step)."""

        def steps(lo, hi):
            return {k: v[lo:hi] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}

        def every_step():
            return self._eval_temporal(op, inputs, static, state, c, active, t0, counters, record, recorded)

        # a size read off a folded tensor depends on the number of steps folded: such values run every step
        if not all(isinstance(v, torch.Tensor) for v in inputs.values()):
            return every_step()
        tail = self._eval_temporal(op, steps(head, head + 1), static, state, 1, active, t0 + head, None, record,
                                   recorded)
        if not isinstance(tail, torch.Tensor):
            return every_step()
        source = op.node.args[0].name if op.node.args and hasattr(op.node.args[0], "name") else None
        if counters is not None and op.role == "synapse" and source in inputs:
            x = inputs[source][head]
            self._count_synaptic_ops(op, x, 1, active, t0 + head, counters, repeat=c - head)
        tail = tail.expand(c - head, *tail.shape[1:])
        if head == 0:
            return tail
        first = self._eval_temporal(op, steps(0, head), static, state, head, active, t0, counters, record, recorded)
        return torch.cat([first, tail])

    def _call(self, op: Op, args, kwargs):
        return call_op(self.graph, op, args, kwargs)

    def _run_neuron(self, op: Op, current, temporal: bool, state, c, active, t0, counters, record, recorded,
                    live: int | None = None, fractions: dict | None = None, reading: str | None = None,
                    reuse: bool = False):
        neuron = op.module
        run = c if live is None else max(0, min(c, live - t0))  # a prefix-masked layer stops after its T_l
        per_step = None
        if temporal:  # [c, rows, ...]; a static (constant) current is not expanded over the steps
            per_step, current = current[:run], current[0]
        shape = current.shape[1:]
        theta = neuron.broadcast(neuron.threshold, current.dim())
        bias = neuron.broadcast(neuron.bias, current.dim())
        if op.name not in state:
            state[op.name] = neuron.initial_potential(shape, active)
            if counters is not None:
                counters.neurons[op.name] = int(shape.numel())
        v = state[op.name]
        timed = reading if fractions is not None else None
        counted = None  # spikes per step and position, when the fused loop counted them on the way
        net = None  # a signed layer's net spike count per neuron
        if neuron.signed:
            if timed is not None:
                raise ConfigError(f"Layer '{op.name}' emits signed spikes, which sub-step spike timing does not "
                                  "support; convert without --signed-spikes for it.")
            if op.name + ".net" not in state:
                state[op.name + ".net"] = torch.zeros_like(v)
            net = state[op.name + ".net"]
        if self.surrogate_width is not None:
            out, state[op.name], fraction, net = self._run_neuron_differentiably(per_step, current, bias, v, theta,
                                                                                 run, neuron, timed, net)
            if net is not None:
                state[op.name + ".net"] = net
        else:
            if per_step is None:  # a constant current: add the bias once per batch, not once per chunk
                drive = state.get(op.name + ".drive")
                if drive is None:
                    drive = state[op.name + ".drive"] = current + bias
                current, bias = drive, None
            out, fraction, counted = self._run_neuron_in_place(per_step, current, bias, v, theta, run, neuron, t0,
                                                               timed, net, reuse)
        if run < c:  # silent after T_l: nothing runs, zeros go downstream
            out = torch.cat([out, out.new_zeros((c - run, *out.shape[1:]))])
            if counted is not None:
                counted = torch.cat([counted, counted.new_zeros((c - run, counted.shape[1]))])
            if fraction is not None:
                fraction = torch.cat([fraction, fraction.new_zeros((c - run, *fraction.shape[1:]))])
        if fraction is not None:
            fractions[op.name] = fraction
        if op.name in self.time_masks:
            mask = self.time_masks[op.name]()[t0:t0 + c].to(out.dtype)
            out = out * mask.view(c, *([1] * (out.dim() - 1)))
            counted = None  # the mask changes what was emitted
        emitted = out.detach().abs() if neuron.signed and counters is not None and counted is None else out.detach()
        if counters is not None and op.name in self._spike_sources and op.name not in self.time_masks:
            positions = counted if counted is not None else \
                _position_counts(emitted, neuron.broadcast(neuron.threshold, out.dim() - 1))
            counters.positions[op.name] = (t0, positions)
            counters.spikes[op.name][t0:t0 + c] += positions.sum(1)
        elif counters is not None and counted is not None:
            counters.spikes[op.name][t0:t0 + c] += counted.sum(1)
        elif counters is not None:
            counters.spikes[op.name][t0:t0 + c] += _spike_counts(emitted, neuron.threshold, c, active)
        if op.name in record:
            summed = out.sum(0)
            recorded[op.name] = recorded[op.name] + summed if op.name in recorded else summed
        return out

    @staticmethod
    def _run_neuron_in_place(per_step, current, bias, v, theta, c, neuron, t0: int = 0,
                             reading: str | None = None, net: torch.Tensor | None = None, reuse: bool = False
                             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Outputs theta * s [c, ...]; with a ``reading`` the crossing fraction of every step (else None); and,
        where the fused CPU loop ran, the spikes per step and neuron position summed over rows ([c, neurons]
        float64, else None).

        ``t0``: the layer's first step in this chunk (0-based), which the bias-shifted membrane needs.
        ``net``: a signed layer's net spike counts, updated in place (None: the plain IF neuron).
        ``bias`` None: a constant ``current`` that already includes it.
        ``reuse``: ``per_step`` is this layer's alone, so the outputs overwrite it (each step's current is read
        before its output is written, in the fused loop and in the torch steps alike)."""
        if reuse and per_step is not None and reading is None and per_step.is_contiguous() \
                and not per_step.requires_grad:
            out = per_step
        else:
            out = torch.empty((c, *current.shape), dtype=current.dtype, device=current.device)
        shifted = False  # the bias read as a shifted threshold instead of added to the input (below)
        if per_step is None:
            step_current = current if bias is None else current + bias
            per_step = step_current.expand(c, *current.shape)  # a view: the constant current is not copied
        elif neuron.bias.any():
            shifted = reading is None
            if not shifted:
                per_step = per_step + bias  # the crossing fractions need V itself
        if reading is None:
            # Adding the bias current b to every step's input would copy the whole chunk. Instead the state holds
            # V' = V - t*b after step t, so V >= theta reads V' >= theta - t*b, a per-channel vector per step.
            # Every chunk of a layer takes this branch, so V' stays consistent; nothing else reads V.
            compare = [theta - (t0 + i + 1) * bias for i in range(c)] if shifted else None
            if c and v.is_contiguous() and fused_available(per_step, v, theta) and \
                    (net is None or net.is_contiguous()):
                row = (1, *v.shape[1:])
                stacked = torch.stack([value.expand(row) for value in compare]) if shifted else \
                    theta.expand(row).unsqueeze(0)
                return out, None, if_chunk_(per_step, v, theta, stacked, out, net)
            for i in range(c):
                if net is None:
                    if_step_(per_step[i], v, theta, out[i], compare=compare[i] if shifted else None)
                else:
                    signed_if_step_(per_step[i], v, theta, net, out[i], compare=compare[i] if shifted else None)
            return out, None, None
        fraction = torch.empty_like(out)
        for i in range(c):
            if_step_timed_(per_step[i], v, theta, out[i], fraction[i], reading)
        return out, fraction, None

    def _run_neuron_differentiably(self, per_step, current, bias, v, theta, c, neuron, reading: str | None = None,
                                   net: torch.Tensor | None = None):
        """The same dynamics as :meth:`_run_neuron_in_place`, out of place with surrogate spikes (training).
        Returns (outputs, potential, crossing fractions or None, a signed layer's net counts or None).

        The crossing fractions (with a ``reading``) carry no gradient: they only choose target steps."""
        if per_step is None:
            per_step = (current + bias).expand(c, *current.shape)
        elif neuron.bias.any():
            per_step = per_step + bias
        outputs, fractions = [], []
        for i in range(c):
            if reading is not None:
                fractions.append(crossing_fraction(per_step[i].detach(), (v + per_step[i]).detach(), theta, reading))
            if net is None:
                out, v = if_step_surrogate(per_step[i], v, theta, self.surrogate_width)
            else:
                out, v, net = signed_if_step_surrogate(per_step[i], v, theta, net, self.surrogate_width)
            outputs.append(out)
        if not outputs:
            empty = v.new_zeros((0, *v.shape))
            return empty, v, (empty.detach() if reading is not None else None), net
        return torch.stack(outputs), v, (torch.stack(fractions) if reading is not None else None), net

    def _run_gate(self, op: Op, per_step: torch.Tensor, state, c, active, t0, counters):
        gate = op.module
        x = per_step
        if op.name not in state:
            state[op.name] = torch.zeros_like(per_step[0])
            state[op.name + ".max"] = gate.pool(state[op.name])
        accumulated, window_max = state[op.name], state[op.name + ".max"]
        out = torch.empty((c, *window_max.shape), dtype=x.dtype, device=x.device)
        counted = None  # nonzero outputs per step and position, when the fused loop counted them on the way
        if (c and self.surrogate_width is None and not x.requires_grad and x.is_contiguous()
                and accumulated.is_contiguous() and window_max.is_contiguous() and gate_fusable(gate.pool, x)):
            counted = gate_chunk_(per_step, accumulated, window_max, out, gate.pool)
        else:
            for i in range(c):
                out[i], accumulated, window_max = maxpool_gate_step(per_step[i], accumulated, window_max, gate.pool)
        state[op.name], state[op.name + ".max"] = accumulated, window_max
        if counters is not None:
            counters.neurons[op.name] = int(out.shape[2:].numel())
            if counted is not None:
                if op.name in self._spike_sources:  # the layer it feeds counts its synaptic ops from these
                    counters.positions[op.name] = (t0, counted)
                counters.spikes[op.name][t0:t0 + c] += counted.sum(1)
            else:
                counters.spikes[op.name][t0:t0 + c] += torch.count_nonzero(out.view(c, -1), dim=1)
        return out

    def _count_synaptic_ops(self, op: Op, x: torch.Tensor, c: int, active: int, t0: int, counters: _Counters,
                            repeat: int = 1):
        """Count the ops of ``c`` steps from their folded input; ``repeat``: one step that recurs that often."""
        shape = x.shape[1:]
        if op.name not in counters.fanout:
            counters.fanout[op.name] = input_fanout(op.module, shape).to(x.device)
            counters.input_elements[op.name] = int(shape.numel())
            with torch.no_grad():
                out_shape = op.module(torch.zeros((1, *shape), device=x.device)).shape[1:]
            counters.dense_macs[op.name] = dense_macs(op.module, out_shape)
        source = self._spike_fed.get(op.name)
        counted = counters.positions.get(source) if source is not None else None
        if (repeat == 1 and counted is not None and counted[0] == t0 and counted[1].shape[0] == c
                and counters.windows[source] == counters.windows[op.name]):
            # the input is that layer's spikes of these very steps: spikes per position x fan-out, exact in float64
            fanout = counters.fanout[op.name].reshape(-1).to(torch.float64)
            counters.synops[op.name][t0:t0 + c] += torch.mv(counted[1], fanout)
            return
        # nonzero inputs x fan-out, one matrix-vector product over all rows of the chunk
        flat = x.reshape(c * active, -1)
        nonzero = torch.empty_like(flat)
        torch.ne(flat, 0, out=nonzero)  # compare straight into floats: no bool temporary
        per_row = torch.mv(nonzero, counters.fanout[op.name].reshape(-1))
        per_step = per_row.view(c, active).sum(1, dtype=torch.float64)
        counters.synops[op.name][t0:t0 + c * repeat] += per_step.repeat(repeat)

    @staticmethod
    def _describe_static_synapse(op: Op, static: dict, counters: _Counters):
        """A weighted layer before the first neuron reads analog values once per sample: dense MACs."""
        source = op.node.args[0]
        counters.input_elements[op.name] = int(static[source.name].shape[1:].numel())
        counters.dense_macs[op.name] = dense_macs(op.module, static[op.name].shape[1:])


def _active(counters: _Counters, name: str) -> int | None:
    """Steps an op really ran when a prefix mask (DTS) stopped it before the end of its window, else None."""
    if name not in counters.live or counters.live[name] >= counters.windows[name]:
        return None
    return counters.live[name]


def _spike_counts(out: torch.Tensor, threshold: torch.Tensor, c: int, active: int) -> torch.Tensor:
    """Spikes per step from outputs theta * s: float sums per (step, sample, channel) divided by theta.

    Each partial sum counts at most one sample's channel, small enough to be exact after rounding;
    float sums run an order of magnitude faster than counting nonzeros on CPU.
    """
    channels = out.shape[2] if out.dim() > 2 else 1
    per_channel = out.reshape(c, active, channels, -1).sum(-1)
    theta = threshold.reshape(-1) if threshold.dim() else threshold.reshape(1)
    return torch.round(per_channel / theta).sum((1, 2), dtype=torch.float64)


def _addable_in_place(a, b) -> bool:
    """Whether ``a.add_(b)`` gives ``a + b``: same result dtype and shape, no autograd."""
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.is_contiguous()
            and torch.result_type(a, b) == a.dtype and torch.broadcast_shapes(a.shape, b.shape) == a.shape
            and not (a.requires_grad or b.requires_grad))


def _owned(value, inputs: dict, reusable: set[str]) -> bool:
    """Whether ``value``, an op's output, is a contiguous tensor whose buffer no other value shares: fresh, or
    the buffer of inputs (by name) this op owned (a view of them, or an operand it wrote into)."""
    if not isinstance(value, torch.Tensor) or not value.is_contiguous() or value.numel() == 0:
        return False
    storage = value.untyped_storage().data_ptr()
    return all(name in reusable for name, source in inputs.items()
               if isinstance(source, torch.Tensor) and source.untyped_storage().data_ptr() == storage)


def _position_counts(out: torch.Tensor, threshold: torch.Tensor, rows_per_sum: int = 256) -> torch.Tensor:
    """Spikes per step and neuron position, summed over rows, from outputs theta * s [steps, rows, ...].

    Float sums over at most ``rows_per_sum`` rows are exact after division by theta and rounding; the
    partial sums are added in float64. Returns [steps, neurons] float64."""
    steps, rows = out.shape[:2]
    total = torch.zeros((steps, *out.shape[2:]), dtype=torch.float64, device=out.device)
    for lo in range(0, rows, rows_per_sum):
        total += out[:, lo:lo + rows_per_sum].sum(1)
    return torch.round(total / threshold).reshape(steps, -1)


def _rows_after_exit(leaving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the rows that stay go when the ``leaving`` ones (a mask over the active rows) drop out.

    The m staying rows become rows 0..m-1: those already there keep their place, and the staying rows beyond
    m fill the places of the leaving rows before m. Returns ``order`` (new row i is old row ``order[i]``) and
    the moves that produce it in place: old rows ``moved_from`` are copied to rows ``moved_to``. Copying only
    the moved rows, not every staying one, is what makes a step in which a few samples exit cheap."""
    staying = torch.nonzero(~leaving).squeeze(1)
    m = staying.numel()
    moved_to = torch.nonzero(leaving[:m]).squeeze(1)
    moved_from = staying[staying >= m]
    order = torch.arange(m, device=leaving.device)
    order[moved_to] = moved_from
    return order, moved_to, moved_from


def _drop_rows_in_place(state: dict[str, torch.Tensor], order: torch.Tensor, moved_to: torch.Tensor,
                        moved_from: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-row state reduced to the rows ``order`` names (see :func:`_rows_after_exit`).

    Membranes are the largest tensors a step touches; copying all of them at every exit cost a small
    network as much as a sixth of its run. A tensor the engine alone holds (its own storage, no autograd)
    therefore moves only its displaced rows and keeps a view of its first rows; any other is gathered."""
    storages = Counter(value.untyped_storage().data_ptr() for value in state.values())
    kept = {}
    for key, value in state.items():
        if value.requires_grad or not value.is_contiguous() or storages[value.untyped_storage().data_ptr()] > 1:
            kept[key] = value.index_select(0, order)
            continue
        if moved_to.numel():
            value.index_copy_(0, moved_to, value.index_select(0, moved_from))
        kept[key] = value[:order.numel()]
    return kept


def _absorb(pending: dict, key: tuple[str, str], produced: tuple[int, torch.Tensor] | None) -> None:
    """Append a producer's steps of this chunk to what its consumer has not used yet."""
    if produced is None:
        return
    if key not in pending or not isinstance(produced[1], torch.Tensor):
        pending[key] = produced
        return
    first, block = pending[key]
    if block.shape[0] == 0:  # the usual case with equal windows: no copy of the new block
        pending[key] = produced
        return
    pending[key] = (first, torch.cat([block, produced[1]]))


def _temporal(static: dict, name: str, c: int):
    """A static value as the temporal ops need it: tensors are repeated over the chunk's steps."""
    value = static[name]
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return value.unsqueeze(0).expand(c, *value.shape).reshape(c * value.shape[0], *value.shape[1:])
    return value
