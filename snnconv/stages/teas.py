"""TEAS: per-layer time steps T_l chosen from spiking activity and measured sensitivity.

No public code exists for TEAS (ALGORITHMS.md section 1 is a reconstruction); snnconv's choices, each an
option, are documented in docs/teas.md. In short:

1. Profile: the converted network runs its uniform T on the profiling split; per neuron layer we record
   activity Act(l) (spikes per neuron per step), spikes per sample, #Para(l) (weights of the layers that
   consume its spikes), the cost #Act(l) x #Para(l) and the layer's first spike step.
2. Vulnerability: on the held-out split, each layer alone is cut to ``probe`` steps, and separately its
   neurons get a membrane perturbation of u x theta x T x N(0, 1) (noise of magnitude u on its rate);
   accuracy drop and output divergence are recorded, and their Spearman correlation with Act(l).
3. Allocate: lazy greedy on the held-out split. A move halves one layer's T_l (to the next lower candidate);
   the move taken is the one saving the most measured synaptic operations per point of measured accuracy
   lost, re-measured in the current allocation before it is accepted, while the accuracy stays within the
   budget of the uniform network (or, with an average-T budget, until the mean T_l reaches it).
4. Retune and recalibrate: with mse balancing (the default), a threshold is the clip that best quantizes the
   layer's ANN activations into the levels its window can express, so a cut layer gets its threshold searched
   again for its T_l. A network converted with calibration gets it again for the windows (its bias and
   potential corrections were measured over the uniform T), from the first cut layer on. Both happen in every
   held-out trial (``calibrated_trials``; without it, only the thresholds), so sensitivities and moves are
   measured on the network the result will be, and the result is the network of the last accepted move.

``timing`` chooses how spikes cross between windows (linear map or sub-step crossing times, docs/teas.md
"5. Execute"); the sensitivity probes, the allocation, the recalibration and the result all run with it.
"""
from __future__ import annotations

import heapq
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch

from ..config import BalanceConfig, _Plain, check_timing
from ..data import LabeledData
from ..engine import Crossing, Engine, TimePlan
from ..errors import ConfigError
from ..metrics.summary import lost_points_bounds
from ..network import SpikingNetwork
from ..neurons import IFNeuron
from ..results import SimulationResult
from .balance import layer_thresholds
from .calibrate import calibrate
from .finetune import FinetuneConfig
from .observe import LayerHistogram, collect_statistics

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class TeasConfig(_Plain):
    accuracy_budget: float = 0.1  # points of held-out accuracy the allocation may lose vs the uniform T
    avg_steps_budget: float | None = None  # instead: cut until the mean T_l is at most this (accuracy ignored)
    candidates: tuple[int, ...] = ()  # allowed T_l; default: T, T/2, T/4, ... down to min_steps
    min_steps: int = 1
    holdout_fraction: float = 0.5  # of the calibration data; the rest profiles
    probe_steps: int | None = None  # T_l used to measure a layer's sensitivity (default: T/4)
    noise: float = 0.1  # u of the noise sensitivity, relative to the layer's threshold
    seed: int = 0
    timing: str = "linear"  # spike timing between windows, allocation and result alike (SPIKE_TIMINGS)
    retune_thresholds: bool = True  # mse-balanced networks: search a cut layer's threshold again for its T_l
    calibrated_trials: bool = True  # calibrated networks: measure every cut after calibrating for its windows
    finetune: bool = False  # after allocating: surrogate-gradient BPTT with T_l fixed (docs/teas.md)
    tuning: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self):
        if self.accuracy_budget < 0:
            raise ConfigError(f"--accuracy-budget must be >= 0 points, got {self.accuracy_budget}.")
        if self.avg_steps_budget is not None and self.avg_steps_budget <= 0:
            raise ConfigError(f"--avg-t-budget must be positive, got {self.avg_steps_budget}.")
        if self.min_steps <= 0:
            raise ConfigError(f"--min-t must be positive, got {self.min_steps}.")
        if not 0 < self.holdout_fraction < 1:
            raise ConfigError(f"--holdout-fraction must be between 0 and 1, got {self.holdout_fraction}.")
        if not self.noise >= 0:
            raise ConfigError(f"--noise must be >= 0 (a magnitude relative to the threshold), got {self.noise}.")
        if any(int(c) <= 0 for c in self.candidates):
            raise ConfigError(f"--candidates must be positive step counts, got {list(self.candidates)}.")
        check_timing(self.timing)

    def check_time_steps(self, steps: int) -> None:
        """Refuse what cannot apply to a network of T = ``steps``."""
        self.steps_for(steps)

    def steps_for(self, base: int) -> list[int]:
        """Allowed T_l, descending, all <= base and >= min_steps (base itself always allowed). A candidate or
        --min-t above the network's T could never be used: refused rather than dropped."""
        if self.min_steps > base:
            raise ConfigError(f"--min-t {self.min_steps} exceeds the network's T = {base}, so no layer could be cut; "
                              f"choose --min-t {base} or less.")
        if self.candidates:
            beyond = sorted({int(c) for c in self.candidates if not self.min_steps <= int(c) <= base})
            if beyond:
                listed = ",".join(map(str, beyond))
                raise ConfigError(f"--candidates {listed} outside {self.min_steps}..{base} (--min-t to the network's "
                                  "T); choose T_l within it.")
            values = {int(c) for c in self.candidates}
        else:
            values, t = set(), base
            while t >= self.min_steps:
                values.add(t)
                t //= 2
        return sorted(values | {base}, reverse=True)


