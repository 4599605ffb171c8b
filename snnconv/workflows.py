"""The CLI's jobs as single library calls: convert (and report, and save) or evaluate (and gate).

Each function resolves defaults (the embedded model and data), runs the pipeline, writes the
reports and the artifact, and returns a :class:`RunResult`. Front ends only render it.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import artifacts
from .api import Evaluation, ProgressFactory, convert, evaluate, resolve_device
from .config import ConvertConfig, SimulationConfig
from .data import DataConfig, LabeledData, load_data
from .direct_network import FAMILY as DIRECT_FAMILY
from .engine.chunking import CALIBRATION_CHUNK_STEPS
from .errors import ArtifactError, ConfigError, GateFailed, OutputError
from .metrics import load_energy_model, summarize
from .metrics.summary import exceeds
from .network import SpikingNetwork
from .report import REPORT_FILES, write_report

DEFAULT_DATA = "builtin"


@dataclass(frozen=True)
class Gates:
    """CI gates; None disables a gate."""

    max_acc_drop: float | None = None  # points of accuracy lost vs the ANN
    max_avg_t: float | None = None  # average time steps
    min_energy_ratio: float | None = None  # ANN energy / SNN energy

    def __post_init__(self):  # a gate no run could pass (or none could fail) is a typo, not a gate
        for flag, value in (("--max-avg-t", self.max_avg_t), ("--min-energy-ratio", self.min_energy_ratio)):
            if value is not None and not value > 0:
                raise ConfigError(f"{flag} must be positive, got {value:g}.")


@dataclass
class RunResult:
    network: SpikingNetwork
    evaluation: Evaluation
    summary: dict
    time_steps: int
    sweep: dict[int, float]  # T -> SNN accuracy (%)
    report_dir: Path
    artifact: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)


def sweep_steps(requested: list[int], limit: int) -> list[int]:
    """Report steps: powers of two up to ``limit`` plus whatever the user asked for."""
    powers = [2 ** k for k in range(0, 20) if 2 ** k <= limit]
    return sorted(set(powers) | set(requested))


def recorded_data(artifact: str | Path, key: str, split: str, samples: int | None = None) -> DataConfig:
    """The data spec an artifact's run recorded under ``key``, builtin if none; its sample limit is the recorded
    one, or ``samples`` when given."""
    recorded = artifacts.read_manifest(artifact).get("run", {}).get(key)
    spec = DataConfig.from_dict(recorded) if recorded else DataConfig(DEFAULT_DATA, split=split)
    return spec if samples is None else replace(spec, limit=samples)


def _check_time_steps(steps: list[int]) -> list[int]:
    if not steps:
        raise ConfigError("-T needs at least one value.")
    for t in steps:
        if t <= 0:
            raise ConfigError(f"-T must be positive, got {t}.")
    return sorted(set(steps))


def _check_writable(path: Path, option: str) -> None:
    """Fail before any work if ``path`` cannot be created: no partial output afterwards."""
    path = Path(path)
    parent = path.resolve().parent
    probe_dir = parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir() or not _can_write(probe_dir):
        raise OutputError(f"{option} '{path}' cannot be written (no write permission in '{probe_dir}').")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} '{path}' is a file, not a directory.")


def _check_artifact_output(path: Path) -> None:
    """Fail before any work if -o cannot take an artifact: saving replaces an earlier artifact there, and
    refuses a directory of other files (artifacts.save), which is better said before minutes of conversion."""
    path = Path(path)
    _check_writable(path, "-o")
    if Path.cwd().resolve().is_relative_to(path.resolve()):  # the artifact is swapped in as a whole directory
        raise OutputError(f"-o '{path}' holds the working directory, which cannot be replaced by the artifact; "
                          "choose a directory below it, e.g. -o snnconv-out.")
    artifacts.refuse_foreign_directory(path)


def _can_write(directory: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def _environment(device: torch.device, seed: int) -> dict:
    return {**artifacts.environment(), "device": str(device), "seed": seed, "threads": torch.get_num_threads()}


def _report(directory: Path, title: str, network: SpikingNetwork, evaluation: Evaluation, energy: str, t: int,
            steps: list[int], config: dict, device: torch.device, seed: int,
            extra_summary: dict | None = None) -> tuple[dict, dict[str, Path]]:
    model = load_energy_model(energy)
    extra = dict(extra_summary or {})
    if evaluation.ann_before_rewrite is not None:
        extra["ann_accuracy_before_maxpool_rewrite_pct"] = evaluation.ann_before_rewrite.accuracy
    files = write_report(directory, title=title, sim=evaluation.simulation, ann=evaluation.ann, energy_model=model,
                         time_steps=t, sweep_steps=[s for s in steps if s <= evaluation.simulation.time_steps],
                         config=config, environment=_environment(device, seed),
                         coverage=[{"node": r.node, "type": r.target, "status": r.status, "reason": r.reason}
                                   for r in network.coverage], extra_summary=extra)
    summary = {**summarize(evaluation.simulation, evaluation.ann, model, t), **extra}
    return summary, files


DEFAULT_LABEL = "embedded default (snnconv.zoo:default_model, Fashion-MNIST VGG-style CNN)"


def _convert_model(model: str | None, data: DataConfig, calib_data: DataConfig, config: ConvertConfig, target_t: int,
                   **options) -> tuple[SpikingNetwork, LabeledData, str]:
    """Load the data and convert ``model`` (the embedded default when None) for ``target_t`` steps."""
    if model is None:
        from .zoo import default_model
        model_obj, source_label = default_model(), DEFAULT_LABEL
    else:
        model_obj, source_label = model, str(model)
    config = replace(config, time_steps=target_t)
    calibration = load_data(calib_data)
    evaluation_data = load_data(data)
    network = convert(model_obj, calibration, config, **options)
    network.source["source"] = source_label if model is None else network.source["source"]
    network.input_normalization = {"mean": list(data.mean) if data.mean else None,
                                   "std": list(data.std) if data.std else None}
    return network, evaluation_data, source_label


def run_convert(model: str | None, *, arch: str | None = None, allow_pickle: bool = False,
                calib_data: DataConfig | None = None, data: DataConfig | None = None,
                config: ConvertConfig = ConvertConfig(), time_steps: list[int] = (32,), output: Path = Path("snnconv-out"),
                energy: str = "45nm", batch_size: int = 256, chunk_steps: int | None = None,
                device: str = "cpu", seed: int = 0,
                progress: ProgressFactory | None = None) -> RunResult:
    """Convert ``model`` (the embedded default when None), evaluate it, write reports and the artifact."""
    output = Path(output)
    steps = _check_time_steps(list(time_steps))
    load_energy_model(energy)  # an unknown preset fails before any work
    _check_artifact_output(output)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    data = data or DataConfig(DEFAULT_DATA, split="test")
    calib_data = calib_data or replace(data, split="train", limit=None)
    target_t = max(steps)
    network, evaluation_data, source_label = _convert_model(
        model, data, calib_data, config, target_t, arch=arch, allow_pickle=allow_pickle, device=str(dev),
        batch_size=batch_size, chunk_steps=CALIBRATION_CHUNK_STEPS if chunk_steps is None else chunk_steps,
        progress=progress)
    simulation = SimulationConfig(time_steps=target_t, chunk_steps=network.chunk_steps_for(batch_size, chunk_steps),
                                  batch_size=batch_size, device=str(dev))
    evaluation = evaluate(network, evaluation_data, simulation, progress=progress)
    if evaluation.ann_before_rewrite is not None:
        network.notes["ann_accuracy_before_maxpool_rewrite_pct"] = evaluation.ann_before_rewrite.accuracy
    network.notes.pop("ann_source_graph", None)
    resolved = {"model": source_label, "arch": arch, "calib_data": calib_data.to_dict(), "data": data.to_dict(),
                "convert": network.config.to_dict(), "simulation": simulation.to_dict(), "energy": energy,
                "seed": seed, "time_steps": steps}  # the config as resolved for T, as the network holds it
    staging = Path(tempfile.mkdtemp(prefix="snnconv-report-"))
    try:
        summary, files = _report(staging / "reports", f"snnconv convert: {source_label}", network, evaluation, energy,
                                 target_t, sweep_steps(steps, target_t), resolved, dev, seed)
        artifacts.save(network.to("cpu"), output, extra_files={"reports": staging / "reports"},
                       extra_manifest={"run": resolved, "summary": summary})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report_dir = output / "reports"
    return RunResult(network=network, evaluation=evaluation, summary=summary, time_steps=target_t,
                     sweep={t: evaluation.simulation.accuracy_at(t) for t in sweep_steps(steps, target_t)},
                     report_dir=report_dir, artifact=output,
                     files={name: report_dir / Path(path).name for name, path in files.items()})


def run_evaluate(target: str | None, *, arch: str | None = None, allow_pickle: bool = False,
                 data: DataConfig | None = None, calib_data: DataConfig | None = None,
                 config: ConvertConfig = ConvertConfig(), time_steps: list[int] | None = None, energy: str = "45nm",
                 report_dir: Path | None = None, gates: Gates = Gates(), batch_size: int = 256,
                 chunk_steps: int | None = None,
                 device: str = "cpu", seed: int = 0, limit: int | None = None,
                 progress: ProgressFactory | None = None, use_exit_policy: bool = True,
                 timing: str | None = None) -> RunResult:
    """Evaluate an artifact (or convert a model in memory first), write reports, then apply the gates.

    An artifact with an exit policy (SEENN) runs with it unless ``use_exit_policy`` is False. ``timing``
    overrides the artifact's spike timing between per-layer windows (None: its own).
    A failed gate raises :class:`GateFailed` after the reports are written, so CI keeps the evidence.
    Without ``data``, an artifact is evaluated on the data its convert run used (``limit`` still applies).
    """
    if target is not None and Path(target).is_dir() and not artifacts.is_artifact(target):
        raise ArtifactError(f"'{target}' is a directory but not an snnconv artifact (no {artifacts.MANIFEST}); "
                            "pass an artifact written by snnconv convert or compress, or a model file.")
    if target is not None and artifacts.is_artifact(target) and artifacts.family(target) == DIRECT_FAMILY:
        from .direct_workflows import run_evaluate_direct
        return run_evaluate_direct(Path(target), data=data, time_steps=time_steps, energy=energy, report_dir=report_dir,
                                   gates=gates, batch_size=batch_size, device=device, seed=seed, limit=limit,
                                   progress=progress)
    load_energy_model(energy)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    if target is not None and artifacts.is_artifact(target):
        network = artifacts.load(target)
        report_dir = Path(report_dir or Path(target) / "reports")
        _check_report_directory(report_dir, "--report-dir")
        if data is None:
            data = replace(recorded_data(target, "data", "test"), limit=limit, seed=seed)
        norm = network.input_normalization
        if data.mean is None and norm.get("mean"):
            data = replace(data, mean=tuple(norm["mean"]), std=tuple(norm["std"]))
        steps = _check_time_steps(list(time_steps or [network.time_steps]))
        evaluation_data = load_data(data)
        source_label = str(target)
    else:
        steps = _check_time_steps(list(time_steps or [32]))
        report_dir = Path(report_dir or "snnconv-report")
        _check_report_directory(report_dir, "--report-dir")
        data = data or DataConfig(DEFAULT_DATA, split="test", limit=limit, seed=seed)
        calib_data = calib_data or replace(data, split="train", limit=None)
        network, evaluation_data, source_label = _convert_model(
            target, data, calib_data, config, max(steps), arch=arch, allow_pickle=allow_pickle, device=str(dev),
            batch_size=batch_size, chunk_steps=CALIBRATION_CHUNK_STEPS if chunk_steps is None else chunk_steps,
        progress=progress)
    target_t = max(steps)
    simulation = SimulationConfig(time_steps=target_t, chunk_steps=network.chunk_steps_for(batch_size, chunk_steps),
                                  batch_size=batch_size, device=str(dev), timing=timing)
    evaluation = evaluate(network, evaluation_data, simulation, progress=progress,
                          exit_policy="network" if use_exit_policy else None)
    resolved = {"target": source_label, "data": data.to_dict(), "convert": network.config.to_dict(),
                "simulation": replace(simulation, timing=timing or network.timing).to_dict(), "energy": energy,
                "seed": seed, "time_steps": steps,
                "gates": gates.__dict__,
                "exit_policy": network.exit_policy.describe() if use_exit_policy and network.exit_policy else None}
    staging = Path(tempfile.mkdtemp(prefix="snnconv-report-"))
    try:
        summary, files = _report(staging / "reports", f"snnconv evaluate: {source_label}", network, evaluation, energy,
                                 target_t, sweep_steps(steps, target_t), resolved, dev, seed)
        _replace_directory(staging / "reports", report_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = RunResult(network=network, evaluation=evaluation, summary=summary, time_steps=target_t,
                       sweep={t: evaluation.simulation.accuracy_at(t) for t in sweep_steps(steps, target_t)},
                       report_dir=report_dir, files={name: report_dir / Path(p).name for name, p in files.items()})
    check_gates(summary, gates, result)
    return result


def _is_report_directory(directory: Path) -> bool:
    """An earlier snnconv report: its report.md opens with the title snnconv gives every report."""
    try:
        with open(directory / "report.md", encoding="utf-8") as report:
            title = report.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return title.startswith("# snnconv ") and (directory / "summary.csv").is_file()


def _check_report_directory(path: Path, option: str) -> None:
    """Fail before any work unless ``path`` can take a report: new, empty, or an earlier snnconv report, whose
    files of the same names the new report replaces."""
    path = Path(path)
    _check_writable(path, option)
    if path.is_dir() and any(path.iterdir()) and not _is_report_directory(path):
        raise OutputError(f"{option} '{path}' already holds files and no snnconv report; choose a new or empty "
                          "directory.")


def _replace_directory(source: Path, destination: Path) -> None:
    """Copy the report files of ``source`` into ``destination`` (checked by _check_report_directory), over
    the files of the same names, and remove the report files of an earlier run that this one did not write.
    Nothing else there is removed: the method reports that snnconv compress wrote beside an artifact's report,
    and anything a user added, stay. The directory itself stays too, so it may be the working directory."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    written = {new.name for new in Path(source).iterdir()}
    for stale in set(REPORT_FILES) - written:  # e.g. an earlier run's exit histogram beside a run without exits
        (destination / stale).unlink(missing_ok=True)
    for new in Path(source).iterdir():
        shutil.copy2(new, destination / new.name)


