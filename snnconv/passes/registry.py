"""Graph passes with a declared contract.

A pass takes a GraphModule, rewrites it in place and returns a list of :class:`PassRecord` (what it
changed, for the coverage table). ``preserves_computation`` is a promise that the ANN computes the
same function before and after (up to float rounding); tests/test_passes.py holds every registered
pass to its promise on a set of named tiny models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.fx


@dataclass(frozen=True)
class PassRecord:
    node: str  # the node the pass changed (its name before the change)
    target: str  # its type, as describe_target names it
    status: str  # "folded" | "removed" | "rewritten"
    reason: str


@dataclass(frozen=True)
class GraphPass:
    name: str
    fn: Callable[[torch.fx.GraphModule], list[PassRecord]]
    preserves_computation: bool
    description: str

    def __call__(self, gm: torch.fx.GraphModule) -> list[PassRecord]:
        records = self.fn(gm)
        gm.graph.lint()
        gm.recompile()
        return records


PASSES: dict[str, GraphPass] = {}


def register_pass(name: str, *, preserves_computation: bool, description: str):
    def decorate(fn):
        if name in PASSES:
            raise ValueError(f"Pass '{name}' is registered already.")
        PASSES[name] = GraphPass(name, fn, preserves_computation, description)
        return fn

    return decorate
