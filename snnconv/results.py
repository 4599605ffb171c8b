"""Plain result records produced by simulation and consumed by metrics, reports and plots.

All counts are totals over the evaluated samples unless the name says otherwise; per-sample values
are derived by dividing by ``samples``. Step-indexed arrays have one entry per simulated time step
t = 1..T (index 0 is step 1) and hold what happened *at* that step, not cumulatively.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class NeuronLayerStats:
    """Spiking activity of one neuron layer (an IF layer or a max-pool gate)."""

    name: str  # qualified name of the graph node
    kind: str  # "if" | "signed_if" | "maxpool_gate"
    neurons: int  # neurons per sample
    threshold_mean: float  # mean firing threshold theta over the layer's channels (activation units)
    time_steps: int  # T_l, the steps this layer was simulated for
    spikes_per_step: np.ndarray  # [T_l] spikes emitted at each step, summed over samples
    # TTFS: the global steps [start, end) the layer's membrane is busy; None: every step of its window
    active_window: tuple[int, int] | None = None
    active_steps: int | None = None  # DTS prefix mask: only the first steps of the window ran (None: all)

    @property
    def spikes(self) -> int:
        return int(self.spikes_per_step.sum())


@dataclass
class SynapticLayerStats:
    """Work done by one weighted layer (convolution or linear).

    A layer whose input is analog (the image, or anything computed before the first neuron) runs
    once per sample as multiply-accumulates (MACs). A layer fed by spikes performs one accumulate
    (AC) per nonzero input element and outgoing synapse: ``ops_per_step`` counts exactly those
    (nonzero inputs x fan-out, border effects of padding and stride included).
    """

    name: str
    kind: str  # "conv" | "linear"
    spiking_input: bool
    macs_per_sample_dense: int  # MACs of one dense ANN evaluation of this layer
    input_elements: int  # input elements per sample (zero checks per step on event hardware)
    time_steps: int
    ops_per_step: np.ndarray  # [T_l] synaptic operations at each step, summed over samples (spiking input only)
    part: str = "network"  # "network", or "exit_policy" for a SEENN-II policy network's layers (not in the ANN)
    # TTFS: the global steps [start, end) during which spikes reach the layer; None: every step of its window
    active_window: tuple[int, int] | None = None
    active_steps: int | None = None  # DTS: its input is silent after these first steps of the window (None: never)

    @property
    def synaptic_ops(self) -> int:
        return int(self.ops_per_step.sum())


@dataclass
class SimulationResult:
    """What one pass of the time engine measured on an evaluation set."""

    samples: int
    time_steps: int  # T of the readout (steps of the output layer)
    correct_per_step: np.ndarray  # [T] samples classified correctly by the output accumulated up to step t
    neuron_layers: list[NeuronLayerStats]
    synaptic_layers: list[SynapticLayerStats]
    wall_time_s: float
    exit_steps: np.ndarray | None = None  # [samples] step at which each sample left, when an exit policy ran
    exit_correct: int | None = None  # correct predictions at the exit step, when an exit policy ran
    oracle_exit_steps: np.ndarray | None = None  # [samples] first step whose running prediction is right (else T)
    most_spikes_per_neuron: int | None = None  # TTFS: the largest spike count of any neuron on any sample
    correct_by_sample: np.ndarray | None = None  # [samples, T] bool: sample i right from steps 1..t (labelled runs)

    def accuracy_at(self, t: int) -> float:
        """Top-1 accuracy in percent using the accumulated output of steps 1..t."""
        if not 1 <= t <= len(self.correct_per_step):  # t - 1 = -1 would read the last step
            raise ValueError(f"t = {t} is outside the simulated steps 1..{len(self.correct_per_step)}.")
        return 100.0 * float(self.correct_per_step[t - 1]) / self.samples

    @property
    def accuracy_per_step(self) -> np.ndarray:
        return 100.0 * self.correct_per_step.astype(np.float64) / self.samples


@dataclass
class AnnResult:
    """The source network evaluated on the same data, for side-by-side reports.

    A directly trained spiking model has no source ANN: ``correct`` is None, its accuracy NaN (shown as
    missing), and the energy comparison uses the dense MACs of the same architecture.
    """

    samples: int
    correct: int | None
    wall_time_s: float
    macs_per_sample: dict[str, int] = field(default_factory=dict)  # weighted layer name -> dense MACs

    @property
    def accuracy(self) -> float:
        return math.nan if self.correct is None else 100.0 * self.correct / self.samples
