"""Sub-step spike timing between per-layer windows (TEAS slides: x_T = x + f, then t' = floor(x_T W / S)).

Oracles: hand-computed crossing fractions and landing steps, the rate code (charge over the receiving window),
the linear map (equal windows; signals that are not IF spikes), the same plan in one chunk, the inference
engine (differentiable path), and the artifact / CLI round trips.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import snnconv
from snnconv import artifacts
from snnconv.config import BalanceConfig, ConvertConfig, SimulationConfig
from snnconv.engine import Engine, TimePlan
from snnconv.engine.simulate import retime, retime_substep
from snnconv.errors import ArtifactError, ConfigError
from snnconv.neurons import crossing_fraction, if_step_, if_step_timed_
from snnconv.stages.finetune import SurrogateSNN
from snnconv.stages.teas import TeasConfig
from snnconv_cli.main import app

from helpers import as_data, cli_artifact, convert
from models import INPUT_SHAPE, TINY_MODELS, build

TIMINGS = ("substep", "substep-vfire")


def neuron_names(network) -> list[str]:
    return [name for name, _ in network.neuron_layers()]


# ------------------------------------------------------------------ the crossing fraction
def test_crossing_fraction_by_hand():
    theta = torch.tensor(1.0)
    # V_before 0.5, input 0.8 -> V_fire 1.3: the membrane reaches 1 after (1 - 0.5) / 0.8 = 0.625 of the step
    current, v_fire = torch.tensor([0.8]), torch.tensor([1.3])
    assert crossing_fraction(current, v_fire, theta, "interpolate").item() == pytest.approx(0.625)
    assert crossing_fraction(current, v_fire, theta, "vfire").item() == pytest.approx(1 / 1.3)
    # already above threshold when the step began (backlog of a strong input), or fired on a falling membrane: 0
    backlog = crossing_fraction(torch.tensor([0.5, -0.1]), torch.tensor([2.0, 1.1]), theta, "interpolate")
    assert backlog.tolist() == [0.0, 0.0]
    # exactly at threshold: the end of the step
    assert crossing_fraction(torch.tensor([0.4]), torch.tensor([1.0]), theta, "interpolate").item() == 1.0
    with pytest.raises(ValueError, match="crossing reading"):
        crossing_fraction(current, v_fire, theta, "nope")


def test_interpolated_times_are_those_of_the_continuous_neuron():
    """Constant z < theta from V(0) = theta / 2: the k-th spike crosses at (k - 1/2) theta / z (docs/teas.md)."""
    theta, z = torch.tensor(1.0), torch.tensor([0.3, 0.55, 0.9], dtype=torch.float64)
    v = torch.full((3,), 0.5, dtype=torch.float64)
    times: list[list[float]] = [[], [], []]
    for x in range(40):
        out, fraction = torch.empty(3, dtype=torch.float64), torch.empty(3, dtype=torch.float64)
        if_step_timed_(z, v, theta.double(), out, fraction, "interpolate")
        for i in out.nonzero().flatten().tolist():
            times[i].append(x + fraction[i].item())
    for i in range(3):
        expected = [(k - 0.5) / z[i].item() for k in range(1, len(times[i]) + 1)]
        assert len(times[i]) >= 11 and times[i] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("reading", ["interpolate", "vfire"])
def test_timed_step_spikes_exactly_like_the_plain_step(reading):
    generator = torch.Generator().manual_seed(1)
    theta = torch.tensor([0.7, 1.0, 1.3]).view(1, 3)
    v_plain = torch.rand(5, 3, generator=generator)
    v_timed = v_plain.clone()
    for _ in range(20):
        current = torch.randn(5, 3, generator=generator)
        out_plain, out_timed, fraction = torch.empty(5, 3), torch.empty(5, 3), torch.empty(5, 3)
        if_step_(current, v_plain, theta, out_plain)
        if_step_timed_(current, v_timed, theta, out_timed, fraction, reading)
        assert torch.equal(out_plain, out_timed) and torch.equal(v_plain, v_timed)
        assert ((fraction >= 0) & (fraction <= 1)).all()


# ------------------------------------------------------------------ re-timing a train
def test_retime_substep_by_hand():
    """Two spikes (steps 0 and 1, fractions 0.625 and 0.875) from S = 2 into W = 8 steps."""
    spikes = torch.tensor([[1.0], [1.0]])
    fraction = torch.tensor([[0.625], [0.875]])
    moved = retime_substep(spikes, fraction, 0, 2, 8, 0, 8)[:, 0]
    # x_T * W / S = 2.5 and 7.5 -> target steps 2 and 7; each carries W / S = 4 (charge 8 = 2 spikes x 4)
    assert moved.tolist() == [0, 0, 4, 0, 0, 0, 0, 4]
    assert retime(spikes, 0, 2, 8, 0, 8)[:, 0].tolist() == [4, 0, 0, 0, 4, 0, 0, 0]
    # f = 1 on the last step lands at W, clipped to W - 1; down-sampling sums what lands on one step
    last = retime_substep(torch.ones(4, 1), torch.tensor([[0.2], [0.9], [0.0], [1.0]]), 0, 4, 2, 0, 2)[:, 0]
    assert last.tolist() == [1.0, 1.0]  # (0.2, 0.9) -> 0; (2.0, 4.0 -> clipped 1) -> 1; each x 2 / 4


@pytest.mark.parametrize("source,target", [(8, 3), (3, 8), (16, 4), (4, 16), (7, 1), (1, 7), (5, 5)])
def test_substep_retiming_preserves_the_rate_code(source, target):
    """Charge over the receiving window / its length == source spikes / source window, per neuron."""
    generator = torch.Generator().manual_seed(source * 10 + target)
    spikes = (torch.rand(source, 6, generator=generator) < 0.5).float()
    fraction = torch.rand(source, 6, generator=generator)
    fraction[-1, :2] = 1.0  # the latest possible crossing must stay inside the window
    moved = retime_substep(spikes, fraction, 0, source, target, 0, target)
    assert moved.shape == (target, 6)
    assert torch.allclose(moved.sum(0) / target, spikes.sum(0) / source, atol=1e-6)


def test_substep_retiming_of_a_slice_matches_the_whole_train():
    """The engine takes, for target steps j..k, one more source step on each side than the linear map."""
    source, target = 12, 5
    generator = torch.Generator().manual_seed(0)
    train, fraction = torch.rand(source, 3, generator=generator), torch.rand(source, 3, generator=generator)
    whole = retime_substep(train, fraction, 0, source, target, 0, target)
    lo, hi = -(-2 * source // target) - 1, -(-4 * source // target)  # source steps that can land on steps 2, 3
    assert torch.allclose(retime_substep(train[lo:hi], fraction[lo:hi], lo, source, target, 2, 2), whole[2:4])


# ------------------------------------------------------------------ the engine
def one_neuron_network():
    """input 1 -> linear (weight 0.8) -> IF (theta 1, V0 = 1/2) -> linear (weight 1) -> output."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1)).eval()
    x = torch.rand(8, 1, 1, 1, generator=torch.Generator().manual_seed(0)) + 0.5
    network = snnconv.convert(model, as_data(x, model, num_classes=1),
                              ConvertConfig(balance=BalanceConfig(method="max", granularity="layer"), calibrate="none"))
    (name, neuron), = network.neuron_layers()
    with torch.no_grad():
        network.graph.get_submodule("1").weight.fill_(0.8)
        network.graph.get_submodule("1").bias.zero_()
        network.graph.get_submodule("3").weight.fill_(1.0)
        network.graph.get_submodule("3").bias.zero_()
        neuron.threshold.fill_(1.0)
    return network, name


