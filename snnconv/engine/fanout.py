"""Exact fan-out of every input element of a weighted layer.

The fan-out of input element i is the number of (output element, weight) pairs it takes part in:
for a linear layer, out_features; for a convolution, out_channels x kernel positions that land on i,
which is smaller at borders and depends on stride, padding, dilation and groups. It is the gradient,
with respect to the input, of the sum of the layer's outputs when every weight is one and the bias is
zero, so the layer's own forward computes it whatever its geometry.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


def input_fanout(layer: nn.Module, per_sample_shape: torch.Size) -> torch.Tensor:
    """Fan-out per input element, shape ``per_sample_shape`` (float, exact integers)."""
    params = {name: torch.ones_like(p) if name == "weight" else torch.zeros_like(p)
              for name, p in layer.named_parameters(recurse=False)}
    probe = torch.zeros((1, *per_sample_shape), dtype=torch.float64, device=next(iter(params.values())).device,
                        requires_grad=True)
    params = {name: p.to(torch.float64) for name, p in params.items()}
    with torch.enable_grad():
        out = functional_call(layer, params, (probe,))
        out.sum().backward()
    return probe.grad[0].to(torch.float32)


def dense_macs(layer: nn.Module, per_sample_out_shape: torch.Size) -> int:
    """Multiply-accumulates of one dense evaluation: output elements x inputs each one reads."""
    out_elements = int(torch.Size(per_sample_out_shape).numel())
    weight = layer.weight
    if isinstance(layer, nn.Linear):
        return out_elements * weight.shape[1]
    return out_elements * int(weight[0].numel())
