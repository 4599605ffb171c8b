"""The one table that says how each kind of graph node is handled in conversion.

A node's key is its module class (call_module), its function (call_function) or its method name
(call_method). Each entry names a role:

- ``neuron``:  a ReLU; converted into an integrate-and-fire layer.
- ``maxpool``: converted into a spiking max-pool gate where it sees spikes (analog input: unchanged).
- ``synapse``: a weighted layer (convolution, linear); passed through, its synaptic operations counted.
- ``linear``:  an affine, batch-independent op (pooling, add, concat, reshape, padding, slicing, ...);
               passed through, because it commutes with averaging over time steps.
- ``shape``:   produces shape metadata (``x.size(1)``), not activations.
- ``removed``: eliminated by a normalization pass (dropout in eval mode).
- ``spiking``: a node that is already spiking (an IF neuron or gate of a converted network).

Anything without an entry raises :class:`UnsupportedLayerError` naming the node and its type.
Registering a key twice is an error: a table that silently overrides itself is how converters
forget layers.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedLayerError
from ..neurons import IFNeuron, MaxPoolGate

ROLES = ("neuron", "maxpool", "synapse", "linear", "shape", "removed", "spiking")


@dataclass(frozen=True)
class Handler:
    role: str
    name: str  # stable name of the function / method / module type, used in manifests and coverage
    needs_constant_operand: bool = False  # products are affine only when one factor is not an activation

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"Unknown handler role '{self.role}'.")


class HandlerTable:
    def __init__(self):
        self._modules: dict[type, Handler] = {}
        self._functions: dict[Callable, Handler] = {}
        self._methods: dict[str, Handler] = {}
        self._functions_by_name: dict[str, Callable] = {}
        self._modules_by_name: dict[str, type] = {}
        self._module_fields: dict[type, tuple[str, ...]] = {}

    def _add(self, table: dict, key, handler: Handler):
        if key in table:
            raise ValueError(f"A handler for {key!r} is registered already.")
        table[key] = handler

    def module(self, cls: type, role: str, fields: tuple[str, ...] = ()) -> None:
        """``fields``: constructor arguments read back from the module's attributes, so artifacts can
        rebuild it from plain data (modules with a ``config()`` method describe themselves)."""
        self._add(self._modules, cls, Handler(role, cls.__name__))
        self._modules_by_name[cls.__name__] = cls
        self._module_fields[cls] = fields

    def module_config(self, module: nn.Module) -> dict:
        if hasattr(module, "config") and callable(module.config):
            return module.config()
        config = {}
        for name in self._module_fields[type(module)]:
            value = getattr(module, name)
            config[name] = (value is not None) if name == "bias" else value
        return config

    def build_module(self, type_name: str, config: dict) -> nn.Module:
        cls = self._modules_by_name[type_name]
        if hasattr(cls, "from_config"):
            return cls.from_config(config)
        return cls(**config)

    def function(self, fn: Callable, name: str, role: str, needs_constant_operand: bool = False) -> None:
        self._add(self._functions, fn, Handler(role, name, needs_constant_operand))
        self._functions_by_name.setdefault(name, fn)

    def method(self, name: str, role: str, needs_constant_operand: bool = False) -> None:
        self._add(self._methods, name, Handler(role, f"Tensor.{name}", needs_constant_operand))

    def find(self, node: torch.fx.Node, gm: torch.fx.GraphModule) -> Handler | None:
        if node.op == "call_module":
            return self._modules.get(type(gm.get_submodule(node.target)))
        if node.op == "call_function":
            return self._functions.get(node.target)
        if node.op == "call_method":
            return self._methods.get(node.target)
        return None

    def lookup(self, node: torch.fx.Node, gm: torch.fx.GraphModule) -> Handler:
        handler = self.find(node, gm)
        if handler is None:
            raise UnsupportedLayerError(
                f"Layer '{node.name}' ({describe_target(node, gm)}) has no conversion rule; snnconv converts "
                "plain-ReLU CNNs, so replace it or open an issue asking for a handler."
            )
        return handler

    def function_by_name(self, name: str) -> Callable:
        return self._functions_by_name[name]

    def module_class_by_name(self, name: str) -> type:
        return self._modules_by_name[name]

    def function_name(self, fn: Callable) -> str:
        return self._functions[fn].name


def describe_target(node: torch.fx.Node, gm: torch.fx.GraphModule) -> str:
    """The node's type as a user would name it: ``Conv2d``, ``torch.relu``, ``Tensor.view``."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_function":
        module = getattr(node.target, "__module__", None) or ""
        return f"{module}.{getattr(node.target, '__name__', repr(node.target))}".lstrip(".")
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return node.op