@pytest.mark.parametrize("timing,expected", [("linear", [4, 0, 0, 0, 4, 0, 0, 0]),
                                             ("substep", [0, 0, 4, 0, 0, 0, 0, 4]),
                                             ("substep-vfire", [0, 0, 0, 4, 0, 0, 0, 4])])
@pytest.mark.parametrize("chunk_steps", [1, 3, 8])
def test_engine_lands_spikes_on_the_hand_computed_steps(timing, expected, chunk_steps):
    """The IF layer runs S = 2 steps, the readout W = 8. V: 0.5 + 0.8 = 1.3 (fires, f = 0.625 or 1 / 1.3), then
    0.3 + 0.8 = 1.1 (fires, f = 0.875 or 1 / 1.1). Landing steps floor((x + f) * 4): linear 0, 4; interpolated
    2, 7; V_fire 3, 7. Each spike carries theta * W / S = 4."""
    network, name = one_neuron_network()
    plan = TimePlan.per_layer(8, {name: 2}, chunk_steps, timing=timing)
    with torch.no_grad():
        trace = Engine(network.graph).run_batch(torch.ones(1, 1, 1, 1), None, plan, trace_output=True)["output_trace"]
    per_step = torch.diff(trace[:, 0, 0], prepend=torch.zeros(1))
    assert per_step.tolist() == expected


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("timing", TIMINGS)
def test_equal_windows_make_substep_timing_identical_to_linear(name, timing):
    torch.manual_seed(0)
    x = torch.rand(10, *INPUT_SHAPE, generator=torch.Generator().manual_seed(3))
    network = convert(build(name), x)
    engine = Engine(network.graph)
    windows = {n: 12 for n in neuron_names(network)}
    labels = torch.zeros(len(x), dtype=torch.long)
    linear = engine.simulate([(x, labels)], TimePlan.per_layer(12, windows, 5))
    timed = engine.simulate([(x, labels)], TimePlan.per_layer(12, windows, 5, timing=timing))
    assert engine.crossings(TimePlan.per_layer(12, windows, 5, timing=timing)) == []
    a = engine.run_batch(x, None, TimePlan.per_layer(12, windows, 5))["accumulated"]
    b = engine.run_batch(x, None, TimePlan.per_layer(12, windows, 5, timing=timing))["accumulated"]
    assert torch.equal(a, b)
    for la, lb in zip(linear.neuron_layers, timed.neuron_layers):
        assert np.array_equal(la.spikes_per_step, lb.spikes_per_step)
    for la, lb in zip(linear.synaptic_layers, timed.synaptic_layers):
        assert np.array_equal(la.ops_per_step, lb.ops_per_step)


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("timing", ["linear", "substep"])
def test_chunking_does_not_change_a_run_with_mixed_windows(name, timing):
    """Down- and up-sampling crossings simulated in many chunks == in one chunk (spikes exactly)."""
    torch.manual_seed(0)
    x = torch.rand(10, *INPUT_SHAPE, generator=torch.Generator().manual_seed(3))
    network = convert(build(name), x)
    windows = {n: [16, 5, 9, 3, 12][i % 5] for i, n in enumerate(neuron_names(network))}
    engine = Engine(network.graph)
    labels = torch.zeros(len(x), dtype=torch.long)
    one_plan = TimePlan.per_layer(11, windows, 64, timing=timing)
    assert engine.crossings(one_plan) and all(c.timing == timing for c in engine.crossings(one_plan))
    one = engine.simulate([(x, labels)], one_plan)
    whole = engine.run_batch(x, None, one_plan)["accumulated"]
    for chunk_steps in (1, 3, 5):
        plan = TimePlan.per_layer(11, windows, chunk_steps, timing=timing)
        many = engine.simulate([(x, labels)], plan)
        for la, lb in zip(one.neuron_layers, many.neuron_layers):
            assert np.array_equal(la.spikes_per_step, lb.spikes_per_step), (la.name, chunk_steps)
        for la, lb in zip(one.synaptic_layers, many.synaptic_layers):
            assert np.array_equal(la.ops_per_step, lb.ops_per_step), (la.name, chunk_steps)
        assert torch.allclose(engine.run_batch(x, None, plan)["accumulated"], whole, atol=1e-4, rtol=1e-5)


