"""Weight calibration (calibrate="weights"): the segment it refits, what it improves, and that the ANN stays the reference."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

import snnconv
from snnconv.config import BalanceConfig, ConvertConfig
from snnconv.data import DataConfig, load_data
from snnconv.zoo import default_model
from snnconv.artifacts import ANN_WEIGHTS, MANIFEST
from snnconv.errors import ArtifactError
from snnconv.neurons import IFNeuron, maxpool_gate_step
from snnconv.stages.ttfs import TTFSConfig, build_ttfs
from snnconv.stages.weight_calibration import Segment
from helpers import convert, snn_rate_output
from models import TINY_MODELS, build


def _neuron_inputs_and_outputs(graph, x):
    """The ANN's input current and activation at every IF layer."""
    inputs, outputs, handles = {}, {}, []
    for node in graph.graph.nodes:
        if node.op == "call_module" and isinstance(graph.get_submodule(node.target), IFNeuron):
            def keep(_module, args, out, name=node.name):
                inputs[name], outputs[name] = args[0], out
            handles.append(graph.get_submodule(node.target).register_forward_hook(keep))
    with torch.no_grad():
        graph(x)
    for handle in handles:
        handle.remove()
    return inputs, outputs


@pytest.mark.parametrize("name", TINY_MODELS)
def test_segment_recomputes_each_neuron_input_from_its_sources(name, images):
    # fed the ANN's source activations and the ANN's weights, a segment gives exactly the ANN's current
    network = convert(build(name), images, time_steps=8)
    graph = network.graph
    inputs, outputs = _neuron_inputs_and_outputs(graph, images)
    for node in graph.graph.nodes:
        if node.name not in inputs:
            continue
        segment = Segment(graph, node)
        values = {n.name: outputs[n.name] for n in segment.sources} | {n.name: images for n in segment.inputs}
        weights = {n.target: graph.get_submodule(n.target).weight for n in segment.weighted}
        with torch.no_grad():
            assert torch.allclose(segment.current(values, weights), inputs[node.name], atol=1e-5), node.name
        assert segment.weighted, f"{node.name}: every tiny model has a weighted layer before each neuron layer"


def test_segments_of_a_residual_block_read_both_branches(images):
    network = convert(build("residual"), images, time_steps=8)
    source_counts = sorted(len(Segment(network.graph, node).sources)
                           for node in network.graph.graph.nodes if node.name in dict(network.neuron_layers()))
    assert source_counts[-1] == 2  # the neuron after the add reads the branch and the shortcut


def test_max_pool_gate_output_averages_to_the_max_pool_of_the_averaged_input():
    # why a gate inside a segment is computed by plain max pooling of time averages
    pool = torch.nn.MaxPool2d(2)
    steps = torch.rand(12, 3, 2, 6, 6, generator=torch.Generator().manual_seed(1)) - 0.3
    accumulated = torch.zeros(3, 2, 6, 6)
    previous = torch.zeros(3, 2, 3, 3)
    total = torch.zeros(3, 2, 3, 3)
    for x in steps:
        out, accumulated, previous = maxpool_gate_step(x, accumulated, previous, pool)
        total += out
    assert torch.allclose(total / 12, F.max_pool2d(steps.mean(0), 2), atol=1e-6)


@pytest.fixture(scope="module")
def shipped():
    """The shipped VGG converted for T = 4 on 64 images, with advanced and with weight calibration.

    A trained network at a small T, where the SNN's inputs drift from the ANN's: on tiny random models the
    remaining error is rounding noise that no weight change removes, and the guard keeps their weights."""
    torch.manual_seed(0)
    calibration = load_data(DataConfig("builtin", split="train", limit=64))
    model = default_model()
    options = dict(time_steps=4, balance=BalanceConfig(time_steps=4))
    with torch.no_grad():
        advanced = snnconv.convert(model, calibration, ConvertConfig(calibrate="advanced", **options))
        weights = snnconv.convert(model, calibration, ConvertConfig(calibrate="weights", weight_calibration_steps=30,
                                                                     **options))
    return model, calibration, advanced, weights


def test_weight_calibration_brings_the_shipped_vgg_closer_to_its_ann(shipped):
    model, calibration, advanced, weights = shipped
    fits = [(e["clip_floor_mse_before"], e["clip_floor_mse_after"]) for e in weights.calibration_log]
    assert all(after <= before for before, after in fits)  # a fit that does not help is not kept
    assert sum(after < 0.95 * before for before, after in fits) >= 3, fits
    with torch.no_grad():
        logits = model(calibration.x)
        error = {label: float((snn_rate_output(net, calibration.x, 4) - logits).abs().mean())
                 for label, net in (("advanced", advanced), ("weights", weights))}
    assert error["weights"] < 0.8 * error["advanced"], error


def test_the_ann_stays_the_reference_after_weight_calibration(shipped, tmp_path):
    model, calibration, advanced, network = shipped
    network = copy.deepcopy(network)
    images = calibration.x
    changed = set(network.ann_weights)
    assert changed and all(key.endswith("weight") for key in changed)
    state = network.graph.state_dict()
    assert all(not torch.equal(state[k], network.ann_weights[k]) for k in changed)
    with torch.no_grad():
        assert torch.allclose(network.ann_graph()(images), model(images), atol=1e-4)
        assert not torch.allclose(network.graph(images), model(images), atol=1e-4)
    simulation = snnconv.SimulationConfig(time_steps=4)
    assert snnconv.evaluate(network, calibration, simulation).ann.correct == \
        snnconv.evaluate(advanced, calibration, simulation).ann.correct
    network.restore_ann_weights()
    with torch.no_grad():
        assert torch.allclose(network.graph(images), model(images), atol=1e-4)
    assert network.ann_weights == {}


def test_weight_calibrated_artifact_round_trip(shipped, tmp_path):
    model, calibration, _, network = shipped
    images = calibration.x
    snnconv.save(network, tmp_path / "a")
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert manifest["schema_version"] == 3 and manifest["ann_weights"] == sorted(network.ann_weights)
    loaded = snnconv.load(tmp_path / "a")
    assert sorted(loaded.ann_weights) == sorted(network.ann_weights)
    assert all(torch.equal(loaded.ann_weights[k], network.ann_weights[k]) for k in network.ann_weights)
    with torch.no_grad():
        assert torch.equal(snn_rate_output(loaded, images, 4), snn_rate_output(network, images, 4))
        assert torch.allclose(loaded.ann_graph()(images), model(images), atol=1e-4)

    (tmp_path / "a" / ANN_WEIGHTS).unlink()
    with pytest.raises(ArtifactError, match=ANN_WEIGHTS):
        snnconv.load(tmp_path / "a")


def test_plain_artifacts_carry_no_ann_weights(images, tmp_path):
    network = convert(build("mlp"), images, calibrate="advanced", time_steps=4)
    assert network.ann_weights == {}
    snnconv.save(network, tmp_path / "a")
    assert not (tmp_path / "a" / ANN_WEIGHTS).exists()
    assert json.loads((tmp_path / "a" / MANIFEST).read_text())["schema_version"] == 1


def test_ttfs_starts_from_the_ann_weights(shipped):
    model, calibration, _, network = shipped
    ttfs = build_ttfs(network, calibration, TTFSConfig())
    assert ttfs.ann_weights == {} and network.ann_weights  # the source network keeps its calibration
    state = ttfs.graph.state_dict()
    assert all(torch.equal(state[k], network.ann_weights[k]) for k in network.ann_weights)
