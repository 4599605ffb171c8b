"""Every handler and pass end to end: the SNN's rate output approaches the ANN's logits at large T."""
import pytest
import torch
import torchvision

import snnconv
from snnconv.engine import Engine, TimePlan
from snnconv.errors import UnsupportedLayerError
from snnconv.neurons import IFNeuron, MaxPoolGate

from helpers import as_data, convert, snn_rate_output
from models import TINY_MODELS, GELUNet, LSTMNet, NoReLUNet, build

# Rate coding quantizes each layer to theta/T; at T = 1024 the logits must agree to 2 % of their range.
LARGE_T = 1024
RELATIVE_TOLERANCE = 0.02


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_model_snn_matches_ann_at_large_t(name, images):
    model = build(name)
    network = convert(model, images)
    with torch.no_grad():
        ann = model(images)
    snn = snn_rate_output(network, images, LARGE_T)
    error = (snn - ann).abs().max() / ann.abs().max()
    assert error < RELATIVE_TOLERANCE, f"{name}: relative error {error:.4f}"
    assert (snn.argmax(1) == ann.argmax(1)).float().mean() >= 0.95


@pytest.mark.parametrize("name", TINY_MODELS)
def test_error_shrinks_with_t(name, images):
    model = build(name)
    network = convert(model, images)
    with torch.no_grad():
        ann = model(images)
    errors = [float((snn_rate_output(network, images, t) - ann).abs().mean()) for t in (16, 256)]
    assert errors[1] < errors[0] / 3


def test_every_relu_form_becomes_a_neuron(images):
    """F.relu, torch.relu, Tensor.relu, nn.ReLU (shared and in-place) are all found; one neuron per use site."""
    network = convert(build("vgg"), images)  # shared module used twice + in-place module
    neurons = [n for n in network.graph.graph.nodes if n.op == "call_module"
               and isinstance(network.graph.get_submodule(n.target), IFNeuron)]
    assert len(neurons) == 3
    network = convert(build("residual"), images)  # F.relu x2 and Tensor.relu
    assert len(network.neuron_layers()) == 3
    network = convert(build("mlp"), images)  # F.relu and torch.relu
    assert len(network.neuron_layers()) == 2


def test_maxpool_becomes_gate_after_relu(images):
    network = convert(build("maxpool"), images)
    kinds = [type(network.graph.get_submodule(n.target)).__name__ for n in network.graph.graph.nodes
             if n.op == "call_module"]
    assert kinds.count("MaxPoolGate") == 2
    # pass moved the first pool after its ReLU: the gate reads spikes
    for node in network.graph.graph.nodes:
        if node.op == "call_module" and isinstance(network.graph.get_submodule(node.target), MaxPoolGate):
            source = node.args[0]
            assert isinstance(network.graph.get_submodule(source.target), IFNeuron)


def test_maxpool_avg_rewrite_records_source_ann(images):
    model = build("maxpool")
    network = convert(model, images, maxpool="avg")
    assert not any(isinstance(m, (MaxPoolGate, torch.nn.MaxPool2d)) for m in network.graph.modules())
    evaluation = snnconv.evaluate(network, as_data(images, model), snnconv.SimulationConfig(time_steps=4))
    assert evaluation.ann_before_rewrite is not None
    assert evaluation.ann_before_rewrite.accuracy == 100.0  # labels are the source ANN's own predictions


def test_coverage_lists_every_node(images):
    network = convert(build("vgg"), images)
    statuses = {row.node: row.status for row in network.coverage}
    assert sum(s == "folded" for s in statuses.values()) == 2
    assert all(s in ("converted", "passed through", "folded", "removed") for s in statuses.values())
    graph_nodes = {n.name for n in network.graph.graph.nodes if n.op not in ("placeholder", "output", "get_attr")}
    assert graph_nodes <= set(statuses)


@pytest.mark.parametrize("factory", [torchvision.models.resnet18, torchvision.models.vgg11_bn])
def test_torchvision_models_convert_with_full_coverage(factory):
    torch.manual_seed(0)
    model = factory(num_classes=10).eval()
    for module in model.modules():  # keep random-weight activations from vanishing with depth
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.fill_(0.05)
    x = torch.rand(8, 3, 32, 32)
    network = convert(model, x)
    assert all(row.status != "unsupported" for row in network.coverage)
    with torch.no_grad():
        ann = model(x)
    snn = snn_rate_output(network, x, 512, chunk_steps=64)
    correlation = torch.corrcoef(torch.stack([snn.flatten(), ann.flatten()]))[0, 1]
    assert correlation > 0.99, f"correlation {correlation:.4f}"
    assert (snn.argmax(1) == ann.argmax(1)).float().mean() >= 0.75


