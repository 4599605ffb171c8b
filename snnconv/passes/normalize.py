"""Normalization passes: bring any traced CNN to the canonical form conversion expects.

Canonical form: every ReLU is its own ``nn.ReLU`` module (one per use site, so a shared module
becomes several neuron layers), BatchNorm that follows a convolution or linear layer is folded into
it, dropout is gone, in-place arithmetic is out of place, and a max pooling applied before a ReLU is
moved after it (ReLU and max commute, so the spiking gate sees spikes).
"""
from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..handlers import HANDLERS, describe_target
from .registry import PassRecord, register_pass


def _unique_module_name(gm: torch.fx.GraphModule, base: str) -> str:
    name, index = base, 1
    while hasattr(gm, name):
        name, index = f"{base}_{index}", index + 1
    return name


def _replace_with_module(gm: torch.fx.GraphModule, node: torch.fx.Node, module: nn.Module, base: str, input_node) -> torch.fx.Node:
    name = _unique_module_name(gm, base)
    gm.add_module(name, module)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(name, (input_node,))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def _redirect_later_reads(gm: torch.fx.GraphModule, mutated, result: torch.fx.Node) -> None:
    """An in-place op changed ``mutated`` itself: once it is out of place, every node after it that
    reads ``mutated`` must read ``result`` instead (``y.add_(z)`` or ``torch.relu_(y)`` as a statement
    whose return value is discarded is common, and would otherwise simply vanish)."""
    if not isinstance(mutated, torch.fx.Node):
        return
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    mutated.replace_all_uses_with(result, delete_user_cb=lambda user: order[user] > order[result])


def _is_inplace_relu(node: torch.fx.Node, gm: torch.fx.GraphModule) -> bool:
    if node.op == "call_module":
        return bool(gm.get_submodule(node.target).inplace)
    if node.op == "call_method":
        return node.target == "relu_"
    return node.target is torch.relu_ or bool(node.kwargs.get("inplace")) or (len(node.args) > 1 and bool(node.args[1]))


@register_pass("remove_dropout", preserves_computation=True, description="drop dropout (identity in eval mode)")
def remove_dropout(gm: torch.fx.GraphModule) -> list[PassRecord]:
    records = []
    for node in list(gm.graph.nodes):
        handler = HANDLERS.find(node, gm)
        if handler is not None and handler.role == "removed":
            records.append(PassRecord(node.name, describe_target(node, gm), "removed", "identity in eval mode"))
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    return records


@register_pass("relu_to_modules", preserves_computation=True,
               description="one nn.ReLU module per ReLU use site (functional, method, in-place and shared modules)")
def relu_to_modules(gm: torch.fx.GraphModule) -> list[PassRecord]:
    records = []
    seen_modules: set[str] = set()
    for node in list(gm.graph.nodes):
        handler = HANDLERS.find(node, gm)
        if handler is None or handler.role != "neuron":
            continue
        if node.op == "call_module" and node.target not in seen_modules and not gm.get_submodule(node.target).inplace:
            seen_modules.add(node.target)
            continue
        what = describe_target(node, gm)
        base = node.name if node.op != "call_module" else node.target.replace(".", "_")
        records.append(PassRecord(node.name, what, "rewritten", "given its own ReLU module"))
        inplace = _is_inplace_relu(node, gm)
        new = _replace_with_module(gm, node, nn.ReLU(), base, node.args[0])
        if inplace:
            _redirect_later_reads(gm, new.args[0], new)
    gm.delete_all_unused_submodules()
    return records


_OUT_OF_PLACE = {operator.iadd: operator.add}
_OUT_OF_PLACE_METHODS = {"add_": "add"}


@register_pass("out_of_place", preserves_computation=True, description="in-place arithmetic becomes out-of-place")
def out_of_place(gm: torch.fx.GraphModule) -> list[PassRecord]:
    # The engine caches values that stay constant over time; an in-place op must never mutate them.
    records = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _OUT_OF_PLACE:
            node.target = _OUT_OF_PLACE[node.target]
        elif node.op == "call_method" and node.target in _OUT_OF_PLACE_METHODS:
            node.target = _OUT_OF_PLACE_METHODS[node.target]
        else:
            continue
        _redirect_later_reads(gm, node.args[0], node)
        records.append(PassRecord(node.name, describe_target(node, gm), "rewritten", "made out of place"))
    return records