HANDLERS = HandlerTable()

_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias", "padding_mode")
_BN = ("num_features", "eps", "momentum", "affine", "track_running_stats")
_AVG = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
HANDLERS.module(nn.ReLU, "neuron", ("inplace",))
HANDLERS.module(nn.MaxPool2d, "maxpool", ("kernel_size", "stride", "padding", "dilation", "ceil_mode"))
HANDLERS.module(nn.Conv1d, "synapse", _CONV)
HANDLERS.module(nn.Conv2d, "synapse", _CONV)
HANDLERS.module(nn.Linear, "synapse", ("in_features", "out_features", "bias"))
HANDLERS.module(nn.BatchNorm1d, "linear", _BN)
HANDLERS.module(nn.BatchNorm2d, "linear", _BN)
HANDLERS.module(nn.AvgPool1d, "linear", _AVG)
HANDLERS.module(nn.AvgPool2d, "linear", _AVG + ("divisor_override",))
HANDLERS.module(nn.AdaptiveAvgPool1d, "linear", ("output_size",))
HANDLERS.module(nn.AdaptiveAvgPool2d, "linear", ("output_size",))
HANDLERS.module(nn.Flatten, "linear", ("start_dim", "end_dim"))
HANDLERS.module(nn.Unflatten, "linear", ("dim", "unflattened_size"))
HANDLERS.module(nn.Identity, "linear")
HANDLERS.module(nn.ZeroPad2d, "linear", ("padding",))
HANDLERS.module(nn.ConstantPad2d, "linear", ("padding", "value"))
for _cls in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout):
    HANDLERS.module(_cls, "removed", ("p",))
HANDLERS.module(IFNeuron, "spiking")
HANDLERS.module(MaxPoolGate, "spiking")

for _fn, _name in ((F.relu, "F.relu"), (torch.relu, "torch.relu"), (torch.relu_, "torch.relu_")):
    HANDLERS.function(_fn, _name, "neuron")
HANDLERS.function(F.max_pool2d, "F.max_pool2d", "maxpool")
for _fn, _name in ((operator.add, "operator.add"), (torch.add, "torch.add"), (operator.iadd, "operator.iadd"),
                   (operator.sub, "operator.sub"), (torch.sub, "torch.sub"), (operator.neg, "operator.neg"),
                   (torch.flatten, "torch.flatten"), (torch.cat, "torch.cat"), (torch.concat, "torch.concat"),
                   (torch.reshape, "torch.reshape"), (torch.mean, "torch.mean"), (torch.squeeze, "torch.squeeze"),
                   (torch.unsqueeze, "torch.unsqueeze"), (operator.getitem, "operator.getitem"),
                   (F.avg_pool1d, "F.avg_pool1d"), (F.avg_pool2d, "F.avg_pool2d"),
                   (F.adaptive_avg_pool1d, "F.adaptive_avg_pool1d"), (F.adaptive_avg_pool2d, "F.adaptive_avg_pool2d"),
                   (F.pad, "F.pad")):
    HANDLERS.function(_fn, _name, "linear")
for _fn, _name in ((operator.mul, "operator.mul"), (torch.mul, "torch.mul"), (operator.truediv, "operator.truediv"),
                   (torch.div, "torch.div")):
    HANDLERS.function(_fn, _name, "linear", needs_constant_operand=True)
for _fn, _name in ((F.dropout, "F.dropout"), (F.dropout2d, "F.dropout2d")):
    HANDLERS.function(_fn, _name, "removed")
HANDLERS.function(getattr, "getattr", "shape")

for _name in ("relu", "relu_"):
    HANDLERS.method(_name, "neuron")
for _name in ("view", "reshape", "flatten", "contiguous", "mean", "add", "add_", "sub", "squeeze", "unsqueeze",
              "permute", "transpose", "clone", "float"):
    HANDLERS.method(_name, "linear")
for _name in ("mul", "div"):
    HANDLERS.method(_name, "linear", needs_constant_operand=True)
for _name in ("size", "dim"):
    HANDLERS.method(_name, "shape")
