"""TEAS: candidate steps, greedy allocation against a known answer, profiles, artifacts and the CLI."""
from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import snnconv
from snnconv import artifacts
from snnconv.config import BalanceConfig, SimulationConfig
from snnconv.engine import Engine, TimePlan
from snnconv.errors import ConfigError
from snnconv.metrics.summary import lost_points_bounds
from snnconv.stages.calibrate import calibrate
from snnconv.stages.teas import (TeasConfig, WindowSetup, WindowThresholds, _allocate, consumer_params, profile_layers,
                                  teas, unresolved_budget)
from snnconv_cli.main import app
from snnconv_cli.render import teas_table

from helpers import as_data, cli_artifact, convert, undefined_summary_keys
from models import build


def test_default_candidates_halve_down_to_the_minimum():
    assert TeasConfig().steps_for(32) == [32, 16, 8, 4, 2, 1]
    assert TeasConfig(min_steps=4).steps_for(24) == [24, 12, 6]
    assert TeasConfig(candidates=(20, 8, 3)).steps_for(32) == [32, 20, 8, 3]
    with pytest.raises(ConfigError, match="--candidates 64 outside 1..32"):
        TeasConfig(candidates=(20, 64)).steps_for(32)
    with pytest.raises(ConfigError, match="--candidates 2 outside 4..32"):
        TeasConfig(candidates=(8, 2), min_steps=4).steps_for(32)
    with pytest.raises(ConfigError, match="--min-t 16 exceeds the network's T = 4"):
        TeasConfig(min_steps=16).steps_for(4)


@pytest.mark.parametrize("bad", [dict(accuracy_budget=-1), dict(min_steps=0), dict(holdout_fraction=1.0),
                                 dict(candidates=(8, 0)), dict(avg_steps_budget=0)])
def test_bad_options_are_refused(bad):
    with pytest.raises(ConfigError):
        TeasConfig(**bad)


class KnownRunner:
    """A stand-in for the held-out simulations with a known answer.

    Layer 'cheap' can be cut to 1 step at no accuracy cost; every halving of 'fragile' costs 1 point;
    'mixed' is free down to 8 steps, then each halving costs 0.05 points. Operations are proportional to
    T_l times a per-layer weight, so the best ratio cuts are unambiguous.
    """

    base = 32
    data = list(range(1000))  # 1000 held-out samples: one sample is 0.1 points
    weights = {"cheap": 1.0, "fragile": 5.0, "mixed": 2.0}

    def __init__(self):
        self.count = 0

    def run(self, windows):
        self.count += 1
        loss = np.log2(32 / windows["fragile"]) + 0.05 * max(0.0, np.log2(8 / windows["mixed"]))
        accuracy = 90.0 - loss
        ops = sum(self.weights[name] * steps * 1000 for name, steps in windows.items())
        sim = SimpleNamespace(accuracy_at=lambda _t: accuracy, samples=1,
                              synaptic_layers=[SimpleNamespace(synaptic_ops=ops)])
        return sim, None


NAMES = ["cheap", "fragile", "mixed"]
UNIFORM_OPS = sum(KnownRunner.weights.values()) * 32 * 1000


def allocate(config: TeasConfig):
    return _allocate(KnownRunner(), NAMES, config.steps_for(32), 90.0, UNIFORM_OPS, config, lambda _m: None)


def test_allocation_spends_exactly_the_accuracy_budget():
    windows, trace = allocate(TeasConfig(accuracy_budget=0.1))
    # cheap goes to 1, fragile stays, mixed: 8 is free, 4 costs 0.05 (within 0.1), 2 would cost 0.10 in total
    assert windows == {"cheap": 1, "fragile": 32, "mixed": 2}
    windows_tight, _ = allocate(TeasConfig(accuracy_budget=0.0))
    assert windows_tight == {"cheap": 1, "fragile": 32, "mixed": 8}
    rejected = [s for s in trace if not s.accepted]
    assert {s.layer for s in rejected} >= {"fragile"}


