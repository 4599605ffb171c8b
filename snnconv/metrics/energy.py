"""Energy models: per-operation costs in picojoules, and the normalized neuromorphic model.

The operation-count model charges every multiply-accumulate (MAC) of a layer that reads analog values,
every accumulate (AC) of a layer that reads spikes, and optionally one zero check per spiking input
element and time step (event-driven hardware that tests each 1-bit input before accumulating). The
ANN is charged one MAC per dense multiply-accumulate of every weighted layer. All counts come from a
:class:`~snnconv.results.SimulationResult` and an :class:`~snnconv.results.AnnResult`; all costs come
from an :class:`EnergyModel`. Formulas and conventions: docs/metrics.md.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..results import AnnResult, SimulationResult, SynapticLayerStats


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in picojoules (pJ)."""

    name: str
    e_mac_pj: float  # one multiply-accumulate
    e_ac_pj: float  # one accumulate (a spike reaching one synapse)
    e_zero_check_pj: float = 0.0  # testing one spiking input element for zero at one time step
    source: str = ""

    def __post_init__(self):
        for key in ("e_mac_pj", "e_ac_pj", "e_zero_check_pj"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"Energy model '{self.name}': {key} must be a finite number >= 0 pJ, got {value!r}.")


ENERGY_PRESETS: dict[str, EnergyModel] = {
    "45nm": EnergyModel(
        name="45nm", e_mac_pj=4.6, e_ac_pj=0.9, e_zero_check_pj=0.0,
        source="Horowitz, 'Computing's energy problem', ISSCC 2014: 45 nm CMOS, 32-bit float MAC and add"),
    "fpga28": EnergyModel(
        name="fpga28", e_mac_pj=13.32, e_ac_pj=1.8, e_zero_check_pj=0.05,
        source="Datta et al., SNNs with dynamic time steps for ViTs (arXiv 2311.16456): 28 nm Kintex-7 FPGA, "
               "floating point, 0.05 pJ zero check per spiking input element and step"),
}

_REQUIRED_KEYS = ("e_mac_pj", "e_ac_pj")
_OPTIONAL_KEYS = ("e_zero_check_pj", "name", "source")


def load_energy_model(name_or_path: str | Path) -> EnergyModel:
    """A preset by name (``45nm``, ``fpga28``) or a user TOML/JSON file.

    The file holds ``e_mac_pj`` and ``e_ac_pj`` (pJ) and optionally ``e_zero_check_pj`` (pJ, default 0),
    ``name`` (default: the file's stem) and ``source`` (default: the file's path).
    """
    if isinstance(name_or_path, str) and name_or_path in ENERGY_PRESETS:
        return ENERGY_PRESETS[name_or_path]
    path = Path(name_or_path)
    presets = ", ".join(ENERGY_PRESETS)
    if not path.is_file():
        if path.suffix.lower() in (".toml", ".json") or len(path.parts) > 1:
            raise ConfigError(f"Energy file '{path}' does not exist; pass an existing .toml or .json file "
                              f"or one of the presets {presets}.")
        raise ConfigError(f"Unknown energy preset '{name_or_path}'; use one of {presets} "
                          "or the path of a .toml or .json file.")
    data = _read_energy_file(path)
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise ConfigError(f"Energy file '{path}' lacks {', '.join(missing)}; add the energy per operation in pJ.")
    unknown = sorted(set(data) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        raise ConfigError(f"Energy file '{path}' has unknown key(s) {', '.join(unknown)}; allowed keys are "
                          f"{', '.join(_REQUIRED_KEYS + _OPTIONAL_KEYS)}.")
    for key in ("name", "source"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"Energy file '{path}': {key} must be a string, got {data[key]!r}.")
    try:
        return EnergyModel(
            name=data.get("name", path.stem), e_mac_pj=data["e_mac_pj"], e_ac_pj=data["e_ac_pj"],
            e_zero_check_pj=data.get("e_zero_check_pj", 0.0), source=data.get("source", f"user file {path}"))
    except ConfigError as exc:
        raise ConfigError(f"Energy file '{path}' is invalid: {exc}") from None


def _read_energy_file(path: Path) -> dict:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"Energy file '{path}' must end in .toml or .json.")
    try:
        import tomllib  # standard library from Python 3.11; imported here so JSON files work on 3.10
    except ModuleNotFoundError:
        if suffix == ".toml":
            raise ConfigError(f"Energy file '{path}' is TOML, which needs Python 3.11 or later; "
                              "write it as JSON with the same keys.") from None
        tomllib = None
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:  # TOMLDecodeError, JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"Energy file '{path}' cannot be parsed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); fix its syntax.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Energy file '{path}' must hold a table/object of keys, not {type(data).__name__}.")
    return data


