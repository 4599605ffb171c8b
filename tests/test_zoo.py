"""snnconv.zoo: the named architectures trace with torch.fx, keep their budgets, and the default model works."""
from __future__ import annotations

import operator
from importlib import resources
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from snnconv import zoo
from snnconv.data import DataConfig, load_data

PARAMETER_BUDGET = 600_000


@pytest.fixture(params=sorted(zoo.ARCHITECTURES))
def arch(request) -> str:
    return request.param


def test_architecture_shapes_and_budget(arch):
    torch.manual_seed(0)
    model = zoo.ARCHITECTURES[arch]().eval()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, zoo.NUM_CLASSES)
    assert sum(p.numel() for p in model.parameters()) < PARAMETER_BUDGET


def test_architecture_traces_with_fx_and_computes_the_same(arch):
    torch.manual_seed(0)
    model = zoo.ARCHITECTURES[arch]().eval()
    traced = fx.symbolic_trace(model)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))
    relu_modules = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relu_modules, "conversion needs ReLU activations"
    assert not any(isinstance(m, (nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU)) for m in model.modules())


def test_vgg_mixes_module_and_functional_relu():
    traced = fx.symbolic_trace(zoo.fmnist_vgg())
    functional = [n for n in traced.graph.nodes if n.op == "call_function" and n.target is F.relu]
    assert len(functional) == 1
    assert any(isinstance(m, nn.BatchNorm2d) for m in traced.modules())
    assert any(isinstance(m, nn.AvgPool2d) for m in traced.modules())


def test_resnet_has_residual_adds_and_a_projection_shortcut():
    model = zoo.fmnist_resnet()
    traced = fx.symbolic_trace(model)
    adds = [n for n in traced.graph.nodes if n.op == "call_function" and n.target is operator.add]
    assert len(adds) == 3
    projections = [m for m in model.modules() if isinstance(m, zoo.BasicBlock)
                   and isinstance(m.shortcut, nn.Sequential)]
    assert len(projections) == 1


def test_maxpool_net_has_max_pooling_and_no_batch_norm():
    model = zoo.fmnist_maxpool()
    assert any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_default_input_spec():
    assert zoo.DEFAULT_INPUT == {"shape": [1, 28, 28], "mean": None, "std": None}


def test_shipped_weights_are_small():
    weights = resources.files("snnconv") / "assets" / zoo.DEFAULT_WEIGHTS
    assert weights.is_file()
    assert len(weights.read_bytes()) < 3_000_000


def test_default_model_classifies_the_builtin_test_split():
    """A real check of the shipped weights: > 85 % on the 2,000 shipped test images."""
    model = zoo.default_model()
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    data = load_data(DataConfig("builtin", split="test"))
    assert list(data.sample_shape) == zoo.DEFAULT_INPUT["shape"]
    correct = 0
    with torch.no_grad():
        for x, y in data.batches(500):
            correct += int((model(x).argmax(1) == y).sum())
    accuracy = 100.0 * correct / len(data)
    assert accuracy > 85.0, f"default model reaches only {accuracy:.2f} % on the builtin test split"


@pytest.mark.parametrize("arch", ["resnet", "maxpool"])
def test_benchmark_weights_match_their_architecture(arch):
    """The committed benchmark models load strictly into their zoo architecture and classify well."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "models" / f"fmnist_{arch}.pt"
    model = zoo.ARCHITECTURES[arch]()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    data = load_data(DataConfig("builtin", split="test"))
    with torch.no_grad():
        accuracy = 100.0 * float((model.eval()(data.x).argmax(1) == data.y).float().mean())
    assert accuracy > 85.0, f"{path.name} reaches only {accuracy:.2f} % on the builtin test split"
