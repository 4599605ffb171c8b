"""The CLI's jobs for directly trained spiking transformers (``snnconv train``, and ``evaluate`` / ``compress
--method dts`` on their artifacts), as single library calls with the same reports and artifacts as converted
networks (docs/spikformer.md).

A Spikformer has no source ANN: reports leave the ANN accuracy empty, and their ANN energy is the dense MACs of
the same architecture (:class:`~snnconv.results.AnnResult` with ``correct=None``).
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from . import artifacts
from .api import Evaluation, ProgressFactory, resolve_device
from .data import DataConfig, LabeledData, load_data
from .direct_network import FAMILY, DirectNetwork
from .engine.direct import simulate_spikformer
from .errors import ConfigError, DataError
from .metrics import load_energy_model
from .results import AnnResult
from .spikformer import Spikformer, SpikformerConfig
from .stages.direct import DirectConfig, freeze_masks, mask_parameters, train_direct
from .workflows import (DEFAULT_DATA, Gates, RunResult, _check_artifact_output, _check_report_directory,
                        _check_time_steps, _replace_directory, _report, check_gates, recorded_data, sweep_steps)


def evaluate_direct(network: DirectNetwork, data: LabeledData, time_steps: int, *, batch_size: int = 256,
                    device: torch.device | str = "cpu", progress: ProgressFactory | None = None) -> Evaluation:
    """Simulate the spiking transformer on ``data`` for ``time_steps`` steps, beside its dense twin's MACs."""
    _check_input(network, data)
    advance = progress(f"Simulating the spiking transformer (T={time_steps})", len(data)) if progress else None
    simulation = simulate_spikformer(network.model, data, time_steps, batch_size=batch_size, device=device,
                                     progress=advance)
    return Evaluation(simulation=simulation, ann=AnnResult(samples=len(data), correct=None, wall_time_s=0.0))


def _check_input(network: DirectNetwork, data: LabeledData) -> None:
    shape = tuple(data.x.shape[1:])
    if shape != tuple(network.input_shape):
        raise DataError(f"Data '{data.description}' has samples of shape {shape}; the spiking transformer takes "
                        f"{tuple(network.input_shape)}.")


def spikformer_for(data: LabeledData, config: SpikformerConfig) -> SpikformerConfig:
    """``config`` sized to the data: input channels, image size and classes come from the training data."""
    channels, height, width = data.x.shape[1:]
    if height != width:
        raise DataError(f"Data '{data.description}' has {height}x{width} images; the Spikformer stem takes square "
                        "images (resize imagefolder data with --size).")
    return replace(config, in_channels=int(channels), image_size=int(height), num_classes=int(data.num_classes))


def _save_with_reports(network: DirectNetwork, evaluation: Evaluation, output: Path, title: str, energy: str,
                       resolved: dict, device: torch.device, seed: int, extra_summary: dict | None = None,
                       write_tables=None) -> tuple[dict, dict[str, Path]]:
    t = evaluation.simulation.time_steps
    staging = Path(tempfile.mkdtemp(prefix="snnconv-report-"))
    try:
        summary, files = _report(staging / "reports", title, network, evaluation, energy, t, sweep_steps([t], t),
                                 resolved, device, seed, extra_summary=extra_summary)
        if write_tables is not None:
            files.update(write_tables(staging / "reports"))
        artifacts.save_direct(network.to("cpu"), output, extra_files={"reports": staging / "reports"},
                              extra_manifest={"run": resolved, "summary": summary})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report_dir = output / "reports"
    return summary, {name: report_dir / Path(path).name for name, path in files.items()}


