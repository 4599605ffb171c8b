"""`snnconv compress`: temporal compression of a converted artifact, evaluated beside its uncompressed self.

Each method takes an artifact and writes a new artifact with the standard reports plus the method's own
tables. The uncompressed network is evaluated on the same data in the same run, so every before/after
number comes from one measurement pass. The methods: ``teas`` (per-layer time steps, :mod:`.teas`),
``dts`` (learned per-layer time-step masks, :mod:`.dts`), ``seenn`` (per-sample early exit, :mod:`.seenn`) and
``ttfs`` (one spike per neuron, :mod:`.ttfs`).
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from .. import artifacts
from ..api import Evaluation, ProgressFactory, evaluate, resolve_device
from ..config import SimulationConfig
from ..data import DataConfig, LabeledData, load_data
from ..direct_network import FAMILY as DIRECT_FAMILY
from ..errors import ArtifactError, ConfigError, DataError, OutputError
from ..metrics import load_energy_model
from ..network import SpikingNetwork
from ..stages.dts import DtsConfig
from ..stages.seenn import ExitTrace, SeennConfig, decision_grid
from ..stages.teas import TeasConfig
from ..stages.ttfs import TTFSConfig
from ..workflows import RunResult, _check_artifact_output, _report, recorded_data, sweep_steps
from .teas import teas_rows, teas_summary, uniform_steps_matching  # noqa: F401  (re-exported for benchmarks)

METHODS = ("teas", "dts", "seenn", "ttfs")


@dataclass
class MethodOutcome:
    """What a method hands back to the common flow: the compressed network evaluated, and its own tables."""

    network: SpikingNetwork
    evaluation: Evaluation
    rows: list[dict]  # the method's table (per layer for TEAS, the alpha sweep for SEENN-I)
    extra_summary: dict
    write_tables: Callable[[Path], dict[str, Path]]  # writes the method's files into the report directory
    details: object  # TeasResult | DtsResult | SeennResult | the TTFS kernel fits


@dataclass
class CompressResult:
    run: RunResult
    method: str
    outcome: MethodOutcome


@dataclass
class CompressContext:
    """Everything a method needs, prepared once by :func:`run_compress`."""

    network: SpikingNetwork
    calibration: LabeledData
    holdout: LabeledData | None  # --holdout-data: where TEAS / SEENN measure their budget (else a calibration share)
    evaluation_data: LabeledData
    uniform: Evaluation
    trace: ExitTrace | None  # running output of every step of the uncompressed run (SEENN only)
    simulation: SimulationConfig
    energy: str
    device: torch.device
    progress: ProgressFactory | None
    note: Callable[[str], None]


def _with_normalization(data: DataConfig, network) -> DataConfig:
    norm = network.input_normalization
    if data.mean is None and norm.get("mean"):
        return replace(data, mean=tuple(norm["mean"]), std=tuple(norm["std"]))
    return data


def default_config(method: str):
    return {"teas": TeasConfig, "dts": DtsConfig, "seenn": SeennConfig, "ttfs": TTFSConfig}[method]()


def _check_method(method: str, config) -> None:
    if method not in METHODS:
        raise ConfigError(f"--method '{method}' is not available; choose from {', '.join(METHODS)}.")
    expected = type(default_config(method))
    if not isinstance(config, expected):
        raise ConfigError(f"--method {method} needs a {expected.__name__}, got {type(config).__name__}.")


def _check_holdout_options(method: str, holdout_data: DataConfig | None, holdout_samples: int | None) -> None:
    if holdout_data is None:
        if holdout_samples is not None:
            raise ConfigError("--holdout-samples needs --holdout-data, the data to take them from.")
        return
    if method not in ("teas", "seenn"):
        raise ConfigError(f"--holdout-data applies to --method teas and seenn, not to --method {method}.")
    if holdout_samples is not None and (isinstance(holdout_samples, bool) or not isinstance(holdout_samples, int)
                                        or holdout_samples <= 0):
        raise ConfigError(f"--holdout-samples must be a positive integer, got {holdout_samples!r}.")


def _disjoint_holdout(candidates: LabeledData, samples: int | None, seed: int, evaluation: LabeledData,
                      calibration: LabeledData, note: Callable[[str], None]) -> LabeledData:
    """The held-out split from ``candidates``: no image that is also evaluated (the budget would be met on the
    images it is reported on) or trained on / profiled, then ``samples`` of the rest."""
    try:
        kept, shared_evaluation = candidates.without(evaluation, "the evaluation data")
    except DataError:
        raise DataError(f"--holdout-data {candidates.description} holds only images that are also evaluated; "
                        "evaluate on part of them (--limit) or hold out other data.") from None
    kept, shared_calibration = kept.without(calibration, "the calibration data")
    holdout = kept.take(samples, seed)
    note(f"held-out split: {len(holdout)} samples of {candidates.description}, after leaving out "
         f"{shared_evaluation} shared with the evaluation data and {shared_calibration} with the calibration data")
    return holdout


def _uniform_run(network, data, simulation, progress, keep_trace: bool) -> tuple[Evaluation, ExitTrace | None]:
    outputs = []

    def keep(outcome: dict) -> None:
        outputs.append(outcome["output_trace"].cpu())

    uniform = evaluate(network, data, simulation, exit_policy=None, progress=progress,
                       on_batch=keep if keep_trace else None, trace_output=keep_trace)
    trace = (ExitTrace(outputs=torch.cat(outputs, dim=1), labels=data.y.clone(), decisions_for=decision_grid(network))
             if keep_trace else None)
    return uniform, trace


def run_compress(artifact: str | Path, method: str, *, output: Path, config=None,
                 calib_data: DataConfig | None = None, calib_samples: int | None = None,
                 holdout_data: DataConfig | None = None, holdout_samples: int | None = None,
                 data: DataConfig | None = None, energy: str = "45nm", batch_size: int = 256,
                 chunk_steps: int | None = None, device: str = "cpu", seed: int = 0, limit: int | None = None,
                 progress: ProgressFactory | None = None, note=None, checkpoint: Path | None = None,
                 resume: bool = False) -> CompressResult:
    """Compress an artifact with ``method`` (``config``: its TeasConfig / DtsConfig / SeennConfig; default options when
    None); write the new artifact and its reports to ``output``. Without ``calib_data``, the artifact's recorded
    calibration data is used: ``calib_samples`` of it when given, else as many as recorded. ``holdout_data``
    (TEAS and SEENN): the data their budget is measured on instead of a share of the calibration data, without
    any image of the evaluation or calibration data; ``holdout_samples`` of it (a seeded subset) when given."""
    artifact, output = Path(artifact), Path(output)
    note = note or (lambda _message: None)
    if method in METHODS and config is None:
        config = default_config(method)
    _check_method(method, config)
    _check_holdout_options(method, holdout_data, holdout_samples)
    if not artifacts.is_artifact(artifact):
        raise ArtifactError(f"'{artifact}' is not an snnconv artifact (no manifest.json); run snnconv convert first.")
    if output.resolve() == artifact.resolve():
        raise OutputError(f"-o '{output}' is the artifact being compressed, which would be replaced by its compressed "
                          "self; choose another -o directory.")
    if artifacts.family(artifact) == DIRECT_FAMILY:
        from ..direct_workflows import refuse_unless_dts
        from .dts_direct import compress_direct_dts
        refuse_unless_dts(artifact, method)
        return compress_direct_dts(artifact, config, output=output, calib_data=calib_data,
                                   calib_samples=calib_samples, data=data, energy=energy,
                                   batch_size=batch_size, device=device, seed=seed, limit=limit, progress=progress,
                                   note=note, checkpoint=checkpoint, resume=resume)
    load_energy_model(energy)
    _check_artifact_output(output)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    network = artifacts.load(artifact)
    if network.exit_policy is not None:
        raise ConfigError(f"'{artifact}' already exits early (SEENN); compress the artifact it was made from.")
    if network.ttfs is not None:
        raise ConfigError(f"'{artifact}' is already TTFS-coded; compress the rate-coded artifact it was made from.")
    if network.layer_prefix_steps and method in ("teas", "dts"):
        raise ConfigError(f"'{artifact}' already has learned time masks (DTS); compress the artifact it was made from.")
    config.check_time_steps(network.time_steps)  # options beyond the artifact's T, before any data is read
    calib_data = calib_data or recorded_data(artifact, "calib_data", "train", calib_samples)
    calib_data = _with_normalization(calib_data, network)
    if data is None:
        data = replace(recorded_data(artifact, "data", "test"), limit=limit, seed=seed)
    data = _with_normalization(data, network)
    calibration, evaluation_data = load_data(calib_data), load_data(data)
    holdout = None
    if holdout_data is not None:
        holdout_data = _with_normalization(holdout_data, network)
        holdout = _disjoint_holdout(load_data(holdout_data), holdout_samples, seed, evaluation_data, calibration,
                                    note)
    base = network.time_steps
    simulation = SimulationConfig(time_steps=base, chunk_steps=network.chunk_steps_for(batch_size, chunk_steps),
                                  batch_size=batch_size, device=str(dev))
    uniform, trace = _uniform_run(network, evaluation_data, simulation, progress, keep_trace=method == "seenn")
    context = CompressContext(network=network, calibration=calibration, holdout=holdout,
                              evaluation_data=evaluation_data, uniform=uniform, trace=trace, simulation=simulation,
                              energy=energy, device=dev, progress=progress, note=note)
    if method == "teas":
        from .teas import apply_teas
        outcome = apply_teas(context, config, checkpoint=checkpoint, resume=resume)
    elif method == "dts":
        from .dts import apply_dts
        outcome = apply_dts(context, config, checkpoint=checkpoint, resume=resume)
    elif method == "seenn":
        from .seenn import apply_seenn
        outcome = apply_seenn(context, config, checkpoint=checkpoint, resume=resume)
    else:
        from .ttfs import apply_ttfs
        outcome = apply_ttfs(context, config, checkpoint=checkpoint, resume=resume)

    resolved = {"artifact": str(artifact), "method": method, method: config.to_dict(),
                "calib_data": calib_data.to_dict(), "data": data.to_dict(), "simulation": simulation.to_dict(),
                "energy": energy, "seed": seed, "time_steps": [base]}
    if holdout_data is not None:
        resolved.update(holdout_data=holdout_data.to_dict(), holdout_samples=holdout_samples)
    compressed = outcome.network
    readout = compressed.time_steps  # TTFS reads out after its latency; the other methods keep T
    staging = Path(tempfile.mkdtemp(prefix="snnconv-report-"))
    try:
        summary, files = _report(staging / "reports", f"snnconv compress --method {method}: {artifact}", compressed,
                                 outcome.evaluation, energy, readout, sweep_steps([readout], readout), resolved, dev, seed,
                                 extra_summary=outcome.extra_summary)
        files.update(outcome.write_tables(staging / "reports"))
        manifest_run = {**artifacts.read_manifest(artifact).get("run", {}), "compress": resolved}
        artifacts.save(compressed.to("cpu"), output, extra_files={"reports": staging / "reports"},
                       extra_manifest={"run": manifest_run, "summary": summary})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report_dir = Path(output) / "reports"
    sim = outcome.evaluation.simulation
    run = RunResult(network=compressed, evaluation=outcome.evaluation, summary=summary, time_steps=readout,
                    sweep={t: sim.accuracy_at(t) for t in sweep_steps([readout], readout)},
                    report_dir=report_dir, artifact=Path(output),
                    files={name: report_dir / Path(path).name for name, path in files.items()})
    return CompressResult(run=run, method=method, outcome=outcome)