def test_average_budget_cuts_until_the_mean_is_reached():
    windows, trace = allocate(TeasConfig(avg_steps_budget=12))
    assert np.mean(list(windows.values())) <= 12
    # free cuts first (mixed and cheap alternate by saved operations); the last cut that reaches the mean
    # goes to the layer with the most operations saved per point, the costly but heavy 'fragile'
    assert [s.layer for s in trace][:6] == ["mixed", "cheap", "mixed", "cheap", "mixed", "cheap"]
    assert windows == {"cheap": 4, "fragile": 16, "mixed": 4}


@pytest.fixture(scope="module")
def residual():
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = build("residual").eval()
    return model, convert(model, x, calibrate="none"), x


def test_profile_counts_params_of_the_consuming_layers(residual):
    model, network, x = residual
    engine = Engine(network.graph)
    params = consumer_params(engine)
    conv_weights = {name: m.weight.numel() for name, m in network.graph.named_modules() if hasattr(m, "weight")}
    assert sum(params.values()) >= max(conv_weights.values())
    sim = engine.simulate([(x, torch.zeros(len(x), dtype=torch.long))], TimePlan(16, 4))
    for prof in profile_layers(engine, sim):
        layer = next(l for l in sim.neuron_layers if l.name == prof.name)
        assert prof.spikes_per_sample == pytest.approx(layer.spikes / len(x))
        assert prof.activity == pytest.approx(layer.spikes / (len(x) * layer.neurons * 16))
        assert prof.cost == pytest.approx(prof.spikes_per_sample * prof.params)


def test_artifact_keeps_per_layer_steps_and_evaluates_the_same(residual, tmp_path):
    model, network, x = residual
    names = [name for name, _ in network.neuron_layers()]
    network.layer_time_steps = {names[0]: 4, names[-1]: 8}
    network.time_steps = 16
    data = as_data(x, model)
    before = snnconv.evaluate(network, data, SimulationConfig(time_steps=16))
    artifacts.save(network, tmp_path / "a")
    loaded = artifacts.load(tmp_path / "a")
    assert loaded.layer_time_steps == {names[0]: 4, names[-1]: 8}
    after = snnconv.evaluate(loaded, data, SimulationConfig(time_steps=16))
    assert np.array_equal(before.simulation.correct_per_step, after.simulation.correct_per_step)
    assert {l.name: l.time_steps for l in after.simulation.neuron_layers}[names[0]] == 4
    with pytest.raises(ConfigError, match="T=16"):
        snnconv.evaluate(loaded, data, SimulationConfig(time_steps=32))
    network.layer_time_steps = {}