# ---------------------------------------------------------------------------- normalized neuromorphic model

@dataclass(frozen=True)
class NeuromorphicCoefficients:
    """Weights of the dynamic (per spike) and static (per time step) energy, each normalized to a baseline."""

    a_dyn: float
    a_sta: float


NEUROMORPHIC_SOURCE = "from Park et al. DAC 2019 (arXiv 1809.03142), not re-verified"
NEUROMORPHIC_PLATFORMS: dict[str, NeuromorphicCoefficients] = {
    "truenorth": NeuromorphicCoefficients(a_dyn=0.4, a_sta=0.6),
    "spinnaker": NeuromorphicCoefficients(a_dyn=0.64, a_sta=0.36),
}


def neuromorphic_energy(spikes_per_sample: float, time_steps: float, baseline_spikes: float,
                        baseline_time_steps: float, platform: str) -> float:
    """Dimensionless energy ``a_dyn * spikes / baseline_spikes + a_sta * time_steps / baseline_time_steps``.

    1.0 is the baseline's energy (a_dyn + a_sta = 1). Coefficients: :data:`NEUROMORPHIC_PLATFORMS`,
    from Park et al. DAC 2019 (arXiv 1809.03142), not re-verified.
    """
    if platform not in NEUROMORPHIC_PLATFORMS:
        raise ConfigError(f"Unknown neuromorphic platform '{platform}'; use one of "
                          f"{', '.join(NEUROMORPHIC_PLATFORMS)}.")
    if not baseline_spikes > 0 or not baseline_time_steps > 0:
        raise ConfigError(f"The neuromorphic energy baseline needs positive spikes and time steps, got "
                          f"{baseline_spikes} spikes and {baseline_time_steps} time steps.")
    coefficients = NEUROMORPHIC_PLATFORMS[platform]
    return (coefficients.a_dyn * spikes_per_sample / baseline_spikes
            + coefficients.a_sta * time_steps / baseline_time_steps)


# ---------------------------------------------------------------------------- operation-count model

def check_time_step(sim: SimulationResult, t: int | None) -> int:
    """``t`` itself, or the simulation's T when None; a ConfigError when outside 1..T."""
    if t is None:
        return sim.time_steps
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t <= sim.time_steps:
        raise ConfigError(f"Time step t={t!r} is outside the simulated range 1..{sim.time_steps}; "
                          "pick a t the simulation covered.")
    return int(t)