def check_gates(summary: dict, gates: Gates, result: RunResult | None = None) -> None:
    """Raise GateFailed naming the first gate the summary does not meet (a value equal to its limit meets it);
    it carries ``result``, so that the caller can still show the summary that failed."""
    try:
        _check_gates(summary, gates)
    except GateFailed as failed:
        failed.result = result
        raise


def _check_gates(summary: dict, gates: Gates) -> None:
    if gates.max_acc_drop is not None and math.isnan(summary["accuracy_drop_points"]):
        raise ConfigError("--max-acc-drop compares with the source ANN, and this model has none (it was trained "
                          "as a spiking network); gate on its accuracy report instead, or drop the option.")
    if gates.max_acc_drop is not None and exceeds(summary["accuracy_drop_points"], gates.max_acc_drop):
        raise GateFailed("max-acc-drop", f"Gate --max-acc-drop failed: the SNN is {summary['accuracy_drop_points']:.2f} "
                                         f"points below the ANN, more than the allowed {gates.max_acc_drop:g}.")
    if gates.max_avg_t is not None and exceeds(summary["avg_time_steps"], gates.max_avg_t):
        raise GateFailed("max-avg-t", f"Gate --max-avg-t failed: average time steps {summary['avg_time_steps']:.2f} "
                                      f"exceed the allowed {gates.max_avg_t:g}.")
    if gates.min_energy_ratio is not None and exceeds(gates.min_energy_ratio, summary["energy_ratio_ann_over_snn"]):
        raise GateFailed("min-energy-ratio", f"Gate --min-energy-ratio failed: the SNN saves "
                                             f"{summary['energy_ratio_ann_over_snn']:.2f}x energy, less than the required "
                                             f"{gates.min_energy_ratio:g}x.")
