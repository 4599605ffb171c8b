"""Artifacts: save -> load rebuilds a network that simulates bit for bit like the original.

The oracle is the network that was saved: the loaded one must give the identical correct-per-step
curve, the identical spikes in every layer and identical thresholds. Broken, newer or foreign
directories fail with ArtifactError / OutputError and are never half written or overwritten.
"""
import json
import os
import re
import stat

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import snnconv
from snnconv.artifacts import MANIFEST, SCHEMA_VERSION, WEIGHTS
from snnconv.config import BalanceConfig, ConvertConfig, SimulationConfig
from snnconv.errors import ArtifactError, OutputError
from snnconv.importers.torch_import import state_dict_sha256

from conftest import SHARED
from helpers import as_data, convert
from models import INPUT_SHAPE, TINY_MODELS, build

CONVERSIONS = {
    "light_calibrated": dict(calibrate="light", time_steps=16),
    "channel_balanced": dict(balance=BalanceConfig(method="max", granularity="channel")),
    "signed_advanced": dict(signed_spikes=True, calibrate="advanced", time_steps=16),
}
RESNET20 = SHARED / "models" / "cifar10-resnet20.onnx"


def _modules_by_node(network) -> list[tuple[str, str]]:
    graph = network.graph
    return [(n.name, type(graph.get_submodule(n.target)).__name__ if n.op == "call_module" else n.op)
            for n in graph.graph.nodes]


def assert_same_simulation(original, loaded, data, time_steps: int = 16) -> None:
    config = SimulationConfig(time_steps=time_steps, chunk_steps=8)
    a = snnconv.evaluate(original, data, config).simulation
    b = snnconv.evaluate(loaded, data, config).simulation
    assert np.array_equal(a.correct_per_step, b.correct_per_step)
    assert [layer.name for layer in a.neuron_layers] == [layer.name for layer in b.neuron_layers]
    for x, y in zip(a.neuron_layers, b.neuron_layers):
        assert np.array_equal(x.spikes_per_step, y.spikes_per_step), x.name
        assert x.neurons == y.neurons and x.kind == y.kind
    assert [layer.name for layer in a.synaptic_layers] == [layer.name for layer in b.synaptic_layers]
    for x, y in zip(a.synaptic_layers, b.synaptic_layers):
        assert np.array_equal(x.ops_per_step, y.ops_per_step), x.name
        assert x.spiking_input == y.spiking_input
    assert sum(layer.spikes for layer in a.neuron_layers) > 0


