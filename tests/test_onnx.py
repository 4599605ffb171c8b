"""ONNX and TorchScript import: onnxruntime (or the TorchScript module itself) is the oracle.

A model imported from ONNX must compute what onnxruntime computes, and must convert into the same
SNN as the PyTorch module it was exported from (same thresholds, hence the same spikes).
"""
import warnings

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import snnconv
from snnconv.config import BalanceConfig, ConvertConfig
from snnconv.errors import DataError, ImportMismatchError, ModelLoadError, UnsupportedLayerError
from snnconv.stages.convert import coverage_table, normalize

from conftest import SHARED
from helpers import as_data, snn_rate_output
from models import INPUT_SHAPE, build

ONNX_MODELS = ("mlp", "residual", "maxpool", "concat")  # "vgg" (view by batch size): its own test
RESNETS = {name: SHARED / "models" / f"cifar10-{name}.onnx" for name in ("resnet20", "resnet32")}
CIFAR_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
CIFAR_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
CONFIG = ConvertConfig(balance=BalanceConfig(method="max", granularity="layer"))


def export(model: nn.Module, x: torch.Tensor, path) -> str:
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    return str(path)


def onnxruntime_output(path, x: torch.Tensor, batch: int | None = None) -> np.ndarray:
    """onnxruntime's output on ``x``, fed ``batch`` samples per run (all at once by default)."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name, step = session.get_inputs()[0].name, batch or len(x)
    return np.concatenate([session.run(None, {name: x[i:i + step].numpy().astype(np.float32)})[0]
                           for i in range(0, len(x), step)])


def graph_output(graph, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return graph(x).numpy()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def cifar_inputs(count: int, seed: int = 0) -> torch.Tensor:
    """Random images in [0, 1), normalized like the CIFAR-10 ResNets' training data."""
    return (torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) - CIFAR_MEAN) / CIFAR_STD


@pytest.mark.parametrize("name", ONNX_MODELS)
def test_onnx_import_matches_onnxruntime(name, images, tmp_path):
    path = export(build(name), images[:2], tmp_path / f"{name}.onnx")
    imported = snnconv.load_model(path, example=images)
    assert imported.source_format == "onnx"
    assert imported.input_shape == INPUT_SHAPE
    assert imported.import_check["oracle"] == "onnxruntime"
    assert imported.import_check["max_abs_diff"] < 1e-5
    reference = onnxruntime_output(path, images)
    assert np.abs(graph_output(imported.graph, images) - reference).max() < 1e-4
    # a batch size the export never saw: the dynamic batch axis survived the import
    assert np.abs(graph_output(imported.graph, images[:5]) - reference[:5]).max() < 1e-4


@pytest.mark.parametrize("name", ONNX_MODELS)
def test_onnx_and_pytorch_convert_to_the_same_snn(name, images, tmp_path):
    model = build(name)
    path = export(model, images[:2], tmp_path / f"{name}.onnx")
    data = as_data(images, model)
    from_torch = snnconv.convert(model, data, CONFIG)
    from_onnx = snnconv.convert(path, data, CONFIG)
    thresholds_torch = [float(n.threshold) for _, n in from_torch.neuron_layers()]
    thresholds_onnx = [float(n.threshold) for _, n in from_onnx.neuron_layers()]
    assert thresholds_onnx == pytest.approx(thresholds_torch, rel=1e-5)
    snn_torch = snn_rate_output(from_torch, images, 64)
    snn_onnx = snn_rate_output(from_onnx, images, 64)
    assert relative(snn_onnx, snn_torch) < 1e-3
    assert from_onnx.source["format"] == "onnx"
    assert from_onnx.source["import_check"]["max_abs_diff"] < 1e-5