def test_substep_timing_changes_up_sampled_runs():
    """Not a no-op: with a layer up-sampled 5 -> 16 steps the spikes downstream move."""
    torch.manual_seed(0)
    x = torch.rand(10, *INPUT_SHAPE, generator=torch.Generator().manual_seed(3))
    network = convert(build("vgg"), x)
    names = neuron_names(network)
    windows = {names[0]: 5}
    engine = Engine(network.graph)
    labels = torch.zeros(len(x), dtype=torch.long)
    linear = engine.simulate([(x, labels)], TimePlan.per_layer(16, windows, 4))
    timed = engine.simulate([(x, labels)], TimePlan.per_layer(16, windows, 4, timing="substep"))
    second = [layer.spikes_per_step for layer in (linear.neuron_layers[1], timed.neuron_layers[1])]
    assert not np.array_equal(*second)


class Fork(nn.Module):
    """A max-pool gate read by two branches: the gate's output crosses into the shorter branch's window."""

    def __init__(self):
        super().__init__()
        self.stem, self.b, self.c = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem(x)), 2)
        return self.fc(torch.cat([F.relu(self.b(x)), F.relu(self.c(x))], 1).flatten(1))


def test_signals_other_than_if_spikes_fall_back_to_the_linear_map():
    torch.manual_seed(0)
    x = torch.rand(10, *INPUT_SHAPE, generator=torch.Generator().manual_seed(3))
    network = convert(Fork().eval(), x)
    stem, branch_b, branch_c = neuron_names(network)
    engine = Engine(network.graph)
    windows = {stem: 8, branch_b: 8, branch_c: 4}
    crossings = engine.crossings(TimePlan.per_layer(8, windows, 3, timing="substep"))
    assert [(c.signal, c.timing, c.source_steps, c.target_steps) for c in crossings] == [
        ("gate", "linear", 8, 4), ("spikes", "substep", 4, 8)]
    assert crossings[1].source == branch_c

    def currents(timing):
        seen = []
        engine.run_batch(x, None, TimePlan.per_layer(8, windows, 3, timing=timing),
                         input_probe=lambda layer, _t, current: seen.append(current.clone()) if layer == branch_c else None)
        return torch.cat(seen)

    with torch.no_grad():
        # the branch behind the gate crossing integrates exactly the linear re-timing under either timing
        assert torch.equal(currents("linear"), currents("substep"))
        out = {t: engine.run_batch(x, None, TimePlan.per_layer(8, windows, 3, timing=t),
                                   trace_output=True)["output_trace"] for t in ("linear", "substep")}
    assert not torch.equal(out["linear"], out["substep"])  # the branch's own spikes cross by their sub-step times
    assert torch.allclose(out["linear"][-1], out["substep"][-1], atol=1e-4)  # the readout keeps the charge


