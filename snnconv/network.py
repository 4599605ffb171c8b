"""The converted network: a spiking GraphModule plus everything needed to run, report and save it."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.fx

from .config import ConvertConfig
from .data import check_batch_size
from .engine import ExitPolicy, TimePlan
from .engine.chunking import auto_chunk_steps
from .neurons import IFNeuron
from .neurons.ttfs import TTFSCoding
from .stages.convert import CoverageRow


@dataclass
class SpikingNetwork:
    """``graph`` holds IF neurons and max-pool gates in place of ReLUs and max pools.

    Called directly, ``graph`` computes the normalized ANN (neurons act as ReLU, gates as max pooling),
    which is the reference the SNN is compared with, unless weight calibration changed weights: then
    :meth:`ann_graph` is the reference. The time engine runs ``graph`` as an SNN.
    """

    graph: torch.fx.GraphModule
    input_shape: tuple[int, ...]  # per sample, e.g. (1, 28, 28)
    time_steps: int  # the T conversion (balancing, calibration) targeted
    config: ConvertConfig
    coverage: list[CoverageRow]
    source: dict  # {"source", "format", "sha256", "import_check"}
    input_normalization: dict  # {"mean": [...] | None, "std": [...] | None}
    num_classes: int
    calibration_log: list[dict] = field(default_factory=list)
    notes: dict = field(default_factory=dict)  # measured side facts, e.g. the ANN accuracy before a max->avg rewrite
    # per-layer windows T_l (TEAS); layers not named, and the readout, run ``time_steps``
    layer_time_steps: dict[str, int] = field(default_factory=dict)
    # per-sample early exit (SEENN); snnconv.evaluate applies it unless told otherwise
    exit_policy: ExitPolicy | None = None
    # time-to-first-spike coding (snnconv compress --method ttfs); None: rate coding
    ttfs: TTFSCoding | None = None

    @property
    def coding(self) -> str:
        return "ttfs" if self.ttfs is not None else "rate"
    # learned time-step masks (DTS): these layers run only the first T_l steps of their window and are
    # silent after, with no re-timing ("prefix" crossing); their mask parameters TP are kept beside
    layer_prefix_steps: dict[str, int] = field(default_factory=dict)
    time_mask_parameters: dict[str, list[float]] = field(default_factory=dict)
    # how IF spikes are re-timed between per-layer windows (snnconv.config.SPIKE_TIMINGS; docs/teas.md)
    timing: str = "linear"
    # the ANN's values of the weights weight calibration changed (state-dict key -> tensor); empty otherwise
    ann_weights: dict[str, torch.Tensor] = field(default_factory=dict)

    def ann_graph(self) -> torch.fx.GraphModule:
        """The normalized ANN the SNN is compared with: ``graph`` itself, or a copy with the ANN's weights
        where weight calibration changed them."""
        if not self.ann_weights:
            return self.graph
        graph = copy.deepcopy(self.graph)
        graph.load_state_dict(self.ann_weights, strict=False)
        return graph

    def ann_snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of what :meth:`ann_graph` holds, taken before training moves the SNN's weights."""
        return {k: v.detach().clone() for k, v in self.ann_graph().state_dict().items()}

    def keep_ann(self, snapshot: dict[str, torch.Tensor]) -> None:
        """After training through the SNN: record the ANN's value of every entry training changed, so that
        :meth:`ann_graph` (every "ANN" figure) stays the network this one was converted from."""
        self.ann_weights = {k: snapshot[k] for k, v in self.graph.state_dict().items()
                            if k in snapshot and not torch.equal(v, snapshot[k])}

    def restore_ann_weights(self) -> None:
        """Undo weight calibration: ``graph`` gets the ANN's weights back."""
        self.graph.load_state_dict(self.ann_weights, strict=False)
        self.ann_weights = {}

    def neuron_layers(self) -> list[tuple[str, IFNeuron]]:
        return [(n.name, self.graph.get_submodule(n.target)) for n in self.graph.graph.nodes
                if n.op == "call_module" and isinstance(self.graph.get_submodule(n.target), IFNeuron)]

    def time_plan(self, chunk_steps: int = 8, time_steps: int | None = None, timing: str | None = None) -> TimePlan:
        """The plan this network runs: its per-layer windows, prefix masks and spike timing (``timing``
        overrides it), read out over ``time_steps``."""
        return TimePlan.per_layer(self.time_steps if time_steps is None else time_steps, self.layer_time_steps,
                                  chunk_steps, self.layer_prefix_steps, timing or self.timing)

    def chunk_steps_for(self, batch_size: int, chosen: int | None = None) -> int:
        """The steps to simulate together: ``chosen``, or when None, as many as keep a batch's block of the
        largest layer within the engine's budget (snnconv/engine/chunking.py)."""
        check_batch_size(batch_size)
        return chosen if chosen is not None else auto_chunk_steps(self.graph, self.input_shape, batch_size)

    def to(self, device: torch.device | str) -> "SpikingNetwork":
        self.graph.to(device)
        self.ann_weights = {k: v.to(device) for k, v in self.ann_weights.items()}
        return self