@dataclass
class LayerProfile:
    name: str
    neurons: int
    activity: float  # spikes per neuron per step (Act(l))
    spikes_per_sample: float
    params: int  # #Para(l): weights of the weighted layers that read this layer's spikes
    cost: float  # spikes per sample x params (#Act(l) x #Para(l))
    first_spike_step: int | None  # first step (1-based) at which the layer fired on the profiling split
    cut_drop_points: float = math.nan  # held-out accuracy lost when only this layer runs probe steps
    cut_divergence: float = math.nan  # mean total-variation distance of the output distribution, same cut
    noise_drop_points: float = math.nan
    noise_divergence: float = math.nan
    time_steps: int = 0  # allocated T_l


@dataclass
class AllocationStep:
    layer: str
    from_steps: int
    to_steps: int
    accuracy_pct: float  # held-out accuracy after the move
    synaptic_ops_per_sample: float
    accepted: bool


@dataclass
class TeasResult:
    base_steps: int
    layer_time_steps: dict[str, int]
    profiles: list[LayerProfile]
    holdout_samples: int
    uniform_accuracy_pct: float  # held-out, uniform T
    final_accuracy_pct: float  # held-out, allocated T_l
    uniform_ops_per_sample: float
    final_ops_per_sample: float
    probe_steps: int
    correlation: dict[str, float]  # Spearman rho of activity vs each sensitivity
    trace: list[AllocationStep] = field(default_factory=list)
    evaluations: int = 0  # held-out simulations the allocation ran
    recalibrated: bool = False  # calibration redone for the allocated windows
    calibrated_trials: bool = False  # every held-out trial was measured after that calibration (TeasConfig)
    retuned_thresholds: dict[str, int] = field(default_factory=dict)  # layer -> the T_l its threshold was searched for
    timing: str = "linear"  # spike timing between windows (TeasConfig.timing)
    crossings: list[Crossing] = field(default_factory=list)  # edges between different windows, with their map
    holdout_data: str = ""  # where the held-out split came from (LabeledData.description)
    # 90 % interval of the points the allocation lost on the held-out split (metrics.summary.lost_points_bounds)
    holdout_lost_points_interval: tuple[float, float] = (math.nan, math.nan)

    @property
    def mean_steps(self) -> float:
        return float(np.mean(list(self.layer_time_steps.values())))