@pytest.mark.parametrize("name", TINY_MODELS)
def test_differentiable_simulation_under_substep_timing_spikes_like_the_engine(name):
    torch.manual_seed(0)
    x = torch.rand(12, *INPUT_SHAPE)
    network = convert(build(name), x, time_steps=8)
    network.layer_time_steps = {n: [8, 3, 5][i % 3] for i, n in enumerate(neuron_names(network))}
    network.timing = "substep"
    with torch.no_grad():
        reference = Engine(network.graph).run_batch(x, None, network.time_plan(3))["accumulated"]
    surrogate = SurrogateSNN(network, width=1.0, chunk_steps=3)
    summed, _ = surrogate(x)
    assert torch.allclose(summed, reference, atol=1e-5)
    summed.sum().backward()
    grads = [p.grad for p in network.graph.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


# ------------------------------------------------------------------ options, artifacts, CLI
@pytest.mark.parametrize("make", [lambda: TimePlan(8, timing="exact"), lambda: TeasConfig(timing="exact"),
                                  lambda: SimulationConfig(timing="exact")])
def test_unknown_timing_is_refused_naming_the_option(make):
    with pytest.raises(ConfigError, match="--timing must be one of linear, substep, substep-vfire, got 'exact'"):
        make()


def test_artifact_round_trips_the_timing(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(24, *INPUT_SHAPE, generator=torch.Generator().manual_seed(3))
    model = build("vgg")
    network = convert(model, x, time_steps=16)
    names = neuron_names(network)
    network.layer_time_steps, network.timing = {names[0]: 4, names[1]: 8}, "substep"
    data = as_data(x, model)
    before = snnconv.evaluate(network, data, SimulationConfig(time_steps=16))
    artifacts.save(network, tmp_path / "a")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["timing"] == "substep"
    assert manifest["schema_version"] == 2  # an older snnconv refuses it instead of running it linearly
    loaded = artifacts.load(tmp_path / "a")
    assert loaded.timing == "substep" and loaded.layer_time_steps == network.layer_time_steps
    after = snnconv.evaluate(loaded, data, SimulationConfig(time_steps=16))
    assert np.array_equal(before.simulation.correct_per_step, after.simulation.correct_per_step)
    assert [l.spikes for l in before.simulation.neuron_layers] == [l.spikes for l in after.simulation.neuron_layers]
    linear = snnconv.evaluate(loaded, data, SimulationConfig(time_steps=16, timing="linear"))
    assert [l.spikes for l in linear.simulation.neuron_layers] != [l.spikes for l in after.simulation.neuron_layers]
    # a manifest written before the option existed runs linearly; one from a newer snnconv is refused
    del manifest["timing"]
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    assert artifacts.load(tmp_path / "a").timing == "linear"
    manifest["timing"] = "quantum"
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="spike timing 'quantum'"):
        artifacts.load(tmp_path / "a")


def test_compress_and_evaluate_cli_with_substep_timing(tmp_path):
    runner = CliRunner()
    art = cli_artifact(tmp_path, "--calib-samples", "200")
    out = tmp_path / "teas"
    result = runner.invoke(app, ["compress", str(art), "--method", "teas", "-o", str(out), "--calib-samples", "200",
                                 "--limit", "200", "--min-t", "4", "--timing", "substep", "--quiet", "--json",
                                 "--uncalibrated-trials"])  # the faster path; the default: test_teas.py
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["teas_calibrated_trials"] is False
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["timing"] == "substep" and manifest["run"]["compress"]["teas"]["timing"] == "substep"
    assert summary["teas_timing"] == "substep"
    windows = {l["time_steps"] for l in manifest["layers"]}
    assert (summary["teas_crossings"] > 0) == (len(windows | {8}) > 1)
    assert summary["teas_crossings_linear"] <= summary["teas_crossings"]
    assert "Spike timing between windows: substep" in (out / "reports" / "teas.md").read_text()
    # evaluate runs the artifact's own timing; --timing linear overrides it and is recorded as such
    again = runner.invoke(app, ["evaluate", str(out), "--report-dir", str(tmp_path / "r"), "--limit", "200", "--quiet",
                                "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["summary"]["snn_accuracy_pct"] == pytest.approx(summary["snn_accuracy_pct"])
    linear = runner.invoke(app, ["evaluate", str(out), "--report-dir", str(tmp_path / "l"), "--limit", "200",
                                 "--timing", "linear", "--quiet", "--json"])
    assert linear.exit_code == 0, linear.output
    assert '"timing": "substep"' in (tmp_path / "r" / "report.md").read_text()
    assert '"timing": "linear"' in (tmp_path / "l" / "report.md").read_text()
    bad = runner.invoke(app, ["evaluate", str(out), "--timing", "exact", "--quiet"])
    assert bad.exit_code == 3 and "--timing must be one of linear, substep, substep-vfire" in " ".join(bad.output.split())
    wrong = runner.invoke(app, ["compress", str(art), "--method", "seenn", "--timing", "substep", "-o",
                                str(tmp_path / "s"), "--quiet"])
    assert wrong.exit_code == 3 and "--timing applies to --method teas" in " ".join(wrong.output.split())