@pytest.mark.parametrize("model,node_type", [(GELUNet(), "gelu"), (LSTMNet(), "LSTM")])
def test_unsupported_layer_is_named(model, node_type, images):
    with pytest.raises(UnsupportedLayerError, match=node_type):
        snnconv.convert(model.eval(), as_data(images))


def test_model_without_relu_fails_clearly(images):
    with pytest.raises(UnsupportedLayerError, match="no ReLU"):
        snnconv.convert(NoReLUNet().eval(), as_data(images))


@pytest.mark.parametrize("name", ["vgg", "residual", "maxpool"])
@pytest.mark.parametrize("chunk", [1, 5])
def test_chunked_engine_equals_unchunked(name, chunk, images):
    network = convert(build(name), images)
    engine = Engine(network.graph)
    labels = torch.zeros(len(images), dtype=torch.int64)
    whole = engine.simulate([(images, labels)], TimePlan(20, 20))
    chunked = engine.simulate([(images, labels)], TimePlan(20, chunk))
    assert torch.allclose(engine.run_batch(images, None, TimePlan(20, 20))["accumulated"],
                          engine.run_batch(images, None, TimePlan(20, chunk))["accumulated"], atol=1e-4)
    assert (whole.correct_per_step == chunked.correct_per_step).all()
    for a, b in zip(whole.neuron_layers, chunked.neuron_layers):
        assert (a.spikes_per_step == b.spikes_per_step).all()
    for a, b in zip(whole.synaptic_layers, chunked.synaptic_layers):
        assert (a.ops_per_step == b.ops_per_step).all()


@pytest.mark.parametrize("calibrate", ["light", "advanced"])
def test_calibration_reduces_mean_error(calibrate, images):
    model = build("vgg")
    network = convert(model, images, calibrate=calibrate, time_steps=8)
    # light corrects per-channel means, advanced per-neuron means: the gap it targets shrinks in every layer
    gap = "channel_gap" if calibrate == "light" else "neuron_gap"
    for entry in network.calibration_log:
        assert entry[f"{gap}_after"] < entry[f"{gap}_before"]


def _thresholds(network) -> dict[str, torch.Tensor]:
    return {name: neuron.threshold.clone() for name, neuron in network.neuron_layers()}


def test_mse_balancing_quantizes_for_half_the_converted_t_unless_told(images):
    model = build("vgg")
    mse = snnconv.BalanceConfig(method="mse", granularity="channel")
    default = _thresholds(convert(model, images, balance=mse, time_steps=32))
    explicit = {t: _thresholds(convert(model, images, balance=snnconv.BalanceConfig(
        method="mse", granularity="channel", time_steps=t), time_steps=32)) for t in (16, 32)}
    for name, threshold in default.items():
        assert torch.equal(threshold, explicit[16][name]), name
    # fewer quantizer levels trade clipping for coarser steps: each layer's mean threshold moves down
    assert all(float(default[name].mean()) < float(explicit[32][name].mean()) for name in default)
    assert [snnconv.ConvertConfig(time_steps=t).balance_steps for t in (1, 2, 3, 64)] == [1, 1, 1, 32]
    assert snnconv.ConvertConfig(time_steps=8, balance=snnconv.BalanceConfig(time_steps=8)).balance_steps == 8


def test_the_python_api_names_a_wrong_argument_in_one_sentence(images, tmp_path):
    """Not an AttributeError from deep inside: a ConfigError that names the argument and what it takes."""
    from snnconv.config import ConvertConfig, SimulationConfig
    from snnconv.errors import ConfigError
    model = build("vgg")
    with pytest.raises(ConfigError, match="Argument 'calibration' must be a snnconv.data.LabeledData"):
        snnconv.convert(model, images)
    data = as_data(images, model)
    with pytest.raises(ConfigError, match="Argument 'config' must be a snnconv.ConvertConfig, got dict"):
        snnconv.convert(model, data, {"time_steps": 8})
    network = snnconv.convert(model, data, ConvertConfig(time_steps=8))
    with pytest.raises(ConfigError, match="Argument 'network' must be a snnconv.SpikingNetwork"):
        snnconv.evaluate("base", data)
    with pytest.raises(ConfigError, match="Argument 'simulation' must be a snnconv.SimulationConfig, got int"):
        snnconv.evaluate(network, data, 8)
    with pytest.raises(ConfigError, match="Argument 'network' must be a snnconv.SpikingNetwork"):
        snnconv.save("x", tmp_path / "out")
    for steps in ("8", 8.5, True):
        with pytest.raises(ConfigError, match="time steps must be a positive integer"):
            SimulationConfig(time_steps=steps)
    result = snnconv.evaluate(network, data, SimulationConfig(time_steps=8))
    assert result.simulation.accuracy_at(8) == result.simulation.accuracy_per_step[-1]
    for t in (0, -1, 9):
        with pytest.raises(ValueError, match=f"t = {t} is outside the simulated steps 1..8"):
            result.simulation.accuracy_at(t)