class WindowThresholds:
    """Thresholds searched for a layer's own window T_l: the mse search of the conversion (ALGORITHMS section
    6.1), rerun on the layer's ANN activation histogram with T_l quantization levels. Cached per (layer, T_l)."""

    def __init__(self, network: SpikingNetwork, data: LabeledData, batch_size: int = 256):
        balance = network.config.balance
        self.enabled = balance.method == "mse"
        self.balance, self.half_init = balance, network.config.half_init
        self.neurons = dict(network.neuron_layers())
        self.original = {name: neuron.threshold.clone() for name, neuron in self.neurons.items()}
        self.histograms: dict[str, LayerHistogram] = {}
        if self.enabled:
            device = next(network.graph.parameters()).device
            graph = network.ann_graph()
            self.histograms = collect_statistics(graph, (x.to(device) for x, _ in data.batches(batch_size)),
                                                 module_type=IFNeuron).layers
        self._cache: dict[tuple[str, int], torch.Tensor] = {}

    def retunable(self, name: str) -> bool:
        return self.enabled and name in self.histograms and name not in self.balance.overrides

    def threshold(self, name: str, steps: int) -> torch.Tensor:
        key = (name, steps)
        if key not in self._cache:
            config = BalanceConfig(method="mse", granularity=self.balance.granularity, time_steps=steps)
            found = layer_thresholds(self.histograms[name], config, self.half_init)
            self._cache[key] = found.reshape(self.original[name].shape).to(self.original[name])
        return self._cache[key]

    def apply(self, windows: dict[str, int], base: int, levels: Callable[[int], int] = lambda steps: steps
              ) -> dict[str, int]:
        """Set every cut layer's threshold for its window (searched for ``levels(T_l)`` levels; TEAS: T_l), the
        others' back to the original; returns the layers retuned and the T each threshold was searched for."""
        retuned = {}
        for name, neuron in self.neurons.items():
            steps = windows.get(name, base)
            if steps != base and self.retunable(name):
                neuron.threshold = self.threshold(name, levels(steps))
                retuned[name] = levels(steps)
            else:
                neuron.threshold = self.original[name]
        return retuned

    def settle(self, windows: dict[str, int], base: int, levels: Callable[[int], int] = lambda steps: steps
               ) -> dict[str, int]:
        """:meth:`apply` for good: the retuned layers' calibration corrections, measured under the old threshold
        and window, are reset too (recalibration measures them again)."""
        retuned = self.apply(windows, base, levels)
        for name in retuned:
            neuron = self.neurons[name]
            neuron.bias = torch.zeros_like(neuron.bias)
            neuron.v_offset = torch.zeros((), device=neuron.v_offset.device)
        return retuned


class WindowSetup:
    """Puts the network in the state a plan of windows T_l leaves it in: cut layers' thresholds searched for their
    T_l (:class:`WindowThresholds`) and, for a calibrated network, its calibration corrections measured again over
    the windows, from the first layer (in network order) the plan cuts; the layers before it see no change.

    :meth:`trial` does this for one held-out simulation and undoes it; :meth:`settle` does it for good. With
    ``calibrated_trials`` off, trials only set the thresholds, and only :meth:`settle` recalibrates."""

    def __init__(self, network: SpikingNetwork, engine: Engine, calibration: torch.Tensor, base: int,
                 chunk_steps: int, timing: str, thresholds: WindowThresholds | None, calibrated_trials: bool):
        mode = network.config.calibrate
        # weights stay as calibrated for the base T; bias and potential are measured again per window
        self.mode = None if mode == "none" else ("advanced" if mode == "weights" else mode)
        self.engine, self.calibration, self.base = engine, calibration, base
        self.chunk_steps, self.timing, self.thresholds = chunk_steps, timing, thresholds
        self.calibrated_trials = calibrated_trials and self.mode is not None
        self.neurons = dict(network.neuron_layers())
        self.order = [op.name for op in engine.program.neuron_ops if op.kind == "neuron"]
        self.reference = network.ann_graph() if self.mode is not None else None

    def settle(self, windows: dict[str, int]) -> tuple[dict[str, int], bool]:
        """The retuned layers (with the T_l each threshold was searched for) and whether calibration was redone."""
        retuned = self.thresholds.settle(windows, self.base) if self.thresholds is not None else {}
        cut = {name: steps for name, steps in windows.items() if steps != self.base}
        if self.mode is None or not cut:
            return retuned, False
        with torch.no_grad():
            calibrate(self.engine, self.calibration, self.base, self.mode, self.chunk_steps, layer_steps=cut,
                      timing=self.timing, reference=self.reference,
                      start=next(name for name in self.order if name in cut))
        return retuned, True

    @contextmanager
    def trial(self, windows: dict[str, int]) -> Iterator[None]:
        saved = {name: (n.threshold, n.bias.clone(), n.v_offset.clone()) for name, n in self.neurons.items()}
        try:
            if self.calibrated_trials:
                self.settle(windows)
            elif self.thresholds is not None:
                self.thresholds.apply(windows, self.base)
            yield
        finally:
            for name, (threshold, bias, v_offset) in saved.items():
                neuron = self.neurons[name]
                neuron.threshold, neuron.bias, neuron.v_offset = threshold, bias, v_offset


