"""Normalize a traced ANN, account for every node, and swap ReLUs for IF neurons.

The coverage table lists every node of the normalized graph with how it is handled, plus the nodes
the passes folded or removed. A node with no handler stops the conversion with its name and type;
nothing is skipped silently. After conversion, :func:`check_fully_converted` fails if any ReLU-like
node is left.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from ..errors import UnsupportedLayerError
from ..handlers import HANDLERS, describe_target
from ..neurons import IFNeuron, MaxPoolGate
from ..passes import NORMALIZE_ORDER, PASSES, PassRecord

STATUS_BY_ROLE = {"neuron": "converted", "maxpool": "converted", "spiking": "converted", "synapse": "passed through",
                  "linear": "passed through", "shape": "passed through"}
REASON_BY_ROLE = {"neuron": "ReLU -> IF neuron (reset by subtraction)",
                  "synapse": "weighted layer: synaptic operations counted",
                  "linear": "affine and batch-independent: commutes with averaging over time",
                  "shape": "shape metadata"}


@dataclass(frozen=True)
class CoverageRow:
    node: str
    target: str
    status: str  # "converted" | "passed through" | "folded" | "removed" | "rewritten"
    reason: str


def normalize(gm: torch.fx.GraphModule, maxpool: str = "gate") -> tuple[torch.fx.GraphModule, list[PassRecord]]:
    """Apply the normalization passes (and the max->avg rewrite when asked) to a copy of ``gm``."""
    gm = copy.deepcopy(gm).eval()
    records: list[PassRecord] = []
    for name in NORMALIZE_ORDER:
        records += PASSES[name](gm)
    if maxpool == "avg":
        records += PASSES["maxpool_to_avgpool"](gm)
    return gm, records


def _depends_on_neuron(gm: torch.fx.GraphModule) -> dict[str, bool]:
    temporal: dict[str, bool] = {}
    for node in gm.graph.nodes:
        is_neuron = node.op == "call_module" and isinstance(gm.get_submodule(node.target), (nn.ReLU, IFNeuron))
        temporal[node.name] = is_neuron or any(temporal[n.name] for n in node.all_input_nodes)
    return temporal


def coverage_table(gm: torch.fx.GraphModule, records: list[PassRecord]) -> list[CoverageRow]:
    """One row per node; raises UnsupportedLayerError on the first node without a rule."""
    rows = [CoverageRow(r.node, r.target, r.status, r.reason) for r in records if r.status in ("folded", "removed")]
    temporal = _depends_on_neuron(gm)
    constant = {}
    for node in gm.graph.nodes:
        constant[node.name] = node.op == "get_attr" or (node.op != "placeholder" and node.all_input_nodes != []
                                                         and all(constant[n.name] for n in node.all_input_nodes))
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        handler = HANDLERS.lookup(node, gm)
        if handler.needs_constant_operand:
            activation_operands = [n for n in node.all_input_nodes if not constant[n.name]]
            if len(activation_operands) > 1:
                raise UnsupportedLayerError(
                    f"Layer '{node.name}' ({describe_target(node, gm)}) multiplies two activations, which is not "
                    "affine and has no spiking equivalent in rate coding."
                )
        role = handler.role
        if role == "maxpool" and not temporal[node.name]:
            rows.append(CoverageRow(node.name, describe_target(node, gm), "passed through",
                                    "max pooling of the analog input: computed once per sample"))
            continue
        reason = REASON_BY_ROLE.get(role, "")
        if role == "maxpool":
            reason = "max pooling -> spiking gate (largest accumulated input passes)"
        if role == "synapse" and not temporal[node.name]:
            reason = "weighted layer on analog input: computed once per sample (MACs)"
        rows.append(CoverageRow(node.name, describe_target(node, gm), STATUS_BY_ROLE[role], reason))
    if not any(HANDLERS.find(n, gm) is not None and HANDLERS.find(n, gm).role in ("neuron", "spiking")
               for n in gm.graph.nodes):
        raise UnsupportedLayerError("The model has no ReLU, so there is nothing to convert into spiking neurons; "
                                    "snnconv converts plain-ReLU networks.")
    return rows


def to_spiking(gm: torch.fx.GraphModule, thresholds: dict[str, torch.Tensor], half_init: bool,
               signed: bool = False) -> torch.fx.GraphModule:
    """A copy of the normalized ANN ``gm`` with each ReLU replaced by an IF neuron (with signed spikes if
    ``signed``) and each max pooling that sees spikes by a gate. The result still computes the ANN when
    called directly."""
    snn = copy.deepcopy(gm)
    temporal = _depends_on_neuron(snn)
    for node in snn.graph.nodes:
        if node.op != "call_module":
            continue
        module = snn.get_submodule(node.target)
        if isinstance(module, nn.ReLU):
            if node.name not in thresholds:
                raise UnsupportedLayerError(f"Layer '{node.name}' (ReLU) saw no calibration data, so it has no threshold.")
            _set_submodule(snn, node.target, IFNeuron(thresholds[node.name], half_init=half_init, signed=signed))
        elif isinstance(module, nn.MaxPool2d) and temporal[node.name]:
            _set_submodule(snn, node.target, MaxPoolGate.from_maxpool(module))
    snn.recompile()
    check_fully_converted(snn)
    return snn.eval()


def check_fully_converted(gm: torch.fx.GraphModule) -> None:
    """Fail if any ReLU-like node (module, function or method) is left in a converted graph."""
    for node in gm.graph.nodes:
        handler = HANDLERS.find(node, gm)
        if handler is not None and handler.role == "neuron":
            raise UnsupportedLayerError(
                f"Layer '{node.name}' ({describe_target(node, gm)}) is still a ReLU after conversion."
            )


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, child = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
