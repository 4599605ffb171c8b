"""Dynamic time steps (DTS): masks keep a prefix, the surrogate's definition, the engine's prefix crossing against
masking spikes in a full run, artifact round trips, the CLI, and the mask loss lowering T."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import snnconv
from snnconv import artifacts
from snnconv.config import SimulationConfig
from snnconv.engine import Engine, ExitPolicy, TimePlan
from snnconv.errors import ConfigError
from snnconv.metrics import load_energy_model, summarize
from snnconv.neurons.time_mask import TimeMask, binary_mask, initial_parameters, mask_scores
from snnconv.stages.dts import DtsConfig, MaskedSNN, penalized_layers, sensitivity, train_time_masks
from snnconv.training import TrainConfig
from snnconv_cli.main import app

from helpers import as_data, cli_artifact, convert, cut_after, Interrupted, undefined_summary_keys
from models import INPUT_SHAPE, TINY_MODELS, build


def neuron_names(network):
    return [name for name, _ in network.neuron_layers()]


# ------------------------------------------------------------------------------------------- the mask
def test_mask_is_a_prefix_for_any_non_negative_parameters():
    generator = torch.Generator().manual_seed(0)
    for trial in range(2000):
        steps = int(torch.randint(1, 40, (1,), generator=generator))
        scale = float(torch.rand(1, generator=generator)) * 3
        tp = torch.rand(steps, generator=generator) ** 3 * scale  # heavy-tailed, many near zero
        tp[torch.rand(steps, generator=generator) < 0.3] = 0.0
        mask = binary_mask(mask_scores(tp))
        kept = int(mask.sum())
        assert torch.equal(mask, (torch.arange(steps) < kept).float()), (trial, tp, mask)


def test_projected_parameters_stay_non_negative_so_the_mask_stays_a_prefix():
    generator = torch.Generator().manual_seed(1)
    for _ in range(500):
        steps = int(torch.randint(2, 20, (1,), generator=generator))
        mask = TimeMask(steps, tp=torch.randn(steps, generator=generator))  # raw values below zero too
        tm = mask().detach()
        assert (mask.tp() >= 0).all()
        assert torch.equal(tm, (torch.arange(steps) < mask.steps()).float())


def test_scores_are_the_paper_product_with_the_lower_triangular_coefficients():
    tp = torch.tensor([0.5, 0.25, 0.0, 0.75])
    coeff = torch.tensor([[1., 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])  # Eq. 4, written out
    assert torch.allclose(mask_scores(tp), tp @ coeff)
    assert mask_scores(tp).tolist() == [1.5, 1.0, 0.75, 0.75]  # suffix sums: non-increasing
    assert binary_mask(mask_scores(tp)).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_surrogate_gradient_matches_its_definition():
    scores = torch.tensor([-0.5, 0.0, 0.3, 1.0, 1.7, 2.0, 2.4], requires_grad=True)
    weights = torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0])
    mask = binary_mask(scores)
    assert mask.tolist() == [0, 0, 0, 1, 1, 1, 1]
    (mask * weights).sum().backward()
    inside = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0])  # 1 exactly on 0 < TS < 2 (Eq. 6)
    assert torch.equal(scores.grad, weights * inside)

    # through TS = TP . coeff: dL/dTP[j] = sum over t <= j of w_t * 1[0 < TS[t] < 2], by hand
    tp = torch.tensor([0.1, 0.0, 0.9, 0.3, 0.8], requires_grad=True)
    weights = torch.tensor([0.5, -1.0, 2.0, 3.0, -0.25])
    (binary_mask(mask_scores(tp)) * weights).sum().backward()
    ts = [sum(tp.tolist()[t:]) for t in range(5)]
    expected = [sum(weights[t].item() * (0 < ts[t] < 2) for t in range(j + 1)) for j in range(5)]
    assert tp.grad.tolist() == pytest.approx(expected)


@pytest.mark.parametrize("initial", [0, 1, 5, 8])
def test_initial_masks_keep_the_asked_steps_with_every_step_inside_the_surrogate(initial):
    mask = TimeMask(8, initial)
    scores = mask.scores().detach()
    assert mask.steps() == initial
    assert ((scores > 0) & (scores < 2)).all()
    assert (initial_parameters(8, initial) >= 0).all()


# ------------------------------------------------------------------------------------------- the engine
def _masked_full_run(network, masks: dict[str, int], steps: int, plan: TimePlan):
    """The oracle: every neuron runs all steps and its spikes are multiplied by 1[t < T_l]."""
    spikes = {name: (lambda k=k: (torch.arange(steps) < k).float()) for name, k in masks.items()}
    return Engine(network.graph, time_masks=spikes)


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("windows", [False, True])
def test_prefix_crossing_equals_masking_spikes_in_a_full_run(name, windows):
    torch.manual_seed(0)
    model = build(name)
    x = torch.rand(6, *INPUT_SHAPE)
    y = torch.randint(0, 10, (6,))
    network = convert(model, x, time_steps=8)
    names = neuron_names(network)
    layer_steps = {n: [8, 5, 6][i % 3] for i, n in enumerate(names)} if windows else {}
    prefix = {n: min([3, 0, 5, 8, 1][i % 5], layer_steps.get(n, 8)) for i, n in enumerate(names)}
    full = TimePlan.per_layer(8, layer_steps, 3)
    masked = TimePlan.per_layer(8, layer_steps, 3, prefix)
    oracle = _masked_full_run(network, prefix, 8, full)
    engine = Engine(network.graph)
    expected = oracle.run_batch(x, None, full, record=names)
    got = engine.run_batch(x, None, masked, record=names)
    assert torch.equal(got["accumulated"], expected["accumulated"])
    for layer in names:
        assert torch.equal(got["recorded"][layer], expected["recorded"][layer])
    sim, ref = engine.simulate([(x, y)], masked), oracle.simulate([(x, y)], full)
    assert [l.synaptic_ops for l in sim.synaptic_layers] == [l.synaptic_ops for l in ref.synaptic_layers]
    assert sim.correct_per_step.tolist() == ref.correct_per_step.tolist()
    for layer in sim.neuron_layers:
        if layer.name in prefix and layer.kind == "if":
            steps = prefix[layer.name]
            assert layer.active_steps == (steps if steps < layer.time_steps else None)
            assert layer.spikes_per_step[steps:].sum() == 0


class _EvenRowsLeave(ExitPolicy):
    """Samples with an even batch index exit at the first decision, the others run to the end."""

    def should_exit(self, accumulated, step, rows):
        return rows % 2 == 0


def test_prefix_crossing_keeps_early_exit_exact():
    torch.manual_seed(0)
    model = build("maxpool")
    x = torch.rand(8, *INPUT_SHAPE)
    y = torch.randint(0, 10, (8,))
    network = convert(model, x, time_steps=8)
    prefix = {n: k for n, k in zip(neuron_names(network), [2, 6, 0])}
    masked, full = TimePlan.per_layer(8, None, 3, prefix), TimePlan.per_layer(8, None, 3)
    got = Engine(network.graph).run_batch(x, y, masked, exit_policy=_EvenRowsLeave())
    expected = _masked_full_run(network, prefix, 8, full).run_batch(x, y, full, exit_policy=_EvenRowsLeave())
    assert got["exit_step"].tolist() == [3, 8] * 4
    assert torch.equal(got["predictions"], expected["predictions"])
    assert torch.equal(got["accumulated"], expected["accumulated"])


def test_a_silent_layer_really_skips_its_work():
    torch.manual_seed(0)
    network = convert(build("mlp"), torch.rand(8, *INPUT_SHAPE), time_steps=8)
    first = neuron_names(network)[0]
    fc2 = network.graph.get_submodule("fc2")
    rows = []
    handle = fc2.register_forward_hook(lambda _m, inputs, _o: rows.append(inputs[0].shape[0]))
    x = torch.rand(5, *INPUT_SHAPE)
    calls = []
    engine = Engine(network.graph)
    try:
        engine.run_batch(x, None, TimePlan.per_layer(8, None, 4, {first: 3}),
                         input_probe=lambda name, t0, current: calls.append((name, t0, current.shape[0])))
    finally:
        handle.remove()
    # the layer after the masked one computes 3 live steps, then one constant step per chunk (2 chunks of 4)
    assert sum(rows) == (3 + 1 + 1) * 5
    sim = engine.simulate([(x, torch.zeros(5, dtype=torch.long))], TimePlan.per_layer(8, None, 4, {first: 3}))
    fc2_stats = next(l for l in sim.synaptic_layers if l.name == "fc2")
    assert fc2_stats.active_steps == 3 and fc2_stats.ops_per_step[3:].sum() == 0


def test_prefix_masks_are_checked():
    network = convert(build("mlp"), torch.rand(8, *INPUT_SHAPE), time_steps=8)
    engine = Engine(network.graph)
    with pytest.raises(ConfigError, match="more than its window"):
        engine.windows(TimePlan.per_layer(8, None, 4, {neuron_names(network)[0]: 9}))
    with pytest.raises(ConfigError, match="not a neuron layer"):
        engine.windows(TimePlan.per_layer(8, None, 4, {"fc1": 2}))
    with pytest.raises(ConfigError, match="0 or more"):
        TimePlan.per_layer(8, None, 4, {neuron_names(network)[0]: -1})


def test_the_metrics_count_the_steps_a_masked_layer_ran():
    torch.manual_seed(0)
    x = torch.rand(16, *INPUT_SHAPE)
    model = build("vgg")
    network = convert(model, x, time_steps=8)
    names = neuron_names(network)
    network.layer_prefix_steps = {names[0]: 2, names[1]: 5}
    evaluation = snnconv.evaluate(network, as_data(x, model), SimulationConfig(time_steps=8))
    summary = summarize(evaluation.simulation, evaluation.ann, load_energy_model("45nm"))
    expected = [network.layer_prefix_steps.get(n, 8) for n in names]
    assert summary["avg_time_steps"] == pytest.approx(sum(expected) / len(expected))


# ------------------------------------------------------------------------------------------- artifacts
def test_masks_round_trip_through_the_artifact(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(16, *INPUT_SHAPE)
    model = build("residual")
    network = convert(model, x, time_steps=8)
    names = neuron_names(network)
    masks = {n: TimeMask(8, tp=torch.rand(8) * 0.3) for n in names}
    network.layer_prefix_steps = {n: m.steps() for n, m in masks.items() if m.steps() < 8}
    network.time_mask_parameters = {n: m.tp().detach().tolist() for n, m in masks.items()}
    assert network.layer_prefix_steps  # the random masks dropped steps somewhere
    data = as_data(x, model)
    before = snnconv.evaluate(network, data, SimulationConfig(time_steps=8))
    artifacts.save(network, tmp_path / "art")
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["time_masks"]["mode"] == "prefix"
    for layer in manifest["layers"]:
        assert layer["active_steps"] == network.layer_prefix_steps.get(layer["name"], 8)
        assert layer["crossing"] == ("prefix" if layer["name"] in network.layer_prefix_steps else "retime")
    loaded = artifacts.load(tmp_path / "art")
    assert loaded.layer_prefix_steps == network.layer_prefix_steps
    for name, tp in network.time_mask_parameters.items():
        rebuilt = TimeMask(8, tp=torch.tensor(loaded.time_mask_parameters[name]))
        assert rebuilt.steps() == masks[name].steps()
        assert loaded.time_mask_parameters[name] == pytest.approx(tp)
    after = snnconv.evaluate(loaded, data, SimulationConfig(time_steps=8))
    assert after.simulation.correct_per_step.tolist() == before.simulation.correct_per_step.tolist()
    assert [l.spikes for l in after.simulation.neuron_layers] == [l.spikes for l in before.simulation.neuron_layers]


# ------------------------------------------------------------------------------------------- training
def _tiny_task():
    torch.manual_seed(0)
    model = build("mlp")
    x = torch.rand(128, *INPUT_SHAPE)
    network = convert(model, x[:64], time_steps=8)
    return network, as_data(x, model)


def _train(mask_weight: float, groups=("*",)):
    network, data = _tiny_task()
    config = DtsConfig(mask_weight=mask_weight, groups=groups, mask_lr=0.5, sensitivity_samples=32,
                       train=TrainConfig(epochs=3, batch_size=32, lr=1e-3, optimizer="sgd", momentum=0.9,
                                         weight_decay=0.0))
    return network, train_time_masks(network, data, config)


def test_the_mask_loss_lowers_the_average_time_steps():
    _, free = _train(0.0)
    network, penalized = _train(0.05)
    assert penalized.average_steps < free.average_steps
    assert penalized.average_steps < 8
    assert network.layer_prefix_steps == {k: v for k, v in penalized.layer_steps.items() if v < 8}


def test_only_the_penalized_groups_are_pushed():
    network, data = _tiny_task()
    names = neuron_names(network)
    _, result = _train(0.05, groups=(names[0],))
    _, free = _train(0.0)
    assert result.penalized == [names[0]]
    assert result.layer_steps[names[0]] < free.layer_steps[names[0]]


def test_resumed_mask_training_replays_the_uninterrupted_run(tmp_path):
    config = DtsConfig(mask_weight=0.01, mask_lr=0.5, sensitivity_samples=32,
                       train=TrainConfig(epochs=2, batch_size=32, lr=1e-3, optimizer="sgd", momentum=0.9,
                                         weight_decay=0.0))
    network, data = _tiny_task()
    straight = train_time_masks(network, data, config)

    cut_in_epoch_two = cut_after(6)  # 4 batches per epoch: the second epoch is under way

    network, data = _tiny_task()
    with pytest.raises(Interrupted):
        train_time_masks(network, data, config, checkpoint=tmp_path / "dts.pt", progress=cut_in_epoch_two)
    assert torch.load(tmp_path / "dts.pt", weights_only=False)["epoch"] == 1
    network, data = _tiny_task()
    resumed = train_time_masks(network, data, config, checkpoint=tmp_path / "dts.pt", resume=True)
    assert resumed.log.resumed_from_epoch == 1
    assert resumed.log.epoch_losses == pytest.approx(straight.log.epoch_losses)
    for name, tp in straight.mask_parameters.items():
        assert resumed.mask_parameters[name] == pytest.approx(tp, abs=1e-6)
    assert resumed.layer_steps == straight.layer_steps


def test_masked_training_forward_is_the_engine_with_masks_applied():
    network, data = _tiny_task()
    names = neuron_names(network)
    masks = {n: TimeMask(8, k) for n, k in zip(names, [3, 6])}
    model = MaskedSNN(network, masks)
    out = model(data.x[:10])
    reference = Engine(network.graph).run_batch(data.x[:10], None, TimePlan.per_layer(8, None, 8,
                                                                                     {n: m.steps() for n, m in masks.items()}))
    assert torch.allclose(out, reference["accumulated"], atol=1e-5)
    out.sum().backward()
    assert all(m.raw.grad is not None and m.raw.grad.abs().sum() > 0 for m in masks.values())


def test_sensitivity_compares_the_first_step_with_the_later_ones():
    network, data = _tiny_task()
    report = sensitivity(network, data, samples=32, bins=32)
    assert [r.name for r in report] == neuron_names(network)
    first = report[0]  # fed the analog input: the same current at every step
    assert first.similarity == pytest.approx(1.0)
    assert all(0.0 <= r.similarity <= 1.0 + 1e-9 for r in report)
    mean = sum(r.similarity for r in report) / len(report)
    assert [r.suggested for r in report] == [r.similarity >= mean for r in report]


def test_group_patterns_must_match_a_layer():
    assert penalized_layers(["a_1", "a_2", "b"], ("a_*",)) == ["a_1", "a_2"]
    with pytest.raises(ConfigError, match="--groups pattern 'c\\*' matches no neuron layer"):
        penalized_layers(["a_1", "b"], ("c*",))
    with pytest.raises(ConfigError, match="--mask-weight"):
        DtsConfig(mask_weight=-1.0)


# ------------------------------------------------------------------------------------------- CLI
def test_compress_dts_cli_end_to_end(tmp_path):
    runner = CliRunner()
    art = cli_artifact(tmp_path, "--calib-samples", "64", "--calibrate", "none")
    out = tmp_path / "dts"
    result = runner.invoke(app, ["compress", str(art), "--method", "dts", "-o", str(out),
                                 "--limit", "100", "--mask-weight", "0.05", "--mask-lr", "0.5", "--epochs", "1",
                                 "--checkpoint", str(tmp_path / "dts.pt"), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    table = pd.read_csv(out / "reports" / "dts.csv")
    assert undefined_summary_keys(summary) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert [l["active_steps"] for l in manifest["layers"]] == list(table["time_steps_dts"])
    assert manifest["run"]["compress"]["calib_data"]["limit"] == 64  # as many as the artifact recorded
    assert summary["avg_time_steps"] == pytest.approx(table["time_steps_dts"].mean())
    assert summary["dts_crossing"] == "prefix" and summary["uniform_time_steps"] == 8
    matching = summary["uniform_steps_of_equal_accuracy"]
    assert 1 <= matching <= 8
    ratio = summary["avg_time_steps_reduction_vs_equal_accuracy_x"]
    assert ratio == pytest.approx(matching / summary["avg_time_steps"])
    assert (summary["avg_time_steps_reduction_vs_equal_accuracy_x_p5"] <= ratio
            <= summary["avg_time_steps_reduction_vs_equal_accuracy_x_p95"])
    assert table["penalized"].all() and (table["time_steps_dts"] <= 8).all()
    assert torch.load(tmp_path / "dts.pt", weights_only=False)["epoch"] == 1
    assert (out / "reports" / "dts.md").exists()
    again = runner.invoke(app, ["evaluate", str(out), "--report-dir", str(tmp_path / "r"), "--limit", "100", "--quiet",
                                "--json"])
    profiled = runner.invoke(app, ["evaluate", str(out), "--report-dir", str(tmp_path / "p"), "--limit", "100",
                                   "--quiet", "--profile"])
    assert profiled.exit_code == 0, profiled.output
    layers = pd.read_csv(tmp_path / "p" / "layers.csv")
    by_name = dict(zip(layers["layer"], layers["time_steps"]))
    assert [by_name[name] for name in table["layer"]] == list(table["time_steps_dts"])
    assert again.exit_code == 0, again.output
    evaluated = json.loads(again.output)["summary"]
    assert evaluated["snn_accuracy_pct"] == pytest.approx(summary["snn_accuracy_pct"])
    assert evaluated["avg_time_steps"] == pytest.approx(summary["avg_time_steps"])
    assert evaluated["synaptic_ops_per_sample"] == pytest.approx(summary["synaptic_ops_per_sample"])


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory):
    return cli_artifact(tmp_path_factory.mktemp("dts"), "--calib-samples", "64", "--calibrate", "none")


@pytest.mark.parametrize("options, named", [
    (["--mask-weight", "-1"], "--mask-weight"),
    (["--groups", "nothing_like_this*"], "--groups pattern 'nothing_like_this*'"),
    (["--mask-lr", "0"], "--mask-lr"),
    (["--epochs", "0"], "epochs"),
    (["--initial-steps", "99"], "--initial-steps 99"),
    (["--initial-steps", "0"], "--initial-steps must be 1 or more"),
])
def test_compress_dts_bad_options(tmp_path, small_artifact, options, named):
    art = small_artifact
    out = tmp_path / "dts"
    result = CliRunner().invoke(app, ["compress", str(art), "--method", "dts", "-o", str(out), "--calib-samples", "32",
                                      "--limit", "32", "--quiet", *options])
    assert result.exit_code == 3, result.output
    assert named in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists()