class _Runner:
    """Held-out simulations of one network under different per-layer plans, with their output distributions."""

    def __init__(self, engine: Engine, data: LabeledData, base: int, batch_size: int, chunk_steps: int,
                 timing: str = "linear", setup: WindowSetup | None = None):
        self.engine, self.data, self.base = engine, data, base
        self.batch_size, self.chunk_steps, self.timing = batch_size, chunk_steps, timing
        self.setup = setup
        self.count = 0

    def run(self, windows: dict[str, int]) -> tuple[SimulationResult, torch.Tensor]:
        outputs: list[torch.Tensor] = []
        plan = TimePlan.per_layer(self.base, {k: v for k, v in windows.items() if v != self.base}, self.chunk_steps,
                                  timing=self.timing)
        with self.setup.trial(windows) if self.setup is not None else nullcontext():
            sim = self.engine.simulate(self.data.batches(self.batch_size), plan,
                                       on_batch=lambda outcome: outputs.append(outcome["accumulated"].float().cpu()))
        self.count += 1
        return sim, torch.softmax(torch.cat(outputs) / self.base, dim=-1)


def _synaptic_ops(sim: SimulationResult) -> float:
    return sum(layer.synaptic_ops for layer in sim.synaptic_layers) / max(sim.samples, 1)


def _divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    return float(0.5 * (p - q).abs().sum(-1).mean())


def consumer_params(engine: Engine) -> dict[str, int]:
    """#Para(l): weights of the weighted layers reached from neuron layer l without crossing another neuron."""
    by_name = {op.name: op for op in engine.program.ops}
    return {name: sum(int(by_name[s].module.weight.numel()) for s in synapses)
            for name, synapses in consumer_synapses(engine).items()}


def consumer_synapses(engine: Engine) -> dict[str, list[str]]:
    """Weighted layers that read neuron layer l's spikes (through pooling, reshapes, adds; not another neuron)."""
    program = engine.program
    by_name = {op.name: op for op in program.ops}
    result = {}
    for op in program.neuron_ops:
        if op.kind != "neuron":
            continue
        found, seen, frontier = [], set(), list(op.node.users)
        while frontier:
            node = frontier.pop()
            if node.name in seen or node.name not in by_name:
                continue
            seen.add(node.name)
            user = by_name[node.name]
            if user.role == "synapse":
                found.append(user.name)
            elif user.kind not in ("neuron", "output"):
                frontier.extend(node.users)
        result[op.name] = found
    return result


def profile_layers(engine: Engine, sim: SimulationResult) -> list[LayerProfile]:
    params = consumer_params(engine)
    profiles = []
    for layer in sim.neuron_layers:
        if layer.name not in params:
            continue
        spikes = np.asarray(layer.spikes_per_step, dtype=np.float64)
        per_sample = float(spikes.sum()) / max(sim.samples, 1)
        fired = np.flatnonzero(spikes)
        profiles.append(LayerProfile(
            name=layer.name, neurons=layer.neurons,
            activity=per_sample / (layer.neurons * layer.time_steps) if layer.neurons else 0.0,
            spikes_per_sample=per_sample, params=params[layer.name], cost=per_sample * params[layer.name],
            first_spike_step=int(fired[0]) + 1 if fired.size else None))
    return profiles


