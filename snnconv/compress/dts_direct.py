"""``snnconv compress --method dts`` on a directly trained spiking transformer (docs/spikformer.md, "DTS").

The artifact's trained weights are fine-tuned with a time mask on every LIF layer (:func:`~snnconv.stages.direct.
train_direct`, the shared loop), the masks are frozen into prefixes, and the masked model is evaluated beside the
unmasked one on the same data. The tables are those of DTS on converted networks (dts.csv, dts.md).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .. import artifacts
from ..api import Evaluation, ProgressFactory, resolve_device
from ..data import DataConfig, load_data
from ..direct_network import DirectNetwork
from ..direct_workflows import _run_result, _save_with_reports, evaluate_direct
from ..errors import ConfigError
from ..metrics import load_energy_model
from ..metrics.summary import layer_spikes_per_sample
from ..stages.direct import (DirectConfig, freeze_masks, lif_input_sensitivity, mask_parameters,
                             penalized_lif_layers, train_direct)
from ..stages.dts import DtsConfig, DtsResult
from ..workflows import _check_artifact_output, recorded_data
from .dts import dts_summary, write_dts_tables


def _consumer_ops(network: DirectNetwork, evaluation: Evaluation) -> dict[str, float | None]:
    """Synaptic ops per sample of the layers that read each LIF layer's spikes directly (None: it feeds the
    residual stream, whose readers also take other layers' spikes)."""
    sim = evaluation.simulation
    ops = {layer.name: layer.synaptic_ops / max(sim.samples, 1) for layer in sim.synaptic_layers}
    consumers: dict[str, list[str]] = {}
    for layer, sources in network.model.spike_sources().items():
        if len(sources) == 1:
            consumers.setdefault(sources[0], []).append(layer)
        else:  # the attention product reads q, k and v together: its ops belong to the three jointly
            for source in sources:
                consumers.setdefault(source, []).append(layer)
    return {name: (sum(ops[c] for c in consumers[name]) if name in consumers else None)
            for name in network.model.lif_layers()}


def direct_dts_rows(network: DirectNetwork, result: DtsResult, uniform: Evaluation, masked: Evaluation,
                    uniform_ops: dict, masked_ops: dict) -> list[dict]:
    before = {layer.name: layer for layer in uniform.simulation.neuron_layers}
    after = {layer.name: layer for layer in masked.simulation.neuron_layers}
    sensitivity = {s.name: s for s in result.sensitivity}
    return [{
        "layer": name, "neurons": after[name].neurons,
        "input_similarity_first_vs_later": sensitivity[name].similarity,
        "suggested_for_mask_loss": sensitivity[name].suggested, "penalized": name in result.penalized,
        "time_steps_max": result.max_steps, "time_steps_dts": steps,
        "spikes_per_sample_uniform": layer_spikes_per_sample(uniform.simulation, before[name], result.max_steps),
        "spikes_per_sample_dts": layer_spikes_per_sample(masked.simulation, after[name], result.max_steps),
        "synaptic_ops_per_sample_uniform": uniform_ops[name], "synaptic_ops_per_sample_dts": masked_ops[name],
    } for name, steps in result.layer_steps.items()]


def compress_direct_dts(artifact: Path, config: DtsConfig, *, output: Path, calib_data: DataConfig | None = None,
                        calib_samples: int | None = None, data: DataConfig | None = None, energy: str = "45nm",
                        batch_size: int = 256, device: str = "cpu", seed: int = 0, limit: int | None = None,
                        progress: ProgressFactory | None = None, note=None, checkpoint: Path | None = None,
                        resume: bool = False):
    """Learn DTS masks on a Spikformer artifact; write the masked artifact with its reports to ``output``."""
    from . import CompressResult, MethodOutcome
    note = note or (lambda _message: None)
    load_energy_model(energy)
    _check_artifact_output(output)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    network = artifacts.load_direct(artifact)
    if network.time_mask_parameters or any(t < network.time_steps for t in network.layer_steps.values()):
        raise ConfigError(f"'{artifact}' already has learned time masks (DTS); compress the artifact it was made from.")
    steps = network.time_steps
    initial = steps if config.initial_steps is None else config.initial_steps
    if initial > steps:
        raise ConfigError(f"--initial-steps {initial} exceeds the network's T = {steps}.")
    # its training data (``calib_samples`` of it when given)
    calib_data = calib_data or replace(recorded_data(artifact, "train_data", "train", calib_samples), seed=seed)
    data = data or replace(recorded_data(artifact, "data", "test"), limit=limit, seed=seed)
    training, evaluation_data = load_data(calib_data), load_data(data)
    network.to(dev)
    uniform = evaluate_direct(network, evaluation_data, steps, batch_size=batch_size, device=dev, progress=progress)
    uniform_ops = _consumer_ops(network, uniform)
    penalized = penalized_lif_layers(network.model, config.groups)
    report = lif_input_sensitivity(network.model, training, steps, samples=config.sensitivity_samples,
                                   bins=config.histogram_bins)
    note(f"training time masks on {len(training)} samples")
    direct = DirectConfig(time_steps=steps, masks=True, mask_weight=config.mask_weight, groups=config.groups,
                          mask_lr=config.mask_lr, mask_optimizer="sgd", initial_steps=config.initial_steps,
                          train=replace(config.train, seed=seed))
    trainable, log = train_direct(network.model, training, direct, checkpoint=checkpoint, resume=resume,
                                  progress=progress)
    learned = freeze_masks(trainable)
    network.time_mask_parameters = mask_parameters(trainable)
    masked = evaluate_direct(network, evaluation_data, steps, batch_size=batch_size, device=dev, progress=progress)
    result = DtsResult(max_steps=steps, layer_steps=learned, penalized=penalized, sensitivity=report, log=log,
                       mask_parameters=network.time_mask_parameters, initial_steps=initial)
    rows = direct_dts_rows(network, result, uniform, masked, uniform_ops, _consumer_ops(network, masked))
    extra = dts_summary(result, config, uniform, masked, load_energy_model(energy), len(training))
    resolved = {"artifact": str(artifact), "method": "dts", "dts": config.to_dict(), "calib_data": calib_data.to_dict(),
                "data": data.to_dict(), "energy": energy, "seed": seed, "time_steps": [steps]}
    manifest_run = {**artifacts.read_manifest(artifact).get("run", {}), "compress": resolved}

    def write_tables(directory: Path) -> dict[str, Path]:
        return write_dts_tables(directory, rows, extra, result)

    summary, files = _save_with_reports(network, masked, Path(output), f"snnconv compress --method dts: {artifact}",
                                        energy, manifest_run, dev, seed, extra_summary=extra, write_tables=write_tables)
    run = _run_result(network, masked, summary, Path(output) / "reports", files, artifact=Path(output))
    outcome = MethodOutcome(network=network, evaluation=masked, rows=rows, extra_summary=extra,
                            write_tables=write_tables, details=result)
    return CompressResult(run=run, method="dts", outcome=outcome)
