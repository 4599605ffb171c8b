"""The pipeline as library calls: load_model -> convert -> evaluate (and save / load in artifacts).

Each function takes typed configs and data objects and returns plain results; the CLI is a thin
layer over these.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .config import ConvertConfig, SimulationConfig
from .data import LabeledData
from .engine import Engine, ExitPolicy
from .engine.chunking import CALIBRATION_CHUNK_STEPS
from .engine.ttfs import TTFSEngine
from .errors import ConfigError, DataError, ModelLoadError
from .importers.model import ImportedModel, require_finite
from .importers.onnx_import import import_onnx
from .importers.torch_import import (build_from_factory, file_sha256, import_torch_module, is_factory_spec,
                                     load_torch_file, torchscript_to_onnx_bytes)
from .network import SpikingNetwork
from .results import AnnResult, SimulationResult
from .stages.balance import compute_thresholds
from .stages.calibrate import calibrate
from .stages.convert import coverage_table, normalize, to_spiking
from .stages.observe import collect_statistics

# progress(description, total) -> advance(n): lets a front end draw bars without the library knowing how
ProgressFactory = Callable[[str, int], Callable[[int], None]]

IMPORT_CHECK_SAMPLES = 64


def _no_progress(_description: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for but no CUDA device is available; use --device cpu.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device must be cpu, cuda, cuda:N or auto, got '{name}'.") from None


def _require(value, kind: type, argument: str, what: str) -> None:
    """The Python API's argument check: one sentence naming the argument, not an AttributeError deep inside."""
    if not isinstance(value, kind):
        raise ConfigError(f"Argument '{argument}' must be a {what}, got {type(value).__name__}.")


def _check_finite_parameters(module: nn.Module, source: str) -> None:
    require_finite(module.state_dict().items(), source)


def load_model(model: nn.Module | str | Path, *, arch: str | None = None, allow_pickle: bool = False,
               example: torch.Tensor | None = None, example_name: str = "The calibration data") -> ImportedModel:
    """Import a model from any supported form into one torch.fx GraphModule.

    ``model``: an nn.Module; ``file.onnx``; ``file.pt`` (TorchScript, a state dict with ``arch``, or a
    pickled module with ``allow_pickle``); or a factory spec ``pkg.module:fn`` / ``path/file.py:fn``.
    ``example`` is a calibration batch: ONNX imports are checked against onnxruntime on it.
    """
    if isinstance(model, nn.Module):
        _check_finite_parameters(model, type(model).__name__)
        return import_torch_module(model, type(model).__name__)
    text = str(model)
    path = Path(text)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise ModelLoadError(f"Model file '{path}' does not exist; check the path.")
        imported = import_onnx(path, None if example is None else example[:IMPORT_CHECK_SAMPLES],
                               data_name=example_name)
    elif path.suffix.lower() in (".pt", ".pth", ".ts", ".torchscript") or path.is_file():
        module, fmt = load_torch_file(path, arch, allow_pickle)
        if fmt == "torchscript":
            if example is None:
                raise ConfigError(f"TorchScript model '{path}' needs calibration data to be imported (its input shape).")
            _check_torchscript_runs_on(module, example[:2], text, example_name)
            data = torchscript_to_onnx_bytes(module, example[:2], text)
            imported = import_onnx(None, example[:IMPORT_CHECK_SAMPLES], data=data, source=text,
                                   source_format="torchscript", source_hash=file_sha256(path))
            with torch.no_grad():  # the oracle for TorchScript is the TorchScript module itself
                reference = module(example[:IMPORT_CHECK_SAMPLES])
                ours = imported.graph(example[:IMPORT_CHECK_SAMPLES])
            imported.import_check["max_abs_diff_to_torchscript"] = float((reference - ours).abs().max())
        else:
            _check_finite_parameters(module, text)
            imported = import_torch_module(module, text, file_sha256(path))
    elif is_factory_spec(text):
        module = build_from_factory(text)
        _check_finite_parameters(module, text)
        imported = import_torch_module(module, text)
    else:
        raise ModelLoadError(f"Model '{text}' is neither an existing file nor a factory spec (pkg.module:fn or file.py:fn).")
    return imported


def _check_torchscript_runs_on(module, batch: torch.Tensor, source: str, data_name: str) -> None:
    """TorchScript declares no input shape: run it once, so that data it cannot take fails as a data error
    naming the shape, not deep inside the ONNX export."""
    try:
        with torch.no_grad():
            module(batch)
    except Exception as exc:  # TorchScript raises its own error types, with the script's traceback
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        cause = lines[-1] if lines else type(exc).__name__  # TorchScript puts the cause last
        raise DataError(f"{data_name} has samples of shape {tuple(batch.shape[1:])}, on which TorchScript model "
                        f"'{source}' fails ({cause}); check --data/--calib-data and --size.") from None