class ScaledInputNet(nn.Module):
    """Input normalization inside the model: ONNX Sub and Div by constants, then a plain CNN."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = (x - 0.5) / 0.25
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


def test_onnx_division_by_a_constant_imports_and_converts(images, tmp_path):
    torch.manual_seed(0)
    model = ScaledInputNet().eval()
    path = export(model, images[:2], tmp_path / "scaled.onnx")
    imported = snnconv.load_model(path, example=images)
    assert np.abs(graph_output(imported.graph, images) - onnxruntime_output(path, images)).max() < 1e-4
    data = as_data(images, model)
    snn_onnx = snn_rate_output(snnconv.convert(path, data, CONFIG), images, 64)
    snn_torch = snn_rate_output(snnconv.convert(model, data, CONFIG), images, 64)
    assert relative(snn_onnx, snn_torch) < 1e-3


def test_view_by_batch_size_imports(images, tmp_path):
    """x.view(x.size(0), -1) exports Shape->Gather->Concat->Reshape; it imports and converts like a flatten."""
    model = build("vgg")
    path = export(model, images[:2], tmp_path / "vgg.onnx")
    imported = snnconv.load_model(path, example=images)
    assert np.abs(graph_output(imported.graph, images) - onnxruntime_output(path, images)).max() < 1e-4
    from_onnx = snnconv.convert(path, as_data(images, model), CONFIG)
    from_torch = snnconv.convert(model, as_data(images, model), CONFIG)
    assert relative(snn_rate_output(from_onnx, images, 32), snn_rate_output(from_torch, images, 32)) < 1e-3


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_exported_with_a_fixed_batch_size_imports_and_converts(batch, images, tmp_path):
    """A plain torch.onnx.export without dynamic axes: the input declares [batch, 1, 8, 8] and x.view(x.size(0), -1)
    becomes a constant Reshape target. The import runs at any batch size and still matches onnxruntime."""
    model = build("vgg")
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(model, (images[:batch],), str(path), dynamo=False)
    imported = snnconv.load_model(path, example=images)  # 64 samples: the oracle pads the last run of 3
    assert imported.input_shape == INPUT_SHAPE and imported.import_check["max_abs_diff"] < 1e-5
    reference = onnxruntime_output(path, images[:63], batch)
    assert np.abs(graph_output(imported.graph, images[:63]) - reference).max() < 1e-4
    assert np.abs(graph_output(imported.graph, images[:5]) - reference[:5]).max() < 1e-4
    from_onnx = snnconv.convert(path, as_data(images, model), CONFIG)
    from_torch = snnconv.convert(model, as_data(images, model), CONFIG)
    assert relative(snn_rate_output(from_onnx, images, 32), snn_rate_output(from_torch, images, 32)) < 1e-3


class BatchMixingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(F.relu(x.reshape(-1)).reshape(x.shape[0], 64))


def test_fixed_batch_reshape_across_the_batch_is_refused(images, tmp_path):
    path = tmp_path / "mixing.onnx"
    torch.onnx.export(BatchMixingNet().eval(), (images[:2],), str(path), dynamo=False)
    with pytest.raises(UnsupportedLayerError, match="fixed batch size of 2.*Reshape.*dynamic batch axis") as info:
        snnconv.load_model(path, example=images)
    assert info.value.exit_code == 6


class BatchConstantNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(68, 10)

    def forward(self, x):
        return self.fc(torch.cat([F.relu(x.flatten(1)), torch.ones(x.shape[0], 4)], 1))


def test_fixed_batch_constant_that_fails_at_other_batch_sizes_is_one_sentence(images, tmp_path):
    path = tmp_path / "constant.onnx"
    torch.onnx.export(BatchConstantNet().eval(), (images[:2],), str(path), dynamo=False)
    with pytest.raises(ImportMismatchError, match="fixed batch size of 2.*dynamic batch axis") as info:
        snnconv.load_model(path, example=images)
    assert info.value.exit_code == 7


def test_onnx_with_data_of_the_wrong_shape_is_a_data_error(images, tmp_path):
    path = export(build("mlp"), images[:2], tmp_path / "mlp.onnx")
    rgb = torch.rand(8, 3, 8, 8)
    wrong = r"data 'test images' has samples of shape \(3, 8, 8\).*declares \(1, 8, 8\)"
    with pytest.raises(DataError, match=wrong) as info:
        snnconv.convert(path, as_data(rgb), CONFIG)
    assert info.value.exit_code == 8


def test_torchscript_with_data_of_the_wrong_shape_is_a_data_error(images, tmp_path):
    """TorchScript declares no input shape; the data it fails on is named with the cause, not the export's trace."""
    path = tmp_path / "model.pt"
    with torch.no_grad():
        torch.jit.trace(build("mlp"), images[:2]).save(str(path))
    named = r"shape \(3, 8, 8\), on which TorchScript model .* fails \(RuntimeError"
    with pytest.raises(DataError, match=named) as info:
        snnconv.convert(path, as_data(torch.rand(8, 3, 8, 8)), CONFIG)
    assert info.value.exit_code == 8 and "Traceback" not in str(info.value)


def test_an_onnx_operator_without_a_rule_is_named_with_its_opset(tmp_path):
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Hardmax", ["r"], ["y"])],
                              "hardmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])])
    path = tmp_path / "hardmax.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    with pytest.raises(UnsupportedLayerError, match=r"uses operator Hardmax \(opset 13\), which has no conversion "
                                                    r"rule; .* open an issue") as info:
        snnconv.load_model(path, example=torch.rand(4, 10))
    assert info.value.exit_code == 6


@pytest.mark.parametrize("fmt,value", [("onnx", np.nan), ("onnx", np.inf), ("torchscript", np.nan)])
def test_non_finite_weights_are_named_before_the_oracle(fmt, value, images, tmp_path):
    model = build("mlp")
    with torch.no_grad():
        model.fc2.weight[0, 0] = value
    if fmt == "onnx":
        path = export(model, images[:2], tmp_path / "bad.onnx")
    else:
        path = tmp_path / "bad.pt"
        with torch.no_grad():
            torch.jit.trace(model, images[:2]).save(str(path))
    with pytest.raises(ModelLoadError, match=r"has NaN or Inf values in 'fc2\.weight'") as info:
        snnconv.load_model(path, example=images)
    assert info.value.exit_code == 4


