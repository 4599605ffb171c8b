"""Compile a converted GraphModule into a program the time engine runs chunk by chunk.

Each graph node becomes one :class:`Op`. An op is *static* when nothing it reads depends on a
neuron: with direct (analog) input encoding its value is the same at every time step, so the engine
computes it once per sample. All other ops are *temporal*: stateless ones (convolution, pooling,
add, ...) run once per chunk on the chunk's steps folded into the batch dimension; stateful ones
(neurons, max-pool gates) loop over the steps of the chunk.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx
from torch import nn

from ..errors import UnsupportedLayerError
from ..handlers import HANDLERS, describe_target
from ..neurons import IFNeuron, MaxPoolGate


@dataclass
class Op:
    node: torch.fx.Node
    kind: str  # "input" | "constant" | "stateless" | "neuron" | "gate" | "output"
    static: bool
    module: nn.Module | None = None
    role: str | None = None  # handler role for call_* nodes
    batched: bool = True  # has a batch dimension (depends on the input); constants do not
    release: list[str] = field(default_factory=list)  # values no longer needed after this op

    @property
    def name(self) -> str:
        return self.node.name


@dataclass
class Program:
    ops: list[Op]
    neuron_ops: list[Op]
    synapse_ops: list[Op]  # weighted layers
    output: Op


def compile_program(gm: torch.fx.GraphModule) -> Program:
    ops: list[Op] = []
    static: dict[str, bool] = {}
    batched: dict[str, bool] = {}
    for node in gm.graph.nodes:
        inputs_static = all(static[n.name] for n in node.all_input_nodes)
        if node.op == "placeholder":
            op = Op(node, "input", True)
        elif node.op == "get_attr":
            op = Op(node, "constant", True)
        elif node.op == "output":
            op = Op(node, "output", inputs_static)
        else:
            handler = HANDLERS.lookup(node, gm)
            module = gm.get_submodule(node.target) if node.op == "call_module" else None
            if isinstance(module, IFNeuron):
                op = Op(node, "neuron", False, module, handler.role)
            elif isinstance(module, MaxPoolGate) and not inputs_static:
                op = Op(node, "gate", False, module, handler.role)
            elif handler.role in ("neuron", "maxpool") and not inputs_static:
                raise UnsupportedLayerError(
                    f"Layer '{node.name}' ({describe_target(node, gm)}) was not converted; convert the network "
                    "with snnconv.convert before simulating it."
                )
            else:
                op = Op(node, "stateless", inputs_static, module, handler.role)
        op.batched = node.op == "placeholder" or any(batched[n.name] for n in node.all_input_nodes)
        batched[node.name] = op.batched
        static[node.name] = op.static
        ops.append(op)
    output = ops[-1]
    if output.static:
        raise UnsupportedLayerError("The network has no ReLU between its input and output, so there is nothing to "
                                    "convert into spiking neurons.")
    _plan_releases(ops)
    return Program(
        ops=ops,
        neuron_ops=[op for op in ops if op.kind in ("neuron", "gate")],
        synapse_ops=[op for op in ops if op.role == "synapse"],
        output=output,
    )


def _plan_releases(ops: list[Op]) -> None:
    """Temporal values are freed right after their last reader, so a chunk holds few activations at once."""
    last_reader: dict[str, int] = {}
    for index, op in enumerate(ops):
        for source in op.node.all_input_nodes:
            last_reader[source.name] = index
    static_names = {op.name for op in ops if op.static}
    for name, index in last_reader.items():
        if name not in static_names:
            ops[index].release.append(name)


def call_op(graph: torch.fx.GraphModule, op: Op, args, kwargs):
    """Run one graph node on values whose batch dimension holds time steps too (row = step * batch + sample)."""
    node = op.node
    try:
        if node.op == "call_module":
            return op.module(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    except Exception as exc:
        raise UnsupportedLayerError(
            f"Layer '{node.name}' ({describe_target(node, graph)}) failed when time steps are folded into "
            f"the batch dimension ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); it "
            "probably depends on the batch size, e.g. a reshape to a fixed batch."
        ) from exc


def fetch_attr(module: nn.Module, target: str):
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
