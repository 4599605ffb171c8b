"""Neuron dynamics: pure step functions with explicit state, and modules that bind their parameters."""
from .if_neuron import IFNeuron, crossing_fraction, if_step, if_step_, if_step_timed_, signed_if_step_
from .maxpool_gate import MaxPoolGate, maxpool_gate_step
from .surrogate import if_step_surrogate, signed_if_step_surrogate

__all__ = ["IFNeuron", "if_step", "if_step_", "if_step_timed_", "signed_if_step_", "crossing_fraction", "MaxPoolGate", "maxpool_gate_step",
           "if_step_surrogate", "signed_if_step_surrogate"]
