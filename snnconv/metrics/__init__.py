"""Metrics of a converted network: operation counts, energy models and report tables (docs/metrics.md)."""
from .energy import (ENERGY_PRESETS, NEUROMORPHIC_PLATFORMS, NEUROMORPHIC_SOURCE, EnergyBreakdown, EnergyModel,
                     LayerEnergy, NeuromorphicCoefficients, energy_breakdown, load_energy_model,
                     neuromorphic_energy)
from .summary import LAYER_COLUMNS, SUMMARY_KEYS, SWEEP_COLUMNS, layer_rows, summarize, sweep_rows

__all__ = [
    "ENERGY_PRESETS", "NEUROMORPHIC_PLATFORMS", "NEUROMORPHIC_SOURCE", "EnergyBreakdown", "EnergyModel",
    "LayerEnergy", "NeuromorphicCoefficients", "energy_breakdown", "load_energy_model", "neuromorphic_energy",
    "LAYER_COLUMNS", "SUMMARY_KEYS", "SWEEP_COLUMNS", "layer_rows", "summarize", "sweep_rows",
]