def _check_data_fits(graph, data: LabeledData, what: str) -> None:
    try:
        with torch.no_grad():
            out = graph(data.x[:2].to(next(iter(graph.parameters())).device))
    except Exception as exc:
        raise DataError(f"{what} {data.description} with images of shape {tuple(data.sample_shape)} does not fit the "
                        f"model ({type(exc).__name__}: {str(exc).splitlines()[0]}); check --data/--calib-data and "
                        "--size.") from None
    if out.dim() != 2 or out.shape[1] < data.num_classes:
        raise DataError(f"The model outputs shape {tuple(out.shape)}, which cannot classify the {data.num_classes} "
                        f"classes of {what.lower()} {data.description}.")


def ann_accuracy(graph, data: LabeledData, batch_size: int, device: torch.device) -> AnnResult:
    """Top-1 accuracy and timing of the ANN ``graph`` on ``data``."""
    correct = 0
    start = time.perf_counter()
    with torch.no_grad():
        for x, y in data.batches(batch_size):
            correct += int((graph(x.to(device)).argmax(1) == y.to(device)).sum())
    return AnnResult(samples=len(data), correct=correct, wall_time_s=time.perf_counter() - start)


def convert(model: nn.Module | str | Path | ImportedModel, calibration: LabeledData, config: ConvertConfig = ConvertConfig(),
            *, arch: str | None = None, allow_pickle: bool = False, device: str = "cpu", batch_size: int = 256,
            chunk_steps: int = CALIBRATION_CHUNK_STEPS, progress: ProgressFactory | None = None) -> SpikingNetwork:
    """Import, normalize, observe, balance, convert and (optionally) calibrate."""
    _require(calibration, LabeledData, "calibration", "snnconv.data.LabeledData (e.g. from snnconv.data.load_data)")
    _require(config, ConvertConfig, "config", "snnconv.ConvertConfig")
    progress = progress or _no_progress
    # the network's config (and so its manifest) names the T the thresholds were searched for
    config = replace(config, balance=replace(config.balance, time_steps=config.balance_steps))
    dev = resolve_device(device)
    imported = model if isinstance(model, ImportedModel) else load_model(
        model, arch=arch, allow_pickle=allow_pickle, example=calibration.x,
        example_name=f"The calibration data '{calibration.description}'")
    ann_source = imported.graph
    ann, records = normalize(ann_source, config.maxpool)
    coverage = coverage_table(ann, records)
    ann.to(dev)
    _check_data_fits(ann, calibration, "Calibration data")

    advance = progress("Collecting activation statistics", len(calibration))
    stats = collect_statistics(ann, (x.to(dev) for x, _ in calibration.batches(batch_size)), progress=advance)
    advance = progress("Balancing thresholds", 1)
    thresholds = compute_thresholds(stats, config.balance, config.half_init)
    thresholds.update({k: torch.as_tensor(v, dtype=torch.float32) for k, v in config.balance.overrides.items()})
    advance(1)
    graph = to_spiking(ann, thresholds, config.half_init, config.signed_spikes).to(dev)

    calibration_log: list[dict] = []
    # weight calibration moves the SNN's weights away from the ANN's: keep those the ANN had
    ann_state = {k: v.clone() for k, v in graph.state_dict().items()} if config.calibrate == "weights" else {}
    if config.calibrate != "none":
        engine = Engine(graph, dev)
        count = min(config.calibration_samples, len(calibration))
        layers = sum(1 for op in engine.program.neuron_ops if op.kind == "neuron")
        calibration_log = calibrate(engine, calibration.x[:count], config.time_steps, config.calibrate, chunk_steps,
                                    progress=progress(f"Calibrating ({config.calibrate})", layers),
                                    weight_steps=config.weight_calibration_steps,
                                    weight_lr=config.weight_calibration_lr)
    ann_weights = {k: ann_state[k] for k, v in graph.state_dict().items()
                   if k in ann_state and k.endswith("weight") and not torch.equal(v, ann_state[k])}
    source = {"source": imported.source, "format": imported.source_format, "sha256": imported.source_hash,
              "import_check": imported.import_check}
    input_shape = tuple(int(d) for d in calibration.sample_shape)
    return SpikingNetwork(graph=graph, input_shape=input_shape, time_steps=config.time_steps, config=config,
                          coverage=coverage, source=source, input_normalization={}, num_classes=calibration.num_classes,
                          calibration_log=calibration_log, ann_weights=ann_weights,
                          notes={"ann_source_graph": ann_source} if config.maxpool == "avg" else {})