def fold_bn_into(weighted: nn.Module, bn: nn.Module) -> None:
    """w' = w * gamma / sigma, b' = beta + (b - mu) * gamma / sigma, per output channel."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        weight = weighted.weight
        weighted.weight.copy_(weight * scale.view(-1, *([1] * (weight.dim() - 1))))
        bias = weighted.bias if weighted.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = shift + (bias - bn.running_mean) * scale
        if weighted.bias is None:
            weighted.bias = nn.Parameter(new_bias)
        else:
            weighted.bias.copy_(new_bias)


@register_pass("fold_batchnorm", preserves_computation=True,
               description="fold BatchNorm into the convolution or linear layer before it")
def fold_batchnorm(gm: torch.fx.GraphModule) -> list[PassRecord]:
    records = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        source = node.args[0]
        if not (isinstance(source, torch.fx.Node) and source.op == "call_module" and len(source.users) == 1):
            continue
        weighted = gm.get_submodule(source.target)
        bn = gm.get_submodule(node.target)
        if not isinstance(weighted, (nn.Conv1d, nn.Conv2d, nn.Linear)) or bn.running_mean is None:
            continue
        if weighted.weight.shape[0] != bn.num_features:
            continue
        fold_bn_into(weighted, bn)
        records.append(PassRecord(node.name, type(bn).__name__, "folded", f"into '{source.name}'"))
        node.replace_all_uses_with(source)
        gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    return records


@register_pass("maxpool_to_modules", preserves_computation=True, description="functional max pooling becomes nn.MaxPool2d")
def maxpool_to_modules(gm: torch.fx.GraphModule) -> list[PassRecord]:
    records = []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not F.max_pool2d:
            continue
        names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        bound = dict(zip(names, node.args[1:]))
        bound.update(node.kwargs)
        if bound.get("return_indices"):
            continue
        bound.pop("return_indices", None)
        records.append(PassRecord(node.name, "F.max_pool2d", "rewritten", "made an nn.MaxPool2d module"))
        _replace_with_module(gm, node, nn.MaxPool2d(**bound), node.name, node.args[0])
    return records


@register_pass("relu_before_maxpool", preserves_computation=True,
               description="max pooling followed by ReLU becomes ReLU followed by max pooling (they commute)")
def relu_before_maxpool(gm: torch.fx.GraphModule) -> list[PassRecord]:
    records = []
    for pool in list(gm.graph.nodes):
        if pool.op != "call_module" or not isinstance(gm.get_submodule(pool.target), nn.MaxPool2d):
            continue
        users = list(pool.users)
        if len(users) != 1 or users[0].op != "call_module" or not isinstance(gm.get_submodule(users[0].target), nn.ReLU):
            continue
        relu = users[0]
        # relu(pool(x)) -> pool(relu(x)): the ReLU now reads x, the pool reads the ReLU, users read the pool
        relu.replace_all_uses_with(pool)
        relu.args = (pool.args[0],)
        pool.args = (relu,)
        pool.prepend(relu)  # keep the node list topologically ordered
        records.append(PassRecord(pool.name, "MaxPool2d", "rewritten", f"moved after ReLU '{relu.name}'"))
    return records


@register_pass("maxpool_to_avgpool", preserves_computation=False,
               description="max pooling becomes average pooling of the same geometry (changes the ANN)")
def maxpool_to_avgpool(gm: torch.fx.GraphModule) -> list[PassRecord]:
    records = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), nn.MaxPool2d):
            continue
        pool = gm.get_submodule(node.target)
        if pool.dilation not in (1, (1, 1)):
            continue
        avg = nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode, count_include_pad=False)
        records.append(PassRecord(node.name, "MaxPool2d", "rewritten", "replaced by AvgPool2d (--maxpool avg)"))
        _replace_with_module(gm, node, avg, node.target.replace(".", "_") + "_avg", node.args[0])
    gm.delete_all_unused_submodules()
    return records


NORMALIZE_ORDER = ("remove_dropout", "out_of_place", "relu_to_modules", "maxpool_to_modules", "fold_batchnorm",
                   "relu_before_maxpool")