def test_torchscript_import_prints_no_torch_warnings(images, tmp_path):
    path = tmp_path / "model.pt"
    with torch.no_grad():
        torch.jit.trace(build("mlp"), images[:2]).save(str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        snnconv.load_model(path, example=images)
    # Deprecation warnings are hidden by Python's default filters; these two categories are what a user sees
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, UserWarning))] == []


def _mlp_with(activation: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 16), activation,
                         nn.Linear(16, 10)).eval()


@pytest.mark.parametrize("activation,op", [(nn.Sigmoid(), "Sigmoid"), (nn.GELU(), "erf")])  # opset 17 GELU = Erf
def test_onnx_unsupported_op_is_named(activation, op, images, tmp_path):
    path = export(_mlp_with(activation), images[:2], tmp_path / "unsupported.onnx")
    with pytest.raises(UnsupportedLayerError, match=op):
        snnconv.convert(path, as_data(images), CONFIG)


class GridSampleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        grid = torch.zeros(x.shape[0], 4, 4, 2)
        return self.fc(torch.flatten(F.relu(F.grid_sample(x, grid, align_corners=False)), 1))


def test_onnx_op_without_importer_is_named(images, tmp_path):
    path = export(GridSampleNet().eval(), images[:2], tmp_path / "grid.onnx")
    with pytest.raises(UnsupportedLayerError, match="GridSample"):
        snnconv.load_model(path, example=images)


def test_corrupt_onnx_file_fails_to_load(images, tmp_path):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match="corrupt.onnx"):
        snnconv.load_model(path, example=images)


def test_truncated_onnx_file_fails_to_load(images, tmp_path):
    path = export(build("mlp"), images[:2], tmp_path / "whole.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(open(path, "rb").read()[:1000])
    with pytest.raises(ModelLoadError, match="truncated.onnx"):
        snnconv.load_model(truncated, example=images)


def test_missing_onnx_file_fails_to_load(images, tmp_path):
    with pytest.raises(ModelLoadError, match="missing.onnx"):
        snnconv.load_model(tmp_path / "missing.onnx", example=images)
    with pytest.raises(ModelLoadError, match="missing.onnx"):
        snnconv.convert(str(tmp_path / "missing.onnx"), as_data(images), CONFIG)


@pytest.mark.parametrize("name", ["residual", "maxpool"])
def test_torchscript_import_matches_module(name, images, tmp_path):
    model = build(name)
    path = tmp_path / "model.pt"
    with torch.no_grad():
        torch.jit.trace(model, images[:2]).save(str(path))
    imported = snnconv.load_model(path, example=images)
    assert imported.source_format == "torchscript"
    assert imported.import_check["max_abs_diff_to_torchscript"] < 1e-4
    with torch.no_grad():
        assert (imported.graph(images) - model(images)).abs().max() < 1e-4


# ---------------------------------------------------------------- real third-party ONNX
@pytest.mark.parametrize("name", sorted(RESNETS))
def test_cifar_resnet_imports_with_full_coverage(name):
    path = RESNETS[name]
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    torch.set_num_threads(1)
    x = cifar_inputs(16)
    imported = snnconv.load_model(path, example=x)
    assert imported.input_shape == (3, 32, 32)
    reference = onnxruntime_output(path, x)
    assert np.abs(graph_output(imported.graph, x) - reference).max() < 1e-3
    ann, records = normalize(imported.graph)
    rows = coverage_table(ann, records)
    assert rows and all(row.status in ("converted", "passed through", "folded", "removed") for row in rows)
    assert not any(row.status == "unsupported" for row in rows)
    targets = {row.target for row in rows}
    assert {"Conv2d", "ReLU", "Linear", "torch.nn.functional.pad", "_operator.getitem"} <= targets


@pytest.mark.skipif(not RESNETS["resnet20"].is_file(), reason="shared ResNet-20 ONNX file is absent")
def test_cifar_resnet20_converts_and_runs():
    torch.set_num_threads(1)
    x = cifar_inputs(64, seed=1)
    imported = snnconv.load_model(RESNETS["resnet20"], example=x)
    network = snnconv.convert(imported, as_data(x, imported.graph), CONFIG)
    assert len(network.neuron_layers()) == 19  # 1 stem + 9 blocks x 2
    evaluation = snnconv.evaluate(network, as_data(x[:16], imported.graph), snnconv.SimulationConfig(time_steps=8))
    simulation = evaluation.simulation
    assert simulation.samples == 16 and len(simulation.correct_per_step) == 8
    assert all(layer.spikes > 0 for layer in simulation.neuron_layers)
    assert evaluation.ann.accuracy == 100.0  # labels are the ANN's own predictions
    out = snn_rate_output(network, x[:16], 8, chunk_steps=8)
    assert out.shape == (16, 10) and torch.isfinite(out).all()
