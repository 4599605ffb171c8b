"""Coverage: one registry keyed by layer type says how every node is converted."""
from .registry import HANDLERS, Handler, HandlerTable, describe_target

__all__ = ["HANDLERS", "Handler", "HandlerTable", "describe_target"]
