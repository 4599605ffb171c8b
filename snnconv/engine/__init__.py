"""The time engine: chunked streaming over time, per-sample early exit, per-layer statistics."""
from .program import Program, compile_program
from .replay import Resume, Trace
from .simulate import Crossing, Engine, ExitPolicy, TimePlan

__all__ = ["Crossing", "Engine", "ExitPolicy", "TimePlan", "Program", "Resume", "Trace", "compile_program"]