def layer_steps_at(t: int | np.ndarray, layer_time_steps: int, readout_steps: int):
    """Steps a layer with window T_l has run when the readout has run t of its ``readout_steps``.

    Every layer advances through its window in proportion (the time engine's schedule, ALGORITHMS.md 6.1):
    ``ceil(t * T_l / T_readout)``; with a uniform T that is t.
    """
    return np.minimum(layer_time_steps, -(-np.asarray(t) * layer_time_steps // readout_steps))


def mean_active_steps(sim: SimulationResult, t: int, layer_time_steps: int, active_steps: int | None = None) -> float:
    """Steps a layer with T_l = ``layer_time_steps`` ran per sample within readout steps 1..t.

    :func:`layer_steps_at` of t, and with an exit policy the mean over samples of it at min(t, exit step),
    because exited samples leave the batch. ``active_steps`` (a DTS prefix mask) caps it: the layer stopped
    after its first ``active_steps`` steps.
    """
    cap = layer_time_steps if active_steps is None else active_steps
    if sim.exit_steps is not None and len(sim.exit_steps):
        reached = np.minimum(np.asarray(sim.exit_steps), t)
        return float(np.minimum(layer_steps_at(reached, layer_time_steps, sim.time_steps), cap).mean())
    return float(min(layer_steps_at(t, layer_time_steps, sim.time_steps), cap))


def layer_active_steps(sim: SimulationResult, t: int, layer) -> float:
    """Steps one layer worked within readout steps 1..t, per sample.

    A TTFS layer records the global steps it is busy (``active_window``): the count is the part of that
    span before t. Otherwise it is :func:`mean_active_steps` of the layer's window (capped by a DTS prefix mask).
    """
    if getattr(layer, "active_window", None) is not None:
        start, end = layer.active_window
        return float(min(max(t - start, 0), end - start))
    return mean_active_steps(sim, t, layer.time_steps, layer.active_steps)


@dataclass(frozen=True)
class LayerEnergy:
    """One weighted layer's work and energy per sample."""

    name: str
    kind: str  # "conv" | "linear"
    spiking_input: bool
    time_steps: int  # T_l
    macs: float  # SNN multiply-accumulates per sample (analog input only, once per sample)
    acs: float  # SNN accumulates per sample (spiking input only)
    zero_checks: float  # SNN zero checks per sample (spiking input only)
    energy_pj: float  # SNN energy per sample, pJ
    ann_macs: int | None  # dense ANN MACs per sample (None when the ANN result lacks this layer)
    ann_energy_pj: float | None  # ANN energy per sample, pJ


@dataclass(frozen=True)
class EnergyBreakdown:
    """Per-sample operation counts and energy of the SNN (steps 1..time_steps) and of the ANN."""

    model: EnergyModel
    time_steps: int
    layers: tuple[LayerEnergy, ...]
    macs_snn: float
    acs_snn: float
    zero_checks_snn: float
    energy_pj_snn: float
    macs_ann: float
    energy_pj_ann: float
    ann_macs_source: str  # "ann result" or "simulation" (dense MACs of the same layers, when the ANN has none)

    @property
    def mac_energy_pj_snn(self) -> float:
        return self.macs_snn * self.model.e_mac_pj

    @property
    def ac_energy_pj_snn(self) -> float:
        return self.acs_snn * self.model.e_ac_pj

    @property
    def zero_check_energy_pj_snn(self) -> float:
        return self.zero_checks_snn * self.model.e_zero_check_pj

    @property
    def ratio_ann_over_snn(self) -> float:
        """ANN energy / SNN energy; > 1 means the SNN saves energy."""
        if self.energy_pj_snn > 0:
            return self.energy_pj_ann / self.energy_pj_snn
        return math.inf if self.energy_pj_ann > 0 else math.nan


def layer_work(sim: SimulationResult, layer: SynapticLayerStats, t: int) -> tuple[float, float, float]:
    """(MACs, ACs, zero checks) per sample of one weighted layer over steps 1..t."""
    if not layer.spiking_input:
        return float(layer.macs_per_sample_dense), 0.0, 0.0
    samples = max(sim.samples, 1)
    acs = float(np.asarray(layer.ops_per_step)[:layer_steps_at(t, layer.time_steps, sim.time_steps)].sum()) / samples
    zero_checks = layer.input_elements * layer_active_steps(sim, t, layer)
    return 0.0, acs, zero_checks


def energy_breakdown(sim: SimulationResult, ann: AnnResult, model: EnergyModel,
                     t: int | None = None) -> EnergyBreakdown:
    """Energy per sample of the SNN over steps 1..t (default: all T) and of the ANN, under ``model``.

    SNN: ``E_MAC * MACs(analog-input layers) + E_AC * ACs(spiking-input layers) + E_zero * zero checks``,
    with ACs = the layer's synaptic ops of steps 1..t / samples and zero checks = input elements x steps run.
    ANN: ``E_MAC * sum of dense MACs`` from ``ann.macs_per_sample``; when that is empty, the dense MACs the
    simulation measured for the same weighted layers are used (``ann_macs_source`` says which).
    """
    t = check_time_step(sim, t)
    ann_macs_source = "ann result" if ann.macs_per_sample else "simulation"
    rows = []
    for layer in sim.synaptic_layers:
        macs, acs, zero_checks = layer_work(sim, layer, t)
        if ann.macs_per_sample:
            ann_macs = ann.macs_per_sample.get(layer.name)
        else:
            ann_macs = layer.macs_per_sample_dense
        rows.append(LayerEnergy(
            name=layer.name, kind=layer.kind, spiking_input=layer.spiking_input, time_steps=layer.time_steps,
            macs=macs, acs=acs, zero_checks=zero_checks,
            energy_pj=macs * model.e_mac_pj + acs * model.e_ac_pj + zero_checks * model.e_zero_check_pj,
            ann_macs=ann_macs, ann_energy_pj=None if ann_macs is None else ann_macs * model.e_mac_pj))
    if ann.macs_per_sample:
        macs_ann = float(sum(ann.macs_per_sample.values()))
    else:
        macs_ann = float(sum(layer.macs_per_sample_dense for layer in sim.synaptic_layers))
    return EnergyBreakdown(
        model=model, time_steps=t, layers=tuple(rows),
        macs_snn=sum(r.macs for r in rows), acs_snn=sum(r.acs for r in rows),
        zero_checks_snn=sum(r.zero_checks for r in rows), energy_pj_snn=sum(r.energy_pj for r in rows),
        macs_ann=macs_ann, energy_pj_ann=macs_ann * model.e_mac_pj, ann_macs_source=ann_macs_source)