def assert_same_network(original, loaded) -> None:
    assert _modules_by_node(loaded) == _modules_by_node(original)
    state_a, state_b = original.graph.state_dict(), loaded.graph.state_dict()
    assert set(state_a) == set(state_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    thresholds_a = {name: neuron.threshold for name, neuron in original.neuron_layers()}
    thresholds_b = {name: neuron.threshold for name, neuron in loaded.neuron_layers()}
    assert thresholds_a.keys() == thresholds_b.keys()
    for name in thresholds_a:
        assert torch.equal(thresholds_a[name], thresholds_b[name]), name
    assert [n.half_init for _, n in original.neuron_layers()] == [n.half_init for _, n in loaded.neuron_layers()]
    assert [n.signed for _, n in original.neuron_layers()] == [n.signed for _, n in loaded.neuron_layers()]
    assert loaded.config == original.config
    assert loaded.input_shape == original.input_shape
    assert loaded.time_steps == original.time_steps
    assert loaded.num_classes == original.num_classes
    assert loaded.coverage == original.coverage
    assert loaded.source == original.source


@pytest.mark.parametrize("conversion", sorted(CONVERSIONS))
@pytest.mark.parametrize("name", TINY_MODELS)
def test_round_trip_simulates_identically(name, conversion, images, tmp_path):
    model = build(name)
    network = convert(model, images, **CONVERSIONS[conversion])
    if conversion == "light_calibrated":
        assert network.calibration_log, "light calibration should have run"
    saved = snnconv.save(network, tmp_path / "a")
    loaded = snnconv.load(saved)
    assert_same_network(network, loaded)
    with torch.no_grad():  # called directly, both compute the normalized ANN
        assert torch.equal(loaded.graph(images), network.graph(images))
    assert_same_simulation(network, loaded, as_data(images, model))


def test_weights_are_plain_tensors_and_manifest_is_complete(images, tmp_path):
    model = build("vgg")
    network = convert(model, images, balance=BalanceConfig(method="max", granularity="channel"), time_steps=24)
    snnconv.save(network, tmp_path / "a")

    state = torch.load(tmp_path / "a" / WEIGHTS, weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert set(network.graph.state_dict()) <= set(state)

    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert manifest["schema_version"] == 1 <= SCHEMA_VERSION  # a plain artifact stays readable by older versions
    assert manifest["snnconv_version"] == snnconv.__version__
    assert manifest["source"]["sha256"] == state_dict_sha256(model)
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["source"]["sha256"])
    assert manifest["input"]["shape"] == list(INPUT_SHAPE)
    assert manifest["input"]["num_classes"] == 10
    assert manifest["time_steps"] == 24
    assert manifest["config"]["balance"]["time_steps"] == 12  # resolved: half the converted T
    # only options a plain conversion uses, so that older versions (which refuse unknown ones) read it
    assert manifest["config"] == {k: v for k, v in network.config.to_dict().items()
                                  if not k.startswith("weight_calibration")}
    assert ConvertConfig.from_dict(manifest["config"]) == network.config
    layers = {layer["name"]: layer for layer in manifest["layers"]}
    assert list(layers) == [name for name, _ in network.neuron_layers()]
    for name, neuron in network.neuron_layers():
        assert layers[name]["time_steps"] == 24
        assert layers[name]["threshold"] == neuron.threshold.tolist()  # channel-wise: one per channel
        assert len(layers[name]["threshold"]) == neuron.threshold.numel() > 1


@pytest.fixture
def artifact(images, tmp_path):
    network = convert(build("mlp"), images)
    return snnconv.save(network, tmp_path / "a")


def _edit_manifest(directory, edit) -> None:
    path = directory / MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_newer_schema_is_refused(artifact):
    _edit_manifest(artifact, lambda m: m.update(schema_version=999))
    with pytest.raises(ArtifactError, match="newer"):
        snnconv.load(artifact)


def test_missing_weights_are_refused(artifact):
    (artifact / WEIGHTS).unlink()
    with pytest.raises(ArtifactError, match=WEIGHTS):
        snnconv.load(artifact)


def test_corrupt_weights_are_refused(artifact):
    (artifact / WEIGHTS).write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(ArtifactError, match="corrupt"):
        snnconv.load(artifact)


def test_weights_with_nan_are_refused(artifact):
    state = torch.load(artifact / WEIGHTS, weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name].view(-1)[0] = float("nan")
    torch.save(state, artifact / WEIGHTS)
    with pytest.raises(ArtifactError, match=f"NaN or Inf values in '{name}'; the artifact is corrupt"):
        snnconv.load(artifact)


def test_corrupt_manifest_is_refused(artifact):
    (artifact / MANIFEST).write_text('{"schema_version": 1, "graph": ')
    with pytest.raises(ArtifactError, match="corrupt"):
        snnconv.load(artifact)


@pytest.mark.parametrize("field", ["graph", "config", "input", "coverage", "layers", "time_steps", "source"])
def test_manifest_missing_a_field_is_refused(artifact, field):
    _edit_manifest(artifact, lambda m: m.pop(field))
    with pytest.raises(ArtifactError, match=field):
        snnconv.load(artifact)


def test_manifest_with_a_malformed_field_is_refused(artifact):
    _edit_manifest(artifact, lambda m: m["input"].pop("num_classes"))
    with pytest.raises(ArtifactError, match="lacks field 'num_classes'"):
        snnconv.load(artifact)
    _edit_manifest(artifact, lambda m: m.update(time_steps="many"))
    with pytest.raises(ArtifactError, match="malformed field .*'many'.*corrupt"):
        snnconv.load(artifact)


def test_manifest_missing_a_neuron_layer_is_refused(artifact):
    first = json.loads((artifact / MANIFEST).read_text())["layers"][0]["name"]
    _edit_manifest(artifact, lambda m: m.update(layers=m["layers"][1:]))
    with pytest.raises(ArtifactError, match=f"'{first}'.*corrupt"):
        snnconv.load(artifact)


def test_manifest_without_schema_version_is_refused(artifact):
    _edit_manifest(artifact, lambda m: m.pop("schema_version"))
    with pytest.raises(ArtifactError, match="schema_version"):
        snnconv.load(artifact)


def test_the_artifact_directory_gets_the_permissions_mkdir_would_give(artifact):
    """The staging directory is private while it is written; the artifact is not."""
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(artifact.stat().st_mode) == 0o777 & ~umask


def test_directory_without_manifest_is_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="not an snnconv artifact"):
        snnconv.load(tmp_path)


def _snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None for p in directory.rglob("*")}


