"""Weight calibration (Li et al. 2021, "A Free Lunch From ANN", the weight step of their calibration code).

For one neuron layer l, the weighted layers that feed it (every conv / linear between l and the neuron
layers or graph inputs it reads) are refitted so that the layer's ideal spiking output, given the
SNN's real time-averaged inputs, matches the ANN:

    minimize  mean (CF(z(W)) - a_l)^2,   CF(z) = theta/T * clamp(floor(z T/theta + shift), 0, T)

where z(W) is the input current of layer l computed from the time-averaged outputs of the neuron layers
it reads (its *sources*), a_l is the ANN activation, shift = 1/2 with V(0) = theta/2 (else 0), and the
floor passes gradients straight through. Adam, full batch, cosine-decayed learning rate; biases stay
fixed (the bias and potential steps that follow correct the mean). Layers see the inputs of the layers
already calibrated before them, so errors do not accumulate unseen.

The layers between neuron layers are linear, so their time average is the layer applied to the time
averages; a max-pool gate's outputs telescope (step t emits M_t - M_{t-1}, M the window maximum of the
accumulated input), so its average is the max pooling of the averaged input, which is what the gate
computes when the graph is called directly.
"""
from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..engine.program import fetch_attr
from ..neurons import IFNeuron

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class Segment:
    """The nodes computing one neuron layer's input current from its sources (neuron outputs, graph inputs)."""

    def __init__(self, graph: torch.fx.GraphModule, neuron_node: torch.fx.Node):
        self.graph = graph
        self.sources: list[torch.fx.Node] = []  # neuron layers read by the segment
        self.inputs: list[torch.fx.Node] = []  # graph placeholders read by the segment
        members: set[torch.fx.Node] = set()
        stack = [a for a in neuron_node.all_input_nodes]
        while stack:
            node = stack.pop()
            if node in members or node in self.sources or node in self.inputs:
                continue
            if node.op == "placeholder":
                self.inputs.append(node)
                continue
            module = graph.get_submodule(node.target) if node.op == "call_module" else None
            if isinstance(module, IFNeuron):
                self.sources.append(node)
                continue
            members.add(node)
            stack.extend(node.all_input_nodes)
        order = {node: i for i, node in enumerate(graph.graph.nodes)}
        self.nodes = sorted(members, key=order.__getitem__)
        self.output = neuron_node.args[0]
        self.weighted = [n for n in self.nodes if n.op == "call_module" and isinstance(graph.get_submodule(n.target), WEIGHTED)]

    def current(self, values: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """The layer's input current from ``values`` (source and input node name -> tensor), with the
        weighted layers' weights replaced by ``weights`` (module target -> tensor)."""
        env: dict[torch.fx.Node, torch.Tensor] = {n: values[n.name] for n in self.sources + self.inputs}
        load = lambda arg: torch.fx.node.map_arg(arg, env.__getitem__)  # noqa: E731
        for node in self.nodes:
            args, kwargs = load(node.args), load(node.kwargs)
            if node.op == "call_module":
                module = self.graph.get_submodule(node.target)
                if node.target in weights:
                    env[node] = functional_call(module, {"weight": weights[node.target]}, args, kwargs, strict=False)
                else:
                    env[node] = module(*args, **kwargs)
            elif node.op == "call_function":
                env[node] = node.target(*args, **kwargs)
            elif node.op == "call_method":
                env[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
            elif node.op == "get_attr":
                env[node] = fetch_attr(self.graph, node.target)
        return env[self.output]


def _floor_ste(v: torch.Tensor) -> torch.Tensor:
    return v + (torch.floor(v) - v).detach()


def fit_layer_weights(segment: Segment, neuron: IFNeuron, values: dict[str, torch.Tensor], target: torch.Tensor,
                      window: int, steps: int, lr: float) -> dict:
    """Refit the weighted layers of ``segment`` in place; returns the clip-floor error before and after.

    ``values``: time-averaged outputs of the segment's sources and the graph inputs on the calibration batch."""
    theta = neuron.broadcast(neuron.threshold, target.dim())
    shift = 0.5 if neuron.half_init else 0.0

    def clip_floor(current: torch.Tensor) -> torch.Tensor:
        return theta / window * torch.clamp(_floor_ste(current * window / theta + shift), 0, window)

    modules = {n.target: segment.graph.get_submodule(n.target) for n in segment.weighted}
    weights = {k: m.weight.detach().clone().requires_grad_(True) for k, m in modules.items()}
    with torch.no_grad():
        before = float(F.mse_loss(clip_floor(segment.current(values, weights)), target))
    optimizer = torch.optim.Adam(weights.values(), lr=lr)
    with torch.enable_grad():
        _descend(optimizer, steps, lr, lambda: F.mse_loss(clip_floor(segment.current(values, weights)), target))
    with torch.no_grad():
        after = float(F.mse_loss(clip_floor(segment.current(values, weights)), target))
        if after < before:
            for key, module in modules.items():
                module.weight.copy_(weights[key])
    return {"weight_layers": sorted(modules), "clip_floor_mse_before": before,
            "clip_floor_mse_after": min(before, after)}


def _descend(optimizer: torch.optim.Optimizer, steps: int, lr: float, loss_of) -> None:
    for step in range(steps):
        for group in optimizer.param_groups:  # cosine decay to zero over the steps
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = loss_of()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