def run_train(architecture: SpikformerConfig = SpikformerConfig(), config: DirectConfig = DirectConfig(), *,
              train_data: DataConfig | None = None, data: DataConfig | None = None, output: Path = Path("snnconv-spikformer"),
              energy: str = "45nm", batch_size: int = 256, device: str = "cpu", seed: int = 0,
              progress: ProgressFactory | None = None, checkpoint: Path | None = None,
              resume: bool = False) -> RunResult:
    """Train a Spikformer directly on ``train_data``, evaluate it on ``data``, write its artifact and reports."""
    load_energy_model(energy)
    _check_artifact_output(output)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    data = data or DataConfig(DEFAULT_DATA, split="test")
    train_data = train_data or replace(data, split="train", limit=None)
    training, evaluation_data = load_data(train_data), load_data(data)
    architecture = spikformer_for(training, architecture)
    config = replace(config, train=replace(config.train, seed=seed))
    torch.manual_seed(seed)
    model = Spikformer(architecture).to(dev)
    trainable, log = train_direct(model, training, config, checkpoint=checkpoint, resume=resume, progress=progress)
    network = DirectNetwork(model=model, time_steps=config.time_steps, input_shape=tuple(training.x.shape[1:]),
                            num_classes=training.num_classes,
                            source={"source": f"snnconv train (Spikformer-{architecture.depth}-{architecture.dim})",
                                    "family": FAMILY},
                            input_normalization={"mean": list(data.mean) if data.mean else None,
                                                 "std": list(data.std) if data.std else None},
                            training={"config": config.to_dict(), "train_data": train_data.to_dict(),
                                      "train_samples": len(training), "epoch_losses": log.epoch_losses})
    if config.masks:
        freeze_masks(trainable)
        network.time_mask_parameters = mask_parameters(trainable)
    evaluation = evaluate_direct(network, evaluation_data, config.time_steps, batch_size=batch_size, device=dev,
                                 progress=progress)
    resolved = {"model": network.source["source"], "spikformer": architecture.to_dict(), "train": config.to_dict(),
                "train_data": train_data.to_dict(), "data": data.to_dict(), "energy": energy, "seed": seed,
                "time_steps": [config.time_steps]}
    summary, files = _save_with_reports(network, evaluation, Path(output), f"snnconv train: {network.source['source']}",
                                        energy, resolved, dev, seed)
    return _run_result(network, evaluation, summary, Path(output) / "reports", files, artifact=Path(output))


def _run_result(network, evaluation: Evaluation, summary: dict, report_dir: Path, files: dict[str, Path],
                artifact: Path | None = None, requested: list[int] = ()) -> RunResult:
    sim = evaluation.simulation
    steps = sweep_steps(list(requested) or [sim.time_steps], sim.time_steps)
    return RunResult(network=network, evaluation=evaluation, summary=summary, time_steps=sim.time_steps,
                     sweep={t: sim.accuracy_at(t) for t in steps}, report_dir=report_dir, artifact=artifact,
                     files=files)


def run_evaluate_direct(target: Path, *, data: DataConfig | None = None, time_steps: list[int] | None = None,
                        energy: str = "45nm", report_dir: Path | None = None, gates: Gates = Gates(),
                        batch_size: int = 256, device: str = "cpu", seed: int = 0, limit: int | None = None,
                        progress: ProgressFactory | None = None) -> RunResult:
    """``snnconv evaluate`` on a Spikformer artifact: simulate, write reports, then apply the gates."""
    load_energy_model(energy)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    target = Path(target)
    network = artifacts.load_direct(target)
    report_dir = Path(report_dir or target / "reports")
    _check_report_directory(report_dir, "--report-dir")
    if gates.max_acc_drop is not None:  # refused before any work: there is no ANN to compare with
        check_gates({"accuracy_drop_points": float("nan")}, Gates(max_acc_drop=gates.max_acc_drop))
    # as for converted artifacts: the recorded evaluation data, all of it unless --limit says otherwise
    data = data or replace(recorded_data(target, "data", "test"), limit=limit, seed=seed)
    steps = _check_time_steps(list(time_steps or [network.time_steps]))
    evaluation = evaluate_direct(network.to(dev), load_data(data), max(steps), batch_size=batch_size, device=dev,
                                 progress=progress)
    resolved = {"target": str(target), "family": FAMILY, "data": data.to_dict(), "energy": energy, "seed": seed,
                "time_steps": steps, "gates": gates.__dict__}
    staging = Path(tempfile.mkdtemp(prefix="snnconv-report-"))
    try:
        t = max(steps)
        summary, files = _report(staging / "reports", f"snnconv evaluate: {target}", network, evaluation, energy, t,
                                 sweep_steps(steps, t), resolved, dev, seed)
        _replace_directory(staging / "reports", report_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = _run_result(network, evaluation, summary, report_dir,
                         {name: report_dir / Path(p).name for name, p in files.items()}, requested=steps)
    check_gates(summary, gates, result)
    return result


def refuse_unless_dts(artifact: Path, method: str) -> None:
    if method != "dts":
        raise ConfigError(f"'{artifact}' is a directly trained spiking transformer; --method {method} works on "
                          "converted networks, and only --method dts applies to it.")