def test_save_refuses_a_foreign_directory_and_leaves_it_untouched(images, tmp_path):
    foreign = tmp_path / "photos"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (foreign / "sub" / "notes.txt").write_text("keep me")
    before = _snapshot(foreign)
    network = convert(build("mlp"), images)
    with pytest.raises(OutputError, match="photos"):
        snnconv.save(network, foreign)
    assert _snapshot(foreign) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no staging directory left behind


def test_save_replaces_an_existing_artifact(images, tmp_path):
    first = convert(build("mlp"), images)
    second = convert(build("concat"), images)
    snnconv.save(first, tmp_path / "a")
    snnconv.save(second, tmp_path / "a")
    assert_same_network(second, snnconv.load(tmp_path / "a"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_save_into_an_empty_directory(images, tmp_path):
    (tmp_path / "a").mkdir()
    network = convert(build("mlp"), images)
    snnconv.save(network, tmp_path / "a")
    assert_same_network(network, snnconv.load(tmp_path / "a"))


def test_failed_save_leaves_no_directory(images, tmp_path, monkeypatch):
    network = convert(build("mlp"), images)

    def broken_save(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk on fire"):
        snnconv.save(network, tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_previous_artifact(images, tmp_path, monkeypatch):
    network = convert(build("mlp"), images)
    snnconv.save(network, tmp_path / "a")
    before = _snapshot(tmp_path / "a")
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OutputError, match="No space left"):
        snnconv.save(convert(build("concat"), images), tmp_path / "a")
    assert _snapshot(tmp_path / "a") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


# ---------------------------------------------------------------- graph constants
class ConstantsNet(nn.Module):
    """Three kinds of get_attr: a root parameter, a root buffer, and a tensor made during tracing."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.register_buffer("shift", torch.tensor(0.1))
        self.fc1, self.fc2 = nn.Linear(64, 16), nn.Linear(16, 10)

    def forward(self, x):
        x = x.flatten(1) * self.scale - self.shift + torch.linspace(0, 0.5, 64)
        return self.fc2(F.relu(self.fc1(x)))


def test_pytorch_graph_constants_survive_round_trip(images, tmp_path):
    torch.manual_seed(0)
    model = ConstantsNet().eval()
    network = convert(model, images)
    assert sum(n.op == "get_attr" for n in network.graph.graph.nodes) == 3
    loaded = snnconv.load(snnconv.save(network, tmp_path / "a"))
    assert_same_network(network, loaded)
    with torch.no_grad():
        assert torch.equal(loaded.graph(images), network.graph(images))
    assert_same_simulation(network, loaded, as_data(images, model))


# ---------------------------------------------------------------- ONNX-imported graphs
class ScaledInputNet(nn.Module):
    """Input normalization inside the model: its ONNX constants become get_attr nodes."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = (x - 0.5) / 0.25
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


def _export(model, x, path):
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    return path


def test_onnx_graph_constants_survive_round_trip(images, tmp_path):
    torch.manual_seed(0)
    model = ScaledInputNet().eval()
    path = _export(model, images[:2], tmp_path / "scaled.onnx")
    data = as_data(images, model)
    network = snnconv.convert(path, data, ConvertConfig(balance=BalanceConfig(method="max", granularity="layer")))
    assert any(n.op == "get_attr" for n in network.graph.graph.nodes)
    loaded = snnconv.load(snnconv.save(network, tmp_path / "a"))
    assert any(n.op == "get_attr" for n in loaded.graph.graph.nodes)
    assert_same_network(network, loaded)
    with torch.no_grad():
        assert torch.equal(loaded.graph(images), network.graph(images))
    assert_same_simulation(network, loaded, data)


@pytest.mark.skipif(not RESNET20.is_file(), reason="shared ResNet-20 ONNX file is absent")
def test_onnx_resnet20_round_trip(tmp_path):
    torch.set_num_threads(1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0)) - mean) / std
    imported = snnconv.load_model(RESNET20, example=x)
    network = snnconv.convert(imported, as_data(x, imported.graph),
                              ConvertConfig(balance=BalanceConfig(method="max", granularity="channel")))
    loaded = snnconv.load(snnconv.save(network, tmp_path / "resnet20"))
    assert_same_network(network, loaded)
    # the option-A shortcuts: strided slices and channel padding, stored as plain data
    slices = [n for n in loaded.graph.graph.nodes if n.op == "call_function" and n.target.__name__ == "getitem"]
    assert len(slices) == 4
    assert all(any(isinstance(i, slice) and i.step == 2 for i in n.args[1]) for n in slices)
    with torch.no_grad():
        assert torch.equal(loaded.graph(x), network.graph(x))
    assert_same_simulation(network, loaded, as_data(x[:16], imported.graph), time_steps=8)