def _spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rho: Pearson correlation of the ranks (ties share their average rank)."""
    ra, rb = pd.Series(a, dtype=float).rank().to_numpy(), pd.Series(b, dtype=float).rank().to_numpy()
    if len(a) < 3 or ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def teas(network: SpikingNetwork, calibration: LabeledData, config: TeasConfig = TeasConfig(), *,
         holdout: LabeledData | None = None, time_steps: int | None = None, batch_size: int = 256,
         chunk_steps: int = 8, device: str = "cpu", progress: ProgressFn | None = None) -> TeasResult:
    """Choose per-layer T_l for ``network`` (run uniformly at ``time_steps``, default its own T). Sensitivity and
    allocation are measured on ``holdout`` when given, and all of ``calibration`` is profiled; else on the
    ``config.holdout_fraction`` share of ``calibration``, and the rest is profiled."""
    base = int(time_steps or network.time_steps)
    note = progress or (lambda _message: None)
    if network.layer_time_steps:
        raise ConfigError("This network already runs per-layer time steps; start TEAS from a uniform-T artifact.")
    engine = Engine(network.graph, device)
    if holdout is None:
        holdout, profiling = calibration.split(config.holdout_fraction, config.seed)
    else:
        profiling = calibration
    steps = config.steps_for(base)
    probe = int(config.probe_steps or max(config.min_steps, base // 4))
    unresolved = unresolved_budget(len(holdout), config)
    if unresolved:
        note(unresolved)

    note(f"profiling {len(profiling)} samples at T={base}")
    profile_sim = engine.simulate(profiling.batches(batch_size), TimePlan(base, chunk_steps))
    profiles = profile_layers(engine, profile_sim)
    names = [p.name for p in profiles]

    thresholds = WindowThresholds(network, calibration, batch_size) if config.retune_thresholds else None
    if thresholds is not None and not thresholds.enabled:
        note(f"thresholds kept: they were balanced by '{network.config.balance.method}', which does not depend on T")
    setup = WindowSetup(network, engine, calibration.x[:network.config.calibration_samples], base, chunk_steps,
                        config.timing, thresholds, config.calibrated_trials)
    if setup.calibrated_trials:
        note(f"every cut is measured after {setup.mode} calibration for its windows, as the result will be")
    runner = _Runner(engine, holdout, base, batch_size, chunk_steps, config.timing, setup)
    uniform = {name: base for name in names}
    base_sim, base_out = runner.run(uniform)
    base_acc, base_ops = base_sim.accuracy_at(base), _synaptic_ops(base_sim)

    note(f"sensitivity of {len(names)} layers (cut to T={probe}; noise u={config.noise})")
    neurons = dict(network.neuron_layers())
    generator = torch.Generator().manual_seed(config.seed)
    for prof in profiles:
        sim, out = runner.run({**uniform, prof.name: probe})
        prof.cut_drop_points = base_acc - sim.accuracy_at(base)
        prof.cut_divergence = _divergence(out, base_out)
        neuron = neurons[prof.name]
        saved = neuron.v_offset
        shape = _activation_shape(engine, holdout, prof.name)
        # per sample: a layer-wise (scalar) threshold broadcasts as well as a per-channel one
        theta = neuron.broadcast(neuron.threshold.cpu(), len(shape) + 1).expand(1, *shape)[0]
        noise = config.noise * theta * base * torch.randn(shape, generator=generator)
        neuron.v_offset = (saved.cpu() + noise).to(saved.device)
        try:
            sim, out = runner.run(uniform)
        finally:
            neuron.v_offset = saved
        prof.noise_drop_points = base_acc - sim.accuracy_at(base)
        prof.noise_divergence = _divergence(out, base_out)
    activity = [p.activity for p in profiles]
    correlation = {key: _spearman(activity, [getattr(p, key) for p in profiles])
                   for key in ("cut_drop_points", "cut_divergence", "noise_drop_points", "noise_divergence")}

    windows, trace = _allocate(runner, names, steps, base_acc, base_ops, config, note)
    retuned, recalibrated = setup.settle(windows)
    if retuned:
        note(f"thresholds searched again for their T_l in {len(retuned)} layers")
    if recalibrated:
        note(f"{setup.mode} calibration for the allocated windows")
    runner.setup = None  # the network now holds the allocated thresholds and corrections
    final_sim, _ = runner.run(windows)
    lower, upper = lost_points_bounds(base_sim.correct_by_sample[:, -1], final_sim.correct_by_sample[:, -1], 0.95)
    crossings = engine.crossings(TimePlan.per_layer(base, {k: v for k, v in windows.items() if v != base},
                                                    chunk_steps, timing=config.timing))
    for prof in profiles:
        prof.time_steps = windows[prof.name]
    return TeasResult(base_steps=base, layer_time_steps=windows, profiles=profiles, holdout_samples=len(holdout),
                      uniform_accuracy_pct=base_acc, final_accuracy_pct=final_sim.accuracy_at(base),
                      uniform_ops_per_sample=base_ops, final_ops_per_sample=_synaptic_ops(final_sim),
                      probe_steps=probe, correlation=correlation, trace=trace, evaluations=runner.count,
                      recalibrated=recalibrated, calibrated_trials=setup.calibrated_trials,
                      timing=config.timing, crossings=crossings,
                      retuned_thresholds=retuned, holdout_data=holdout.description,
                      holdout_lost_points_interval=(float(lower), float(upper)))


def unresolved_budget(holdout_samples: int, config: TeasConfig) -> str | None:
    """A sentence saying that the held-out split is too small to resolve the accuracy budget, else None.

    With n held-out samples, accuracy moves in steps of 100/n points; when that step is larger than the
    budget, the allocator can only accept cuts that lose no sample at all, which is far stricter than asked.
    """
    if config.avg_steps_budget is not None or holdout_samples == 0:
        return None
    one_sample = 100.0 / holdout_samples
    if one_sample <= config.accuracy_budget:
        return None
    return (f"the held-out split has {holdout_samples} samples, so one sample is {one_sample:.2f} points, more than "
            f"the accuracy budget of {config.accuracy_budget:g} points: cuts are accepted only where no held-out "
            f"sample is lost; more held-out samples (more calibration samples, a larger --holdout-fraction, or more "
            f"--holdout-data) resolve the budget")


def _activation_shape(engine: Engine, data: LabeledData, name: str) -> torch.Size:
    recorded = engine.run_batch(data.x[:1].to(engine.device), None, TimePlan(1, 1), record=[name], until=name)
    return recorded["recorded"][name].shape[1:]


def _allocate(runner: _Runner, names: list[str], steps: list[int], base_acc: float, base_ops: float,
              config: TeasConfig, note: ProgressFn) -> tuple[dict[str, int], list[AllocationStep]]:
    """Lazy greedy: halve the layer with the most saved operations per point lost, re-measured before acceptance."""
    windows = {name: steps[0] for name in names}
    one_sample = 100.0 / max(len(runner.data), 1)
    floor = base_acc - config.accuracy_budget
    current_acc, current_ops = base_acc, base_ops
    trace: list[AllocationStep] = []

    def lower(name):
        index = steps.index(windows[name])
        return steps[index + 1] if index + 1 < len(steps) else None

    measured: dict[tuple, tuple[float, float]] = {}

    def measure(name):
        trial = {**windows, name: lower(name)}
        key = tuple(sorted(trial.items()))
        if key not in measured:
            sim, _ = runner.run(trial)
            measured[key] = (sim.accuracy_at(runner.base), _synaptic_ops(sim))
        acc, ops = measured[key]
        score = (current_ops - ops) / (max(current_acc - acc, 0.0) + 0.5 * one_sample)
        return score, acc, ops

    def budget_met() -> bool:
        return config.avg_steps_budget is not None and np.mean(list(windows.values())) <= config.avg_steps_budget

    heap = []
    for name in names:
        if lower(name) is not None:
            score, acc, ops = measure(name)
            heapq.heappush(heap, (-score, name))
    while heap and not budget_met():
        _, name = heapq.heappop(heap)
        score, acc, ops = measure(name)  # fresh, in the current allocation
        if heap and score < -heap[0][0]:
            heapq.heappush(heap, (-score, name))  # stale winner: let the next best be re-measured first
            continue
        within = config.avg_steps_budget is not None or acc >= floor - 1e-9
        trace.append(AllocationStep(name, windows[name], lower(name), acc, ops, within))
        if not within:
            continue  # this layer cannot be cut further within the budget
        note(f"{name}: T_l {windows[name]} -> {lower(name)} (held-out accuracy {acc:.2f} %)")
        windows[name] = lower(name)
        current_acc, current_ops = acc, ops
        if lower(name) is not None:
            score, _, _ = measure(name)
            heapq.heappush(heap, (-score, name))
    return windows, trace