@dataclass
class Evaluation:
    """An SNN evaluation with its ANN beside it."""

    simulation: SimulationResult
    ann: AnnResult
    ann_before_rewrite: AnnResult | None = None  # the source ANN when max pooling was rewritten to average


def _evaluate_ttfs(network: SpikingNetwork, data: LabeledData, simulation: SimulationConfig, ann: AnnResult,
                   dev: torch.device, progress: ProgressFactory) -> Evaluation:
    """A TTFS network runs its whole latency (n_layers x T_s + T_w steps), read out at every step."""
    engine = TTFSEngine(network.graph, network.ttfs, dev)
    if simulation.time_steps != engine.latency:
        raise ConfigError(f"This TTFS network's latency is {engine.latency} steps (T_s={network.ttfs.fire_start}, "
                          f"T_w={network.ttfs.window}); evaluate it at T={engine.latency}, not T={simulation.time_steps}.")
    sim = engine.simulate(data.batches(simulation.batch_size),
                          progress=progress(f"Simulating TTFS ({engine.latency} steps)", len(data)))
    ann.macs_per_sample = {layer.name: layer.macs_per_sample_dense for layer in sim.synaptic_layers}
    return Evaluation(simulation=sim, ann=ann)


def evaluate(network: SpikingNetwork, data: LabeledData, simulation: SimulationConfig = SimulationConfig(), *,
             exit_policy: ExitPolicy | None | str = "network", progress: ProgressFactory | None = None,
             on_batch=None, trace_output: bool = False) -> Evaluation:
    """Simulate ``network`` on ``data`` for ``simulation.time_steps`` steps and evaluate its ANN too.

    ``exit_policy``: "network" (default) applies the network's own exit policy if it has one; None runs
    every sample for all steps; or an :class:`ExitPolicy`. A policy with its own ``chunk_steps`` decides
    at those boundaries, whatever ``simulation.chunk_steps`` says. ``simulation.timing`` overrides the
    network's spike timing between per-layer windows (docs/teas.md, "5. Execute"). ``simulation.chunk_steps``
    None (the default) takes the network's automatic chunk for the batch size (``chunk_steps_for``).
    """
    _require(network, SpikingNetwork, "network", "snnconv.SpikingNetwork (from snnconv.convert or snnconv.load)")
    _require(data, LabeledData, "data", "snnconv.data.LabeledData (e.g. from snnconv.data.load_data)")
    _require(simulation, SimulationConfig, "simulation", "snnconv.SimulationConfig")
    progress = progress or _no_progress
    dev = resolve_device(simulation.device)
    network.to(dev)
    _check_data_fits(network.graph, data, "Evaluation data")
    ann = ann_accuracy(network.ann_graph(), data, simulation.batch_size, dev)
    if network.ttfs is not None:
        return _evaluate_ttfs(network, data, simulation, ann, dev, progress)
    engine = Engine(network.graph, dev)
    if (network.layer_time_steps or network.layer_prefix_steps) and simulation.time_steps != network.time_steps:
        raise ConfigError(f"This network runs per-layer time steps T_l (readout T={network.time_steps}); evaluate it "
                          f"at T={network.time_steps}, not T={simulation.time_steps}.")
    if isinstance(exit_policy, str):
        if exit_policy != "network":
            raise ConfigError(f"exit_policy must be 'network', None or an ExitPolicy, got '{exit_policy}'.")
        exit_policy = network.exit_policy
    if exit_policy is not None:
        exit_policy.check_time_steps(simulation.time_steps)
    chunk = exit_policy.chunk_steps if exit_policy is not None and exit_policy.chunk_steps else \
        network.chunk_steps_for(simulation.batch_size, simulation.chunk_steps)
    plan = network.time_plan(chunk, simulation.time_steps, simulation.timing)
    sim = engine.simulate(data.batches(simulation.batch_size), plan, exit_policy=exit_policy,
                          progress=progress(f"Simulating T={simulation.time_steps}", len(data)), on_batch=on_batch,
                          trace_output=trace_output)
    ann.macs_per_sample = {layer.name: layer.macs_per_sample_dense for layer in sim.synaptic_layers
                           if layer.part == "network"}
    before = None
    source_graph = network.notes.get("ann_source_graph")
    if source_graph is not None:
        before = ann_accuracy(source_graph.to(dev), data, simulation.batch_size, dev)
    return Evaluation(simulation=sim, ann=ann, ann_before_rewrite=before)