def test_compress_cli_end_to_end(tmp_path):
    runner = CliRunner()
    art = cli_artifact(tmp_path, "--calib-samples", "200")
    out = tmp_path / "teas"
    result = runner.invoke(app, ["compress", str(art), "--method", "teas", "-o", str(out), "--calib-data", "builtin",
                                 "--calib-samples", "200", "--limit", "200", "--min-t", "2", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    table = pd.read_csv(out / "reports" / "teas.csv")
    assert undefined_summary_keys(summary) == []
    ratio = summary["avg_time_steps_reduction_vs_equal_accuracy_x"]
    assert ratio == pytest.approx(summary["uniform_steps_of_equal_accuracy"] / summary["avg_time_steps"])
    assert (summary["avg_time_steps_reduction_vs_equal_accuracy_x_p5"] <= ratio
            <= summary["avg_time_steps_reduction_vs_equal_accuracy_x_p95"])
    assert f"{ratio:.2f}x fewer steps on average, 90 % bootstrap interval" in teas_table([], summary).caption
    held = (f"lost {summary['teas_holdout_lost_points']:.2f} points (90 % interval "
            f"{summary['teas_holdout_lost_points_lower']:.2f} to {summary['teas_holdout_lost_points_upper']:.2f})")
    assert held in " ".join(teas_table([], summary).caption.split())
    # in an 80-column CI log every layer name is shown whole (wrapped, not cut to "features…")
    console = Console(width=80, record=True)
    console.print(teas_table(table.to_dict("records"), summary))
    shown = "".join(line.split("│")[1].strip() for line in console.export_text().splitlines() if line.count("│") > 2)
    assert "…" not in console.export_text() and all(name in shown for name in table["layer"])
    assert held in (out / "reports" / "teas.md").read_text()
    assert set(table["time_steps_teas"]) <= {8, 4, 2}
    manifest = json.loads((out / "manifest.json").read_text())
    assert [l["time_steps"] for l in manifest["layers"]] == list(table["time_steps_teas"])
    assert summary["avg_time_steps"] == pytest.approx(table["time_steps_teas"].mean())
    assert summary["teas_recalibrated"] == bool((table["time_steps_teas"] < 8).any())
    assert summary["teas_calibrated_trials"] is True  # the default; --uncalibrated-trials: test_substep.py
    # the compressed artifact evaluates to the same accuracy through snnconv evaluate
    again = runner.invoke(app, ["evaluate", str(out), "--report-dir", str(tmp_path / "r"), "--limit", "200", "--quiet", "--json",
                                "--profile"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["summary"]["snn_accuracy_pct"] == pytest.approx(summary["snn_accuracy_pct"])
    assert (out / "reports" / "teas.md").exists() and (out / "reports" / "firing_rates.png").exists()


def test_compress_refuses_what_it_cannot_run(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["compress", str(tmp_path), "--method", "teas", "-o", str(tmp_path / "o")])
    assert result.exit_code == 10 and "is not an snnconv artifact" in " ".join(result.output.split())
    result = runner.invoke(app, ["compress", str(tmp_path), "--method", "nope", "-o", str(tmp_path / "o")])
    assert result.exit_code == 3 and "--method 'nope' is not available" in " ".join(result.output.split())
    result = runner.invoke(app, ["compress", str(tmp_path), "--method", "seenn", "--keep-thresholds", "-o",
                                 str(tmp_path / "o")])
    assert result.exit_code == 3 and "--keep-thresholds applies to --method teas" in " ".join(result.output.split())
    result = runner.invoke(app, ["compress", str(tmp_path), "--method", "dts", "--uncalibrated-trials", "-o",
                                 str(tmp_path / "o")])
    assert result.exit_code == 3 and "--uncalibrated-trials applies to --method teas" in " ".join(result.output.split())
    result = runner.invoke(app, ["compress", str(tmp_path), "--method", "teas", "--finetune", "--finetune-loss", "kl",
                                 "-o", str(tmp_path / "o")])
    assert result.exit_code == 3 and ("--finetune-loss must be one of ce, distill, ce-every-step, distill-every-step, "
                                      "got 'kl'") in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("loss", ["ce", "distill"])
def test_compress_teas_with_finetuning_changes_the_weights_and_reports_before_and_after(tmp_path, loss):
    runner = CliRunner()
    art = cli_artifact(tmp_path, "--calib-samples", "128", "--calibrate", "none")
    out = tmp_path / "teas"
    result = runner.invoke(app, ["compress", str(art), "--method", "teas", "-o", str(out), "--calib-samples", "128",
                                 "--limit", "200", "--min-t", "2", "--finetune", "--epochs", "1", "--lr", "1e-4",
                                 "--finetune-loss", loss, "--checkpoint", str(tmp_path / "ft.pt"), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["teas_finetuned"] is True and summary["finetune_epochs"] == 1 and summary["finetune_loss"] == loss
    assert summary["finetune_samples"] == 128 and summary["teas_accuracy_before_finetune_pct"] is not None
    assert torch.load(tmp_path / "ft.pt", weights_only=False)["epoch"] == 1
    before, after = artifacts.load(art).graph.state_dict(), artifacts.load(out).graph.state_dict()
    changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert changed  # BPTT moved the weights; the thresholds are not trained
    old, new = dict(artifacts.load(art).neuron_layers()), dict(artifacts.load(out).neuron_layers())
    table = pd.read_csv(out / "reports" / "teas.csv")
    assert summary["teas_retuned_layers"] == int(table["threshold_retuned"].sum())
    assert (table["threshold_retuned"] == (table["time_steps_teas"] < 8)).all()
    kept = list(table.loc[~table["threshold_retuned"], "layer"])
    assert kept and all(torch.equal(old[name].threshold, new[name].threshold) for name in kept)
    again = runner.invoke(app, ["evaluate", str(out), "--report-dir", str(tmp_path / "r"), "--limit", "200", "--quiet",
                                "--json"])
    assert json.loads(again.output)["summary"]["snn_accuracy_pct"] == pytest.approx(summary["snn_accuracy_pct"])


def test_a_held_out_split_too_small_for_the_budget_is_said_once_with_its_numbers(residual):
    model, network, x = residual  # layer-wise thresholds: the noise probe shapes a scalar threshold per sample
    notes: list[str] = []
    result = teas(network, as_data(x, model), TeasConfig(holdout_fraction=0.5, accuracy_budget=0.1), time_steps=8,
                  progress=notes.append)
    assert result.holdout_samples == 32
    assert all(np.isfinite(p.noise_drop_points) and np.isfinite(p.noise_divergence) for p in result.profiles)
    said = [n for n in notes if "held-out split" in n]
    assert said == [unresolved_budget(32, TeasConfig(accuracy_budget=0.1))]
    assert "32 samples" in said[0] and "3.12 points" in said[0] and "0.1 points" in said[0]
    # 1000 held-out samples resolve 0.1 points; a budget of whole samples is resolved; an op budget has no floor
    assert unresolved_budget(1000, TeasConfig(accuracy_budget=0.1)) is None
    assert unresolved_budget(32, TeasConfig(accuracy_budget=3.125)) is None
    assert unresolved_budget(32, TeasConfig(avg_steps_budget=4.0)) is None


def test_given_held_out_data_measures_the_budget_and_all_calibration_data_is_profiled(residual):
    model, _, x = residual
    network = convert(model, x, calibrate="none")
    calibration, holdout = as_data(x[:40], model), as_data(x[40:], model)
    before = snnconv.evaluate(network, holdout, SimulationConfig(time_steps=8)).simulation
    notes: list[str] = []
    result = teas(network, calibration, TeasConfig(avg_steps_budget=4), holdout=holdout, time_steps=8,
                  progress=notes.append)
    assert result.holdout_samples == 24 and result.holdout_data == holdout.description
    assert result.uniform_accuracy_pct == pytest.approx(before.accuracy_at(8))  # measured on the given data
    assert "profiling 40 samples at T=8" in notes
    # the held-out loss's interval compares the two networks sample by sample
    network.time_steps, network.layer_time_steps = 8, {k: v for k, v in result.layer_time_steps.items() if v != 8}
    after = snnconv.evaluate(network, holdout, SimulationConfig(time_steps=8)).simulation
    assert after.accuracy_at(8) == pytest.approx(result.final_accuracy_pct)
    bounds = lost_points_bounds(before.correct_by_sample[:, -1], after.correct_by_sample[:, -1], 0.95)
    assert result.holdout_lost_points_interval == pytest.approx(tuple(float(b) for b in bounds))
    lost = result.uniform_accuracy_pct - result.final_accuracy_pct
    assert result.holdout_lost_points_interval[0] <= lost <= result.holdout_lost_points_interval[1]


def test_cut_layers_get_the_mse_threshold_of_their_own_window_and_the_others_keep_theirs():
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    model = build("residual").eval()

    def converted_for(balance_steps: int):
        return convert(model, x, time_steps=8, balance=BalanceConfig(method="mse", time_steps=balance_steps))

    network = converted_for(4)
    before = {name: neuron.threshold.clone() for name, neuron in network.neuron_layers()}
    result = teas(network, as_data(x, model), TeasConfig(avg_steps_budget=2), time_steps=8)
    cut = {name: t for name, t in result.layer_time_steps.items() if t != 8}
    assert result.retuned_thresholds == cut and any(t < 4 for t in cut.values())
    after = dict(network.neuron_layers())
    for name, threshold in before.items():
        if name in cut:  # what the conversion's own search finds for that window, on the same data
            expected = dict(converted_for(cut[name]).neuron_layers())[name].threshold
            assert torch.equal(after[name].threshold, expected)
            # balanced for 4 levels at conversion: only windows other than 4 move the threshold
            assert torch.equal(expected, threshold) == (cut[name] == 4)
        else:
            assert torch.equal(after[name].threshold, threshold)
    kept = converted_for(4)
    result = teas(kept, as_data(x, model), TeasConfig(avg_steps_budget=2.5, retune_thresholds=False), time_steps=8)
    assert result.retuned_thresholds == {} and any(t != 8 for t in result.layer_time_steps.values())
    assert all(torch.equal(neuron.threshold, before[name]) for name, neuron in kept.neuron_layers())


def test_thresholds_balanced_without_the_mse_search_are_kept_and_teas_says_why(residual):
    model, network, x = residual  # max balancing: the threshold does not depend on T
    notes: list[str] = []
    before = {name: neuron.threshold.clone() for name, neuron in network.neuron_layers()}
    result = teas(network, as_data(x, model), TeasConfig(avg_steps_budget=2.5), time_steps=8, progress=notes.append)
    assert result.retuned_thresholds == {} and any(t != 8 for t in result.layer_time_steps.values())
    assert all(torch.equal(neuron.threshold, before[name]) for name, neuron in network.neuron_layers())
    assert "thresholds kept: they were balanced by 'max', which does not depend on T" in notes


def corrections(network) -> dict[str, tuple[torch.Tensor, ...]]:
    return {name: (n.threshold.clone(), n.bias.clone(), n.v_offset.clone()) for name, n in network.neuron_layers()}


def same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.fixture(scope="module")
def calibrated():
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    model = build("residual").eval()
    # the product's default pipeline: mse balancing, advanced calibration
    return model, convert(model, x, time_steps=8, balance=BalanceConfig(), calibrate="advanced"), x


def test_a_calibrated_trial_recalibrates_from_the_first_cut_layer_and_leaves_the_network_as_it_found_it(calibrated):
    model, network, x = calibrated
    names = [name for name, _ in network.neuron_layers()]
    engine = Engine(network.graph)
    setup = WindowSetup(network, engine, x, 8, 4, "linear", WindowThresholds(network, as_data(x, model)), True)
    before = corrections(network)
    windows = {**{name: 8 for name in names}, names[2]: 2}
    with setup.trial(windows):
        inside = corrections(network)
    assert all(same(inside[name], before[name]) for name in names[:2])  # upstream of the cut: untouched
    assert not torch.equal(inside[names[2]][0], before[names[2]][0])  # threshold searched for 2 steps
    assert all(not same(inside[name], before[name]) for name in names[2:])  # the cut layer and every later one
    assert all(same(after, before[name]) for name, after in corrections(network).items())
    with pytest.raises(ValueError, match="no IF layer named 'nope'"):
        calibrate(engine, x, 8, "advanced", start="nope")


def test_with_calibrated_trials_the_result_is_the_network_its_last_trial_measured(calibrated):
    model, network, x = calibrated
    network = copy.deepcopy(network)  # TEAS leaves its allocation in the network
    result = teas(network, as_data(x, model), TeasConfig(avg_steps_budget=3), time_steps=8)
    assert result.calibrated_trials and result.recalibrated and result.trace[-1].accepted
    # the final held-out run repeats the last accepted move's trial exactly: same thresholds, same corrections
    assert result.final_accuracy_pct == result.trace[-1].accuracy_pct
    assert result.final_ops_per_sample == result.trace[-1].synaptic_ops_per_sample


def test_an_allocation_that_loses_more_than_its_budget_on_the_held_out_split_says_so(tmp_path):
    """With --uncalibrated-trials the moves are measured before the calibration the result gets, and here the
    result lost 20 points of 10 held-out images against the 0.1-point budget: the run must say so, not exit
    quietly."""
    runner = CliRunner()
    art = tmp_path / "base"
    assert runner.invoke(app, ["convert", "-T", "8", "--limit", "100", "--calib-samples", "100", "-o", str(art),
                               "--quiet"]).exit_code == 0
    out = tmp_path / "teas"
    result = runner.invoke(app, ["compress", str(art), "--method", "teas", "--limit", "50", "--calib-samples", "20",
                                 "--uncalibrated-trials", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["teas_accuracy_budget_points"] == 0.1
    assert summary["teas_holdout_lost_points"] == pytest.approx(20.0)
    assert summary["teas_budget_exceeded"] is True
    report = (out / "reports/teas.md").read_text()
    assert "lost 20.00 points on the held-out split, more than the 0.1-point budget" in report
