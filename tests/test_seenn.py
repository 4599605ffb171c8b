"""SEENN: exit rules in the engine against the offline answer, alpha selection, AET, the policy network,
artifacts and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import snnconv
from snnconv import artifacts
from snnconv.compress.seenn import budget_overspent
from snnconv.config import SimulationConfig
from snnconv.engine import Engine, TimePlan
from snnconv.errors import ConfigError
from snnconv.metrics.summary import lost_points_bounds
from snnconv.metrics import load_energy_model, summarize
from snnconv.stages.seenn import (ConfidenceExit, ExitTrace, PolicyExit, PolicyNet, SeennConfig, alpha_sweep,
                                  choose_alpha, choose_rule, exit_points, exit_score, layer_macs, oracle_aet,
                                  policy_exit_steps, policy_loss, record_trace, sample_weights, score_sweep, seenn,
                                  threshold_exit_steps)
from snnconv.training import TrainConfig
from snnconv_cli.main import app
from snnconv_cli.render import _fewer_steps, seenn_table

from helpers import cli_artifact, confident_maxpool, convert, undefined_summary_keys

T = 16


@pytest.fixture(scope="module")
def setup():
    """The max-pool tiny model with its logits scaled up (confidence grows over time, so samples leave at
    many different steps), labels that disagree with the ANN on some samples, and its fixed-T trace."""
    torch.set_num_threads(1)
    model, x, labels = confident_maxpool(96, seed=3, wrong_every=5)
    network = convert(model, x, time_steps=T)
    network.time_steps = T
    data = snnconv.data.LabeledData(x=x, y=labels, description="tiny", num_classes=10)
    trace = record_trace(network, data, batch_size=40, chunk_steps=4)
    return network, data, trace


def test_alpha_zero_exits_after_one_step_and_alpha_above_one_never(setup):
    network, data, _ = setup
    for alpha, mean_exit in ((0.0, 1.0), (1.5, float(T))):
        ev = snnconv.evaluate(network, data, SimulationConfig(time_steps=T, batch_size=40),
                              exit_policy=ConfidenceExit(alpha))
        assert float(np.mean(ev.simulation.exit_steps)) == mean_exit
        assert summarize(ev.simulation, ev.ann, load_energy_model("45nm"))["avg_time_steps"] == pytest.approx(mean_exit)


@pytest.mark.parametrize("stride", [1, 2])
def test_the_policys_pointwise_shortcut_is_a_1x1_convolution(stride):
    from snnconv.stages.seenn import _Pointwise
    torch.manual_seed(0)
    shortcut, x = _Pointwise(8, 16, stride), torch.rand(25, 8, 15, 15)
    expected = torch.nn.functional.conv2d(x, shortcut.weight, stride=stride)
    assert torch.allclose(shortcut(x), expected, atol=1e-6)


def test_policy_training_on_25_samples_completes_in_a_fresh_process(tmp_path):
    """This command once died with SIGSEGV in oneDNN's 1x1 convolution backward (a fresh process was needed
    to see it): the policy's shortcuts no longer use that kernel."""
    art = cli_artifact(tmp_path, "-T", "4", "--calib-samples", "100", "--calibrate", "none")
    run = subprocess.run([sys.executable, "-m", "snnconv", "compress", str(art), "--method", "seenn", "--policy",
                          "--epochs", "1", "--calib-samples", "50", "--limit", "50", "-o", str(tmp_path / "p"),
                          "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "p" / "exit_policy.pt").is_file()


def test_an_exit_chunk_of_t_or_more_is_refused(setup):
    """Decisions every T steps or fewer would leave no exit before T: a typo, not a policy."""
    network, data, _ = setup
    with pytest.raises(ConfigError, match=f"--exit-chunk {T} leaves no exit decision before the network's T = {T}"):
        seenn(network, data, SeennConfig(chunk_steps=T))


@pytest.mark.parametrize("score", ["confidence", "entropy", "margin"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_batch_compacted_exits_equal_the_offline_choice_from_a_full_run(setup, score, chunk):
    """Exited rows leave every state tensor; the rest must be unaffected: exit steps and predictions equal
    those picked per sample from one simulation of all steps."""
    network, data, trace = setup
    scores = exit_score(trace.outputs, score, 8.0)
    # about half the samples leave by mid-run; alpha halfway between two scores, so float rounding of the
    # running sums (the trace ran other chunk and batch sizes) cannot flip a decision
    middle = torch.unique(scores[T // 2 - 1])
    alpha = float(middle[len(middle) // 2: len(middle) // 2 + 2].mean())
    policy = ConfidenceExit(alpha, score, 8.0, chunk_steps=chunk)
    outcome = Engine(network.graph).run_batch(data.x, data.y, TimePlan(T, chunk), exit_policy=policy)
    expected = threshold_exit_steps(scores, trace.decision_steps(chunk), torch.tensor([alpha], dtype=torch.float64),
                                    T)[:, 0]
    assert 1 < len(set(expected.tolist())) and np.array_equal(outcome["exit_step"], expected.numpy())
    chosen = trace.outputs[expected - 1, torch.arange(len(expected))].argmax(-1)
    assert torch.equal(outcome["predictions"], chosen)
    accuracy, mean_steps = trace.outcome(expected)
    assert 100.0 * outcome["exit_correct"] / len(data) == pytest.approx(accuracy)
    point = alpha_sweep(trace, score, 8.0, chunk, [alpha])[0]
    assert (point.accuracy_pct, point.avg_exit_time_steps) == pytest.approx((accuracy, mean_steps))
    # per sample and step: the trace's answers up to the exit step, then the exit answer held to T
    steps = torch.arange(1, T + 1).unsqueeze(0)
    held = trace.correct().gather(1, (expected - 1).unsqueeze(1)).expand(-1, T)
    assert np.array_equal(outcome["correct_by_step"], torch.where(steps <= expected.unsqueeze(1), trace.correct(),
                                                                  held).numpy())


def test_per_sample_correctness_adds_up_to_the_accuracy_curve(setup):
    network, data, trace = setup
    for policy in (None, ConfidenceExit(0.9)):
        sim = snnconv.evaluate(network, data, SimulationConfig(time_steps=T, batch_size=40),
                               exit_policy=policy).simulation
        assert sim.correct_by_sample.shape == (len(data), T) and sim.correct_by_sample.dtype == bool
        assert np.array_equal(sim.correct_by_sample.sum(0), sim.correct_per_step)
        assert policy is None or 1 < sim.exit_steps.min() < sim.exit_steps.max() == T  # samples left at many steps
    assert np.array_equal(snnconv.evaluate(network, data, SimulationConfig(time_steps=T, batch_size=40)
                                           ).simulation.correct_by_sample, trace.correct().numpy())


def test_scores_by_hand():
    out = torch.tensor([[np.log(3.0), 0.0, 0.0, 0.0]])  # probabilities 0.5, 1/6, 1/6, 1/6
    assert float(exit_score(out, "confidence", 1.0)) == pytest.approx(0.5)
    assert float(exit_score(out, "margin", 1.0)) == pytest.approx(0.5 - 1 / 6)
    entropy = -(0.5 * np.log(0.5) + 3 * (1 / 6) * np.log(1 / 6))
    assert float(exit_score(out, "entropy", 1.0)) == pytest.approx(1 - entropy / np.log(4))
    assert float(exit_score(out * 2, "confidence", 2.0)) == pytest.approx(0.5)  # temperature divides the sum


def test_automatic_alpha_is_the_smallest_within_the_budget_on_the_held_out_split(setup):
    network, data, _ = setup
    config = SeennConfig(accuracy_budget=2.0, holdout_fraction=0.5)
    result = seenn(network, data, config, batch_size=64)
    assert result.holdout_accuracy_full_pct - result.holdout_accuracy_exit_pct <= 2.0 + 1e-9
    smaller = [p for p in result.holdout_sweep if p.alpha < result.policy.alpha]
    assert smaller and all(result.holdout_accuracy_full_pct - p.accuracy_pct > 2.0 for p in smaller)
    assert result.holdout_avg_exit_time_steps < T  # the budget bought real savings on this model
    holdout, _ = data.split(0.5, 0)
    ev = snnconv.evaluate(network, holdout, SimulationConfig(time_steps=T), exit_policy=result.policy)
    assert 100.0 * ev.simulation.exit_correct / len(holdout) == pytest.approx(result.holdout_accuracy_exit_pct)
    assert float(np.mean(ev.simulation.exit_steps)) == pytest.approx(result.holdout_avg_exit_time_steps)
    # the held-out loss's interval is that of the chosen rule's exits against the full-T network, sample by sample
    full_t = record_trace(network, holdout, batch_size=64).correct()[:, -1]
    interval = tuple(float(b) for b in lost_points_bounds(full_t, ev.simulation.correct_by_sample[:, -1], 0.95))
    assert result.holdout_lost_points_interval == pytest.approx(interval)
    lost = result.holdout_accuracy_full_pct - result.holdout_accuracy_exit_pct
    assert interval[0] <= lost <= interval[1] and interval[0] < interval[1]
    assert result.accuracy_budget == 2.0
    assert seenn(network, data, SeennConfig(alpha=0.9), batch_size=64).accuracy_budget is None  # no budget applied


def test_given_held_out_data_chooses_alpha_and_all_calibration_data_is_trained_on(setup):
    network, data, _ = setup
    holdout, calibration = data.split(0.4, 7)
    result = seenn(network, calibration, SeennConfig(accuracy_budget=2.0), holdout=holdout, batch_size=64)
    trace = record_trace(network, holdout, batch_size=64)
    _, chosen, _ = choose_rule(trace, trace.full_accuracy_pct(), 2.0)
    assert result.policy.alpha == chosen.alpha and result.holdout_avg_exit_time_steps == chosen.avg_exit_time_steps
    assert result.holdout_samples == len(holdout) and result.holdout_data == holdout.description
    policy = seenn(network, calibration, SeennConfig(policy=True, train=TrainConfig(epochs=1)), holdout=holdout,
                   batch_size=64)
    assert policy.training_samples == len(calibration) and policy.holdout_samples == len(holdout)
    steps = policy_exit_steps(policy.policy.net, holdout.x, policy.policy.points)
    assert policy.holdout_lost_points_interval == pytest.approx(trace.lost_points_interval(steps))


def test_choose_alpha_follows_the_rule():
    from snnconv.stages.seenn import SweepPoint
    points = [SweepPoint(0.1, 80.0, 1.0), SweepPoint(0.5, 89.6, 3.0), SweepPoint(0.6, 89.0, 3.5),
              SweepPoint(0.9, 90.0, 6.0)]
    assert choose_alpha(points, 90.0, 0.5).alpha == 0.5
    assert choose_alpha(points, 90.0, 0.0).alpha == 0.9
    # with a budget confidence the bound on the loss is checked, not the measured loss
    bounded = [SweepPoint(0.1, 80.0, 1.0, 12.0), SweepPoint(0.5, 89.6, 3.0, 0.9), SweepPoint(0.6, 89.0, 3.5, 0.45),
               SweepPoint(0.9, 90.0, 6.0, 0.2)]
    assert choose_alpha(bounded, 90.0, 0.5).alpha == 0.6 and choose_alpha(bounded, 90.0, 0.3).alpha == 0.9


def test_budget_confidence_checks_an_upper_bound_of_the_held_out_loss(setup):
    """alpha is the smallest candidate whose loss's upper bound at confidence 0.9 on the held-out split is within
    the budget: never earlier than the alpha chosen on the measured loss; a rule that never exits early has bound 0."""
    network, data, _ = setup
    budget = 10.0  # points; the held-out split has 48 samples, about 2 points each
    measured = seenn(network, data, SeennConfig(accuracy_budget=budget), batch_size=64)
    bounded = seenn(network, data, SeennConfig(accuracy_budget=budget, budget_confidence=0.9), batch_size=64)
    assert bounded.budget_confidence == 0.9 and measured.budget_confidence is None
    assert bounded.policy.alpha > measured.policy.alpha
    assert bounded.holdout_avg_exit_time_steps > measured.holdout_avg_exit_time_steps
    holdout, _ = data.split(0.5, 0)
    trace = record_trace(network, holdout, batch_size=64)
    scores = exit_score(trace.outputs, "confidence", bounded.policy.temperature)
    alphas = torch.tensor([p.alpha for p in bounded.holdout_sweep], dtype=torch.float64)
    steps = threshold_exit_steps(scores, trace.decision_steps(1), alphas, T)
    bounds = lost_points_bounds(trace.correct()[:, -1], trace.correct().gather(1, steps - 1), 0.9)[1]
    bounds = torch.where((steps == T).all(0), 0.0, bounds)
    assert [p.lost_points_bound for p in bounded.holdout_sweep] == pytest.approx(bounds.tolist())
    within = [p.alpha for p, bound in zip(bounded.holdout_sweep, bounds) if bound <= budget + 1e-9]
    assert bounded.policy.alpha == min(within) and bounded.policy.alpha < 1.0
    # the bound of the measured choice is over the budget: that is what the confidence bought
    assert float(bounds[alphas.tolist().index(measured.policy.alpha)]) > budget
    # with a budget no bound on 48 samples can show, only the rule that never exits early is left
    strict = seenn(network, data, SeennConfig(accuracy_budget=2.0, budget_confidence=0.9), batch_size=64)
    assert strict.holdout_avg_exit_time_steps == T and strict.holdout_lost_points_interval[1] > 2.0


def test_oracle_and_empirical_aet_on_the_papers_example():
    """SEENN appendix: predictions {F, T, F, T} over 4 steps: Eq. 4 AET 3, empirical AET 2."""
    assert oracle_aet(np.array([0, 1, 0, 1]), 1) == pytest.approx(3.0)
    # three samples right from steps 1, 2 and never: (1 + 2 + 4) / 3
    assert oracle_aet(np.array([1, 2, 2, 2]), 3) == pytest.approx(7 / 3)


def test_oracle_exit_steps_from_the_engine_are_the_earliest_correct_steps(setup):
    network, data, trace = setup
    ev = snnconv.evaluate(network, data, SimulationConfig(time_steps=T, batch_size=40), exit_policy=None)
    correct = trace.correct()
    earliest = torch.where(correct.any(1), correct.float().argmax(1) + 1, torch.tensor(T))
    assert np.array_equal(ev.simulation.oracle_exit_steps, earliest.numpy())


def test_policy_loss_and_weights_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    correct = torch.tensor([[False, True, True]])
    # rewards: -beta, 1/2, 1/4 -> expected reward 0.5 * -0.1 + 0.25 * 0.5 + 0.25 * 0.25
    loss = policy_loss(logits, correct, torch.ones(1), beta=0.1)
    assert float(loss) == pytest.approx(-(0.5 * -0.1 + 0.25 * 0.5 + 0.25 * 0.25))
    right_at_one = torch.tensor([[True, True], [False, True], [False, False], [False, True]])
    assert sample_weights(right_at_one).tolist() == pytest.approx([1.0, 1 / 3, 1 / 3, 1 / 3])
    assert sample_weights(torch.ones(3, 2, dtype=torch.bool)).tolist() == [1.0, 1.0, 1.0]


def test_policy_network_learns_the_exit_step_and_counts_its_macs():
    """A policy trained where the best exit is readable from the image (bright images are right at step 1,
    dark ones only at the last step) learns to choose it."""
    torch.manual_seed(0)
    x = torch.rand(256, 1, 8, 8) * 0.1
    bright = torch.arange(256) % 2 == 0
    x[bright] += 0.9
    correct = torch.zeros(256, 4, dtype=torch.bool)
    correct[bright] = True
    correct[~bright, 3] = True
    net = PolicyNet((1, 8, 8), 4, width=4)
    snnconv.training.fit(net, [x, correct, sample_weights(correct)],
                         lambda model, batch: policy_loss(model(batch[0]), batch[1], batch[2], beta=1.0),
                         TrainConfig(epochs=40, batch_size=64, lr=0.05, momentum=0.9))
    steps = policy_exit_steps(net, x, [1, 2, 3, 4])
    assert (steps[bright] == 1).float().mean() > 0.95 and (steps[~bright] == 4).float().mean() > 0.95
    macs = {name: m for name, _kind, m, _elements in layer_macs(net, (1, 8, 8))}
    assert macs["stem.0"] == 8 * 8 * 4 * 9 and macs["head"] == 16 * 4
    assert macs["blocks.2.conv1"] == 2 * 2 * 16 * 8 * 9  # 4x4 -> 2x2 at stride 2, 8 -> 16 channels


def test_policy_exit_in_the_engine_matches_its_choice_and_adds_its_cost_to_the_snn_only(setup, tmp_path):
    network, data, trace = setup
    torch.manual_seed(1)
    net = PolicyNet((1, 8, 8), T, width=4)
    with torch.no_grad():
        net.head.bias.copy_(torch.linspace(0, 1, T))  # a fixed, input-dependent choice
        net.head.weight.mul_(20)
    policy = PolicyExit(net, exit_points(trace, 1), chunk_steps=1)
    ev = snnconv.evaluate(network, data, SimulationConfig(time_steps=T, batch_size=40), exit_policy=policy)
    expected = policy_exit_steps(net, data.x, list(range(1, T + 1)))
    assert np.array_equal(ev.simulation.exit_steps, expected.numpy()) and len(set(expected.tolist())) > 1
    policy_macs = sum(m for _n, _k, m, _e in layer_macs(net, (1, 8, 8)))
    with_policy = summarize(ev.simulation, ev.ann, load_energy_model("45nm"))
    plain = snnconv.evaluate(network, data, SimulationConfig(time_steps=T, batch_size=40), exit_policy=None)
    assert with_policy["macs_per_sample_ann"] == summarize(plain.simulation, plain.ann, load_energy_model("45nm"))["macs_per_sample_ann"]
    network_macs = sum(l.macs_per_sample_dense for l in ev.simulation.synaptic_layers
                       if l.part == "network" and not l.spiking_input)
    assert with_policy["macs_per_sample_snn"] == network_macs + policy_macs
    # round trip through an artifact: same choices, and evaluate applies it by default
    network.exit_policy = policy
    try:
        artifacts.save(network, tmp_path / "art")
    finally:
        network.exit_policy = None
    loaded = artifacts.load(tmp_path / "art")
    assert isinstance(loaded.exit_policy, PolicyExit)
    again = snnconv.evaluate(loaded, data, SimulationConfig(time_steps=T, batch_size=40))
    assert np.array_equal(again.simulation.exit_steps, ev.simulation.exit_steps)
    with pytest.raises(ConfigError, match=f"T={T}"):
        snnconv.evaluate(loaded, data, SimulationConfig(time_steps=T // 2))


def test_confidence_policy_round_trips_through_an_artifact(setup, tmp_path):
    network, data, _ = setup
    network.exit_policy = ConfidenceExit(0.7, "margin", 4.0, chunk_steps=2)
    try:
        artifacts.save(network, tmp_path / "art")
    finally:
        network.exit_policy = None
    loaded = artifacts.load(tmp_path / "art").exit_policy
    assert loaded.describe() == {"kind": "confidence", "score": "margin", "alpha": 0.7, "temperature": 4.0,
                                 "chunk_steps": 2}


def test_training_resumes_exactly_from_its_checkpoint(tmp_path):
    x = torch.randn(64, 3)
    y = (x.sum(1) > 0).long()

    def loss(model, batch):
        return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])

    def model():
        torch.manual_seed(0)
        return torch.nn.Linear(3, 2)

    config = TrainConfig(epochs=4, batch_size=16, lr=0.1, momentum=0.9)
    straight = model()
    log = snnconv.training.fit(straight, [x, y], loss, config)

    class Cut(Exception):
        pass

    def cut_in_epoch_three(_description, _total):
        done = [0]

        def advance(n):
            done[0] += n
            if done[0] == 9:  # 4 iterations per epoch: the first step of epoch 3
                raise Cut

        return advance

    with pytest.raises(Cut):
        snnconv.training.fit(model(), [x, y], loss, config, checkpoint=tmp_path / "c.pt", progress=cut_in_epoch_three)
    assert torch.load(tmp_path / "c.pt", weights_only=False)["epoch"] == 2
    resumed = model()
    again = snnconv.training.fit(resumed, [x, y], loss, config, checkpoint=tmp_path / "c.pt", resume=True)
    assert again.resumed_from_epoch == 2 and again.epoch_losses == log.epoch_losses
    assert torch.equal(resumed.weight, straight.weight) and torch.equal(resumed.bias, straight.bias)
    with pytest.raises(ConfigError, match="another training configuration"):
        snnconv.training.fit(model(), [x, y], loss, TrainConfig(epochs=5), checkpoint=tmp_path / "c.pt", resume=True)


@pytest.mark.parametrize("bad", [dict(score="nope"), dict(temperature=0.0), dict(alpha=-0.1), dict(chunk_steps=0),
                                 dict(holdout_fraction=0.0), dict(beta=-1.0), dict(policy_width=0),
                                 dict(accuracy_budget=-0.5)])
def test_bad_options_are_refused(bad):
    with pytest.raises(ConfigError):
        SeennConfig(**bad)


def test_compress_seenn_cli_end_to_end_with_gates(tmp_path):
    runner = CliRunner()
    art = cli_artifact(tmp_path, "--calib-samples", "200", "--calibrate", "none")
    out = tmp_path / "seenn"
    # the artifact's own calibration data, 150 of its recorded 200 images
    result = runner.invoke(app, ["compress", str(art), "--method", "seenn", "-o", str(out), "--calib-samples", "150",
                                 "--limit", "200", "--acc-budget", "1.0", "--temperature", "auto", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["seenn_method"] == "SEENN-I" and summary["avg_exit_time_steps"] < 8
    assert summary["avg_time_steps"] == pytest.approx(summary["avg_exit_time_steps"])
    ratio = summary["avg_time_steps_reduction_vs_equal_accuracy_x"]
    assert ratio == pytest.approx(summary["fixed_steps_of_equal_accuracy"] / summary["avg_exit_time_steps"])
    assert (summary["avg_time_steps_reduction_vs_equal_accuracy_x_p5"] <= ratio
            <= summary["avg_time_steps_reduction_vs_equal_accuracy_x_p95"])
    assert undefined_summary_keys(summary) == []
    assert summary["seenn_finetuned"] is False and summary["converted_steps_of_equal_accuracy"] is None
    caption = seenn_table(summary).caption
    assert f"{_fewer_steps(ratio)} on average, 90 % bootstrap interval " in caption
    # the caption says when the exits lost more on the evaluation data than the budget allowed on the held-out split
    assert summary["seenn_accuracy_budget_points"] == 1.0
    overspent = {**summary, "snn_accuracy_pct": summary["fixed_snn_accuracy_pct"] - 1.5}
    low, high = summary["seenn_holdout_lost_points_lower"], summary["seenn_holdout_lost_points_upper"]
    assert low <= summary["seenn_holdout_lost_points"] <= high
    assert summary["seenn_holdout_lost_points"] == pytest.approx(
        summary["seenn_holdout_accuracy_fixed_pct"] - summary["seenn_holdout_accuracy_exit_pct"])
    on_holdout = (f"lost {summary['seenn_holdout_lost_points']:.2f} points (90 % interval {low:.2f} to {high:.2f}) "
                  f"on the {summary['seenn_holdout_samples']} held-out samples")
    assert on_holdout in " ".join(caption.split())  # within the budget or not
    warning = (f"the exits lost 1.50 points against the 1-point budget met on the held-out split, where they "
               f"{on_holdout}, {summary['seenn_holdout_accuracy_fixed_pct']:.2f} % right at fixed T")
    assert warning in " ".join(seenn_table(overspent).caption.split())
    # it points to --holdout-data only when the held-out split was easier than the evaluation data
    for gap, hinted in ((1.5, True), (0.5, False)):
        held = {**overspent, "seenn_holdout_accuracy_fixed_pct": summary["fixed_snn_accuracy_pct"] + gap}
        assert ("--holdout-data chooses alpha" in budget_overspent(held, held["snn_accuracy_pct"])) == hinted
    for within in ({**summary, "snn_accuracy_pct": summary["fixed_snn_accuracy_pct"] - 1.0},
                   {**overspent, "seenn_accuracy_budget_points": None}):  # at the budget; --alpha given
        assert "against the" not in seenn_table(within).caption
    # the markdown report carries the same sentence exactly when the caption does
    overspent = budget_overspent(summary, summary["snn_accuracy_pct"])
    assert (overspent is not None) == ("budget met on the held-out split" in seenn_table(summary).caption)
    report = (out / "reports" / "seenn.md").read_text()
    assert ("Note: on the evaluation data" in report) == (overspent is not None) and on_holdout in report
    sweep = pd.read_csv(out / "reports" / "seenn.csv")
    chosen = sweep[sweep["chosen"]].iloc[0]
    assert chosen["snn_accuracy_pct"] == pytest.approx(summary["snn_accuracy_pct"])
    assert chosen["avg_exit_time_steps"] == pytest.approx(summary["avg_exit_time_steps"])
    exits = pd.read_csv(out / "reports" / "exits.csv")
    assert exits["samples"].sum() == 200
    # the fixed-T curve the equal-accuracy T is read from: every t, ending at the fixed run's accuracy
    curve = pd.read_csv(out / "reports" / "seenn_fixed.csv")
    assert curve["time_steps"].tolist() == list(range(1, 9))
    assert curve["snn_accuracy_pct"].iloc[-1] == pytest.approx(summary["fixed_snn_accuracy_pct"])
    within = curve[curve["snn_accuracy_pct"] >= summary["snn_accuracy_pct"] - 0.1 - 1e-9]["time_steps"]
    assert summary["fixed_steps_of_equal_accuracy"] == (within.iloc[0] if len(within) else None)
    for name in ("seenn.md", "seenn_tradeoff.png", "exit_histogram.png", "report.md"):
        assert (out / "reports" / name).exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["exit_policy"]["alpha"] == pytest.approx(summary["seenn_alpha"])
    assert manifest["run"]["calib_data"]["limit"] == 200 and manifest["run"]["compress"]["calib_data"]["limit"] == 150
    # snnconv evaluate runs the exit policy, and CI gates see its average T
    again = runner.invoke(app, ["evaluate", str(out), "--report-dir", str(tmp_path / "r"), "--limit", "200", "--json",
                                "--max-avg-t", str(summary["avg_exit_time_steps"] + 0.01)])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["summary"]["snn_accuracy_pct"] == pytest.approx(summary["snn_accuracy_pct"])
    gate = runner.invoke(app, ["evaluate", str(out), "--report-dir", str(tmp_path / "r2"), "--limit", "200", "--quiet",
                               "--max-avg-t", str(summary["avg_exit_time_steps"] - 0.01)])
    assert gate.exit_code != 0 and "--max-avg-t" in gate.output
    no_exit = runner.invoke(app, ["evaluate", str(out), "--report-dir", str(tmp_path / "r3"), "--limit", "200",
                                  "--json", "--no-exit"])
    assert no_exit.exit_code == 0 and json.loads(no_exit.output)["summary"]["avg_time_steps"] == 8
    # an artifact that already exits early is not compressed again
    twice = runner.invoke(app, ["compress", str(out), "--method", "seenn", "-o", str(tmp_path / "o2")])
    assert twice.exit_code == 3 and "already exits early" in " ".join(twice.output.split())
    assert not (tmp_path / "o2").exists()


def test_compress_seenn_finetune_trains_the_snn_and_reports_the_network_before_it(tmp_path):
    """--finetune trains the SNN on the training split with the every-step loss before alpha is chosen; the
    report's fixed-T baseline is the fine-tuned network, and the network as converted is reported beside it."""
    runner = CliRunner()
    art = cli_artifact(tmp_path, "--calib-samples", "200", "--calibrate", "none")
    common = ["--calib-samples", "200", "--limit", "200", "--quiet", "--json"]
    converted = runner.invoke(app, ["evaluate", str(art), "--report-dir", str(tmp_path / "r0"), "--limit", "200",
                                    "--json"])
    curve = json.loads(converted.output)["summary"]
    out = tmp_path / "tuned"
    result = runner.invoke(app, ["compress", str(art), "--method", "seenn", "-o", str(out), "--finetune", "--epochs",
                                 "2", "--lr", "1e-3", "--acc-budget", "1.0", *common])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert undefined_summary_keys(summary) == []
    assert summary["seenn_finetuned"] is True and summary["finetune_loss"] == "ce-every-step"
    assert summary["finetune_samples"] == 100 and summary["finetune_epochs"] == 2  # the split without the held-out half
    assert summary["finetune_loss_last_epoch"] < summary["finetune_loss_first_epoch"]
    assert summary["converted_snn_accuracy_pct"] == pytest.approx(curve["snn_accuracy_pct"])
    either = min(t for t in (summary["converted_steps_of_equal_accuracy"], summary["fixed_steps_of_equal_accuracy"])
                 if t)
    assert summary["avg_time_steps_reduction_vs_either_fixed_x"] == pytest.approx(
        either / summary["avg_exit_time_steps"])
    assert "the network before fine-tuning had" in seenn_table(summary).caption
    # the artifact holds the fine-tuned weights: run without exits, it is the report's fixed-T baseline
    full = runner.invoke(app, ["evaluate", str(out), "--report-dir", str(tmp_path / "r1"), "--limit", "200", "--json",
                               "--no-exit"])
    assert json.loads(full.output)["summary"]["snn_accuracy_pct"] == pytest.approx(summary["fixed_snn_accuracy_pct"])
    original, tuned = (torch.load(path / "weights.pt", weights_only=True) for path in (art, out))
    assert any(not torch.equal(original[k], tuned[k]) for k in original)


def test_compress_seenn_holds_out_given_data_without_the_evaluated_images(tmp_path):
    """--holdout-data builtin names the evaluation data's own test split: alpha is chosen on its other images."""
    art = cli_artifact(tmp_path, "--calib-samples", "200", "--calibrate", "none")
    out = tmp_path / "held"
    result = CliRunner().invoke(app, ["compress", str(art), "--method", "seenn", "-o", str(out), "--limit", "200",
                                      "--holdout-data", "builtin", "--holdout-samples", "300", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["seenn_holdout_samples"] == 300
    assert "[without 200 shared with the evaluation data]" in summary["seenn_holdout_data"]
    evaluated = snnconv.data.load_data(snnconv.data.DataConfig("builtin", limit=200))
    candidates, shared = snnconv.data.load_data(snnconv.data.DataConfig("builtin")).without(evaluated)
    assert shared == 200 and len(candidates) == 1800
    holdout = candidates.take(300, 0)
    trace = record_trace(artifacts.load(art), holdout)
    _, chosen, _ = choose_rule(trace, trace.full_accuracy_pct(), 0.5)
    assert summary["seenn_alpha"] == pytest.approx(chosen.alpha)
    assert summary["seenn_holdout_accuracy_fixed_pct"] == pytest.approx(trace.full_accuracy_pct())
    run = json.loads((out / "manifest.json").read_text())["run"]["compress"]
    assert run["holdout_data"]["spec"] == "builtin" and run["holdout_samples"] == 300
    # --budget-confidence: alpha within the budget with that confidence on the same held-out images
    sure = CliRunner().invoke(app, ["compress", str(art), "--method", "seenn", "-o", str(tmp_path / "sure"), "--limit",
                                    "200", "--holdout-data", "builtin", "--holdout-samples", "300",
                                    "--budget-confidence", "0.9", "--quiet", "--json"])
    assert sure.exit_code == 0, sure.output
    bounded = json.loads(sure.output)["summary"]
    _, chosen, _ = choose_rule(trace, trace.full_accuracy_pct(), 0.5, confidence=0.9)
    assert bounded["seenn_alpha"] == pytest.approx(chosen.alpha) and bounded["seenn_budget_confidence"] == 0.9
    assert bounded["seenn_alpha"] >= summary["seenn_alpha"] and summary["seenn_budget_confidence"] is None
    assert "on the held-out split with confidence 0.9" in " ".join(seenn_table(bounded).caption.split())
    manifest = json.loads((tmp_path / "sure" / "manifest.json").read_text())
    assert manifest["run"]["compress"]["seenn"]["budget_confidence"] == 0.9
    # evaluated on all of its test images, the spec has nothing left to hold out
    everything = CliRunner().invoke(app, ["compress", str(art), "--method", "seenn", "-o", str(tmp_path / "none"),
                                          "--holdout-data", "builtin"])
    assert everything.exit_code == 8
    assert "holds only images that are also evaluated" in " ".join(everything.output.split())
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("method, args, message", [
    ("seenn", ["--holdout-data", "builtin", "--holdout-fraction", "0.3"], "drop one of the two"),
    ("seenn", ["--holdout-samples", "300"], "--holdout-samples needs --holdout-data"),
    ("dts", ["--holdout-data", "builtin"], "--holdout-data applies to --method teas and seenn"),
    ("seenn", ["--holdout-data", "builtin", "--holdout-samples", "0"], "--holdout-samples must be at least 1"),
    ("teas", ["--budget-confidence", "0.9"], "--budget-confidence applies to --method seenn"),
])
def test_compress_holdout_data_bad_options(tmp_path, method, args, message):
    result = CliRunner().invoke(app, ["compress", str(tmp_path), "--method", method, "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 3 and message in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--finetune", "--policy"], "--finetune applies to SEENN-I"),
    (["--finetune", "--finetune-loss", "nope"], "--finetune-loss must be one of"),
    (["--score", "nope"], "--score 'nope'"),
    (["--temperature", "hot"], "--temperature takes"),
    (["--finetune", "--resume"], "--resume needs --checkpoint"),
    (["--budget-confidence", "1"], "--budget-confidence must be between 0 and 1"),
    (["--budget-confidence", "0.9", "--alpha", "0.5"], "which --alpha does not use"),
    (["--budget-confidence", "0.9", "--policy"], "--budget-confidence applies to SEENN-I, which --policy"),
    (["--alpha", "0.9", "--policy"], "--alpha applies to SEENN-I, which --policy (SEENN-II) replaces"),
    (["--beta", "0.5"], "--beta applies to SEENN-II; add --policy"),
    (["--epochs", "3"], "--epochs sets training, which --method seenn runs only with --finetune or --policy"),
])
def test_compress_seenn_bad_options(tmp_path, args, message):
    result = CliRunner().invoke(app, ["compress", str(tmp_path), "--method", "seenn", "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 3 and message in " ".join(result.output.split())


def test_exits_on_a_network_with_per_layer_time_steps(setup):
    """SEENN wraps TEAS networks too: with per-layer windows the compacted run still matches the offline choice."""
    network, data, _ = setup
    names = [name for name, _ in network.neuron_layers()]
    network.layer_time_steps = {name: [T, 5, 9][i % 3] for i, name in enumerate(names)}
    try:
        trace = record_trace(network, data, batch_size=40, chunk_steps=4)
        scores = exit_score(trace.outputs, "confidence", 8.0)
        middle = torch.unique(scores[T // 2 - 1])
        alpha = float(middle[len(middle) // 2: len(middle) // 2 + 2].mean())
        ev = snnconv.evaluate(network, data, SimulationConfig(time_steps=T, batch_size=40),
                              exit_policy=ConfidenceExit(alpha))
        decisions = trace.decision_steps(1)
        assert decisions.tolist() == [3, 6, 9, 12]  # relu_3 (5 steps) feeds the readout in blocks of 16/5 steps
        expected = threshold_exit_steps(scores, decisions, torch.tensor([alpha], dtype=torch.float64), T)
        assert np.array_equal(ev.simulation.exit_steps, expected[:, 0].numpy())
        assert len(set(expected[:, 0].tolist())) > 1
    finally:
        network.layer_time_steps = {}


def test_a_policy_over_chunked_exit_points_exits_where_it_chose(setup):
    """With decisions every 4 steps the policy chooses among steps 4, 8, 12, 16, and the engine exits there."""
    network, data, trace = setup
    points = exit_points(trace, 4)
    assert points == [4, 8, 12, 16]
    torch.manual_seed(2)
    net = PolicyNet((1, 8, 8), len(points), width=4)
    with torch.no_grad():
        net.head.weight.mul_(20)
    ev = snnconv.evaluate(network, data, SimulationConfig(time_steps=T, batch_size=40),
                          exit_policy=PolicyExit(net, points, chunk_steps=4))
    expected = policy_exit_steps(net, data.x, points)
    assert np.array_equal(ev.simulation.exit_steps, expected.numpy()) and len(set(expected.tolist())) > 1
    accuracy, _ = trace.outcome(expected)
    assert 100.0 * ev.simulation.exit_correct / len(data) == pytest.approx(accuracy)
    with pytest.raises(ConfigError, match="4 outputs but 3"):
        PolicyExit(net, [4, 8, 16])


def test_threshold_rule_on_any_score_exits_at_the_first_decision_step_above_alpha():
    # 3 samples, T = 4, 2 classes; sample 0 is right from step 1, sample 1 from step 3, sample 2 never
    outputs = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]],
                            [[2.0, 0.0], [1.0, 0.5], [2.0, 0.0]],
                            [[3.0, 0.0], [1.0, 3.0], [3.0, 0.0]],
                            [[4.0, 0.0], [1.0, 4.0], [4.0, 0.0]]])
    trace = ExitTrace(outputs, torch.tensor([0, 1, 1]))
    scores = torch.tensor([[0.9, 0.1, 0.0],
                           [0.2, 0.6, 0.0],
                           [0.5, 0.7, 0.3],
                           [1.0, 1.0, 1.0]], dtype=torch.float64)
    # decisions after steps 1..3; alpha 0.5: exits at 1, 2 (sample 1 still wrong there) and T = 4;
    # alpha 0.65: exits at 1, 3 (sample 1 right) and 4
    low, high = score_sweep(trace, scores, 1, [0.5, 0.65])
    assert (low.accuracy_pct, low.avg_exit_time_steps) == (pytest.approx(100 / 3), pytest.approx(7 / 3))
    assert (high.accuracy_pct, high.avg_exit_time_steps) == (pytest.approx(200 / 3), pytest.approx(8 / 3))
    # every midpoint between scores at decision steps is a candidate, with 0 and 1
    candidates = [p.alpha for p in score_sweep(trace, scores, 1)]
    # the full-T accuracy, and a slice of samples that keeps its own answers
    assert trace.full_accuracy_pct() == pytest.approx(200 / 3)
    assert trace.rows(1, 3).full_accuracy_pct() == pytest.approx(50.0)
    assert torch.equal(trace.rows(1, 3).outputs, outputs[:, 1:3])
    assert candidates[0] == 0.0 and candidates[-1] == 1.0 and pytest.approx(0.65) in candidates
