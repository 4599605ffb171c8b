"""snnconv.metrics, snnconv.report and snnconv.plots on hand-built results with known numbers.

The reference network: 2 samples, T = 2 steps.
  conv1  analog input, 1000 dense MACs, 784 input elements
  relu1  IF, 100 neurons, threshold 1.5, spikes [4, 6] (summed over the 2 samples)
  pool1  max-pool gate, 25 outputs, spikes [2, 2]
  conv2  spiking input, 5000 dense MACs, 100 input elements, synaptic ops [10, 20]
  correct predictions after t = 1, 2: [1, 2]; the ANN gets both right.
"""
from __future__ import annotations

from types import SimpleNamespace

import json
import math

import numpy as np
import pandas as pd
import pytest

from snnconv.errors import ConfigError, OutputError
from snnconv.metrics import (ENERGY_PRESETS, EnergyModel, energy_breakdown, layer_rows, load_energy_model,
                             neuromorphic_energy, summarize, sweep_rows)
from snnconv.metrics.summary import (REDUCTION_KEY, equal_accuracy_interval, exceeds, first_step_within,
                                     lost_points_bounds, reduction_at_equal_accuracy, steps_of_equal_accuracy)
from snnconv.report import write_report
from snnconv.results import AnnResult, NeuronLayerStats, SimulationResult, SynapticLayerStats
from snnconv import plots

GOLDEN_SUMMARY_KEYS = [
    "samples", "ann_accuracy_pct", "snn_accuracy_pct", "accuracy_drop_points", "time_steps", "avg_time_steps",
    "spikes_per_sample", "spikes_per_neuron", "neurons", "spike_values", "synaptic_ops_per_sample",
    "macs_per_sample_snn", "zero_checks_per_sample", "macs_per_sample_ann", "energy_preset", "energy_pj_per_sample_snn",
    "energy_pj_per_sample_ann", "energy_ratio_ann_over_snn", "membrane_updates_per_sample",
    "activation_sparsity", "exit_accuracy_pct", "avg_exit_time_steps",
]
GOLDEN_LAYER_COLUMNS = [
    "layer", "type", "input", "neurons", "threshold", "time_steps", "firing_rate_spikes_per_neuron_per_step",
    "spikes_per_sample", "synaptic_ops_per_sample", "macs_per_sample", "zero_checks_per_sample",
    "energy_pj_per_sample",
]
GOLDEN_SWEEP_COLUMNS = [
    "time_steps", "snn_accuracy_pct", "ann_accuracy_pct", "spikes_per_sample", "synaptic_ops_per_sample",
    "energy_pj_per_sample_snn", "energy_ratio_ann_over_snn", "neuromorphic_energy_truenorth_rel_full_t",
    "neuromorphic_energy_spinnaker_rel_full_t",
]


def make_sim(*, exit_steps=None, exit_correct=None, relu_steps: int = 2) -> SimulationResult:
    return SimulationResult(
        samples=2, time_steps=2, correct_per_step=np.array([1, 2]),
        neuron_layers=[
            NeuronLayerStats("relu1", "if", neurons=100, threshold_mean=1.5, time_steps=relu_steps,
                             spikes_per_step=np.array([4, 6])[:relu_steps]),
            NeuronLayerStats("pool1", "maxpool_gate", neurons=25, threshold_mean=float("nan"), time_steps=2,
                             spikes_per_step=np.array([2, 2])),
        ],
        synaptic_layers=[
            SynapticLayerStats("conv1", "conv", spiking_input=False, macs_per_sample_dense=1000, input_elements=784,
                               time_steps=2, ops_per_step=np.zeros(2, dtype=np.int64)),
            SynapticLayerStats("conv2", "conv", spiking_input=True, macs_per_sample_dense=5000, input_elements=100,
                               time_steps=2, ops_per_step=np.array([10, 20])),
        ],
        wall_time_s=0.5, exit_steps=exit_steps, exit_correct=exit_correct)


def make_ann(macs: dict | None = None) -> AnnResult:
    return AnnResult(samples=2, correct=2, wall_time_s=0.1,
                     macs_per_sample={"conv1": 1000, "conv2": 5000} if macs is None else macs)


FPGA = ENERGY_PRESETS["fpga28"]
H45 = ENERGY_PRESETS["45nm"]


# ---------------------------------------------------------------------------- energy

def test_presets_hold_the_published_constants():
    assert (H45.e_mac_pj, H45.e_ac_pj, H45.e_zero_check_pj) == (4.6, 0.9, 0.0)
    assert (FPGA.e_mac_pj, FPGA.e_ac_pj, FPGA.e_zero_check_pj) == (13.32, 1.8, 0.05)
    assert "Horowitz" in H45.source and "2311.16456" in FPGA.source
    assert load_energy_model("45nm") is H45 and load_energy_model("fpga28") is FPGA


def test_energy_45nm_full_t():
    energy = energy_breakdown(make_sim(), make_ann(), H45)
    assert energy.time_steps == 2
    assert energy.macs_snn == 1000 and energy.acs_snn == 15 and energy.zero_checks_snn == 200
    assert energy.energy_pj_snn == pytest.approx(4.6 * 1000 + 0.9 * 15)
    assert energy.macs_ann == 6000
    assert energy.energy_pj_ann == pytest.approx(4.6 * 6000)
    assert energy.ratio_ann_over_snn == pytest.approx(27600 / 4613.5)
    conv1, conv2 = energy.layers
    assert (conv1.macs, conv1.acs, conv1.zero_checks, conv1.energy_pj) == (1000, 0, 0, pytest.approx(4600))
    assert (conv2.macs, conv2.acs, conv2.zero_checks, conv2.energy_pj) == (0, 15, 200, pytest.approx(13.5))
    assert conv2.ann_macs == 5000 and conv2.ann_energy_pj == pytest.approx(23000)


def test_energy_fpga28_counts_zero_checks_and_truncates_at_t():
    full = energy_breakdown(make_sim(), make_ann(), FPGA)
    assert full.energy_pj_snn == pytest.approx(13.32 * 1000 + 1.8 * 15 + 0.05 * 100 * 2)
    assert full.energy_pj_ann == pytest.approx(13.32 * 6000)
    assert full.zero_check_energy_pj_snn == pytest.approx(10.0)
    first = energy_breakdown(make_sim(), make_ann(), FPGA, t=1)
    assert first.acs_snn == 5 and first.zero_checks_snn == 100
    assert first.energy_pj_snn == pytest.approx(13320 + 1.8 * 5 + 0.05 * 100)
    assert first.macs_snn == 1000  # the analog layer runs once per sample whatever t


def test_energy_with_exit_policy_counts_the_steps_samples_ran():
    sim = make_sim(exit_steps=np.array([1, 2]), exit_correct=2)
    energy = energy_breakdown(sim, make_ann(), FPGA)
    assert energy.zero_checks_snn == pytest.approx(100 * 1.5)


def test_ann_macs_fall_back_to_the_simulation_and_include_extra_ann_layers():
    fallback = energy_breakdown(make_sim(), make_ann(macs={}), H45)
    assert fallback.macs_ann == 6000 and fallback.ann_macs_source == "simulation"
    extra = energy_breakdown(make_sim(), make_ann(macs={"conv1": 1000, "conv2": 5000, "head": 40}), H45)
    assert extra.macs_ann == 6040 and extra.ann_macs_source == "ann result"


def test_energy_ratio_when_the_snn_costs_nothing():
    sim = make_sim()
    sim.synaptic_layers = [sim.synaptic_layers[1]]
    sim.synaptic_layers[0].ops_per_step = np.zeros(2, dtype=np.int64)
    assert math.isinf(energy_breakdown(sim, make_ann(), H45).ratio_ann_over_snn)


@pytest.mark.parametrize("t", [0, 3, -1, 1.5, True])
def test_time_step_outside_the_simulation_is_a_config_error(t):
    with pytest.raises(ConfigError, match="outside"):
        energy_breakdown(make_sim(), make_ann(), H45, t=t)


# ---------------------------------------------------------------------------- energy files

def test_user_toml_and_json(tmp_path):
    toml = tmp_path / "chip.toml"
    toml.write_text('name = "chip"\ne_mac_pj = 3.0\ne_ac_pj = 0.5\ne_zero_check_pj = 0.01\nsource = "datasheet"\n')
    model = load_energy_model(toml)
    assert model == EnergyModel("chip", 3.0, 0.5, 0.01, "datasheet")
    js = tmp_path / "other.json"
    js.write_text(json.dumps({"e_mac_pj": 2, "e_ac_pj": 1}))
    model = load_energy_model(str(js))
    assert (model.name, model.e_mac_pj, model.e_ac_pj, model.e_zero_check_pj) == ("other", 2, 1, 0.0)
    assert str(js) in model.source
    assert energy_breakdown(make_sim(), make_ann(), model).energy_pj_snn == pytest.approx(2 * 1000 + 1 * 15)


def test_unknown_preset_names_it():
    with pytest.raises(ConfigError, match="Unknown energy preset '7nm'.*45nm, fpga28"):
        load_energy_model("7nm")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_energy_model(tmp_path / "absent.toml")


@pytest.mark.parametrize("content, message", [
    ("e_mac_pj = 1.0\n", "lacks e_ac_pj"),
    ("e_mac_pj = -1.0\ne_ac_pj = 0.5\n", "e_mac_pj must be a finite number >= 0"),
    ("e_mac_pj = 1.0\ne_ac_pj = 0.5\ne_zero_check_pj = -0.1\n", "e_zero_check_pj must be"),
    ('e_mac_pj = "4.6"\ne_ac_pj = 0.5\n', "e_mac_pj must be"),
    ("e_mac_pj = 1.0\ne_ac_pj = 0.5\ne_ac_pJ = 0.4\n", "unknown key"),
    ("e_mac_pj = 1.0\ne_ac_pj = 0.5\nname = 3\n", "name must be a string"),
    ("e_mac_pj = = 1\n", "cannot be parsed"),
])
def test_bad_toml_is_a_config_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_energy_model(path)
    assert str(path) in str(info.value)


def test_bad_json_and_wrong_suffix(tmp_path):
    not_object = tmp_path / "list.json"
    not_object.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="table/object"):
        load_energy_model(not_object)
    yaml = tmp_path / "energy.yaml"
    yaml.write_text("e_mac_pj: 1")
    with pytest.raises(ConfigError, match=r"\.toml or \.json"):
        load_energy_model(yaml)


def test_negative_constant_in_code_is_a_config_error():
    with pytest.raises(ConfigError, match="e_ac_pj"):
        EnergyModel("x", 1.0, -0.5)


# ---------------------------------------------------------------------------- neuromorphic model

def test_neuromorphic_energy_coefficients():
    assert neuromorphic_energy(100, 32, 100, 32, "truenorth") == pytest.approx(1.0)
    assert neuromorphic_energy(100, 32, 100, 32, "spinnaker") == pytest.approx(1.0)
    assert neuromorphic_energy(50, 32, 100, 32, "truenorth") == pytest.approx(0.4 * 0.5 + 0.6)
    assert neuromorphic_energy(50, 16, 100, 32, "spinnaker") == pytest.approx(0.64 * 0.5 + 0.36 * 0.5)


def test_neuromorphic_energy_errors():
    with pytest.raises(ConfigError, match="Unknown neuromorphic platform 'loihi'"):
        neuromorphic_energy(1, 1, 1, 1, "loihi")
    with pytest.raises(ConfigError, match="positive"):
        neuromorphic_energy(1, 1, 0, 1, "truenorth")


# ---------------------------------------------------------------------------- summary and rows

def test_summary_keys_are_stable():
    assert list(summarize(make_sim(), make_ann(), H45, 2)) == GOLDEN_SUMMARY_KEYS


def test_summary_values():
    s = summarize(make_sim(), make_ann(), FPGA, 2)
    assert s["samples"] == 2 and s["time_steps"] == 2 and s["avg_time_steps"] == 2
    assert (s["ann_accuracy_pct"], s["snn_accuracy_pct"], s["accuracy_drop_points"]) == (100.0, 100.0, 0.0)
    assert s["neurons"] == 100  # the max-pool gate forwards spikes and is not counted
    assert s["spikes_per_sample"] == 5 and s["spikes_per_neuron"] == pytest.approx(0.05)
    assert s["synaptic_ops_per_sample"] == 15 and s["zero_checks_per_sample"] == 200
    assert s["macs_per_sample_snn"] == 1000 and s["macs_per_sample_ann"] == 6000
    assert s["membrane_updates_per_sample"] == 200
    assert s["activation_sparsity"] == pytest.approx(1 - 5 / 200)
    assert s["energy_pj_per_sample_snn"] == pytest.approx(13357.0)
    assert s["energy_ratio_ann_over_snn"] == pytest.approx(79920 / 13357)
    assert s["energy_preset"] == "fpga28"
    assert s["exit_accuracy_pct"] is None and s["avg_exit_time_steps"] is None
    early = summarize(make_sim(), make_ann(), FPGA, 1)
    assert (early["snn_accuracy_pct"], early["accuracy_drop_points"], early["spikes_per_sample"]) == (50.0, 50.0, 2)


def test_summary_with_per_layer_t_and_exit_policy():
    s = summarize(make_sim(relu_steps=1), make_ann(), H45)
    assert s["avg_time_steps"] == 1 and s["spikes_per_sample"] == 2 and s["membrane_updates_per_sample"] == 100
    exited = summarize(make_sim(exit_steps=np.array([1, 2]), exit_correct=1), make_ann(), H45)
    assert exited["exit_accuracy_pct"] == 50.0 and exited["avg_exit_time_steps"] == 1.5
    assert exited["avg_time_steps"] == 1.5 and exited["membrane_updates_per_sample"] == 150


@pytest.mark.parametrize("samples, correct", [(1000, 927), (2000, 1854), (5000, 4652), (10000, 9173)])
def test_equal_accuracy_counts_a_gap_of_exactly_the_tolerance_as_within(samples, correct):
    """0.1 points is exactly samples / 1000 images; in floating point the accuracy that many images lower can
    fall below the accuracy minus 0.1, which once moved the equal-accuracy T of our reports one step or more
    too late."""
    lower = correct - samples // 1000
    assert 100.0 * lower / samples < 100.0 * correct / samples - 0.1  # the rounding this test is about
    curve = [100.0 * lower / samples - 1.0, 100.0 * lower / samples, 100.0 * correct / samples]
    assert first_step_within(curve, 100.0 * correct / samples) == 2
    assert first_step_within(curve, 100.0 * correct / samples, tolerance=0.0) == 3
    assert first_step_within(curve, 100.0 * (correct + 1) / samples) == 3  # 0.1 points and one more image: not
    assert first_step_within(curve[:2], 100.0 * correct / samples + 1.0) is None
    sim = SimulationResult(samples=samples, time_steps=3, correct_per_step=np.array([lower - samples // 100, lower,
                                                                                    correct]),
                           neuron_layers=[], synaptic_layers=[], wall_time_s=0.0)
    assert steps_of_equal_accuracy(sim, 100.0 * correct / samples) == 2


def test_a_value_exceeds_its_limit_only_beyond_float_rounding():
    """The rule of the CLI's gates and the benchmarks' bars: a drop of exactly 0.1 points from counts, or a step
    ratio of exactly 2 from a mean of counts, meets its limit; one image or one step more does not."""
    drop = 100 * 1803 / 2000 - 100 * 1801 / 2000
    assert drop > 0.1 and not exceeds(drop, 0.1)
    assert exceeds(100 * 1803 / 2000 - 100 * 1800 / 2000, 0.1)
    exits = [1] * 2 + [16] * 998 + [31] * 2  # mean exit step 16 within float rounding
    mean_step = sum(e / len(exits) for e in exits)
    assert 32 / mean_step != 2.0 and not exceeds(2, 32 / mean_step)
    assert exceeds(2, 31 / mean_step) and not exceeds(2, 33 / mean_step)


def test_lost_points_bounds_are_wilson_bounds_of_the_disagreeing_samples():
    """b samples right only before, c right only after, N in all: the loss's upper bound is b's Wilson upper bound
    minus c's Wilson lower bound (each at 0.975 for confidence 0.95). Wilson 95 % intervals, as published: 10/1000
    is [0.544 %, 1.831 %], 0/1000 is [0, 0.383 %] and 0/500 is [0, 0.762 %]."""
    def networks(samples, lost, gained=0):
        before = np.ones(samples, dtype=bool)
        after = before.copy()
        after[:lost] = False
        before[lost:lost + gained] = False
        return before, after

    low, high = lost_points_bounds(*networks(1000, 10))
    assert float(low) == pytest.approx(0.544 - 0.383, abs=0.002) and float(high) == pytest.approx(1.831, abs=0.002)
    low, high = lost_points_bounds(*networks(500, 0))  # no sample disagrees: not known to be zero
    assert float(high) == pytest.approx(0.762, abs=0.001) and float(low) == pytest.approx(-0.762, abs=0.001)
    before, after = networks(1000, 10, gained=4)
    low, high = lost_points_bounds(before, after)
    assert (float(low), float(high)) == pytest.approx(tuple(-float(x) for x in lost_points_bounds(after, before)[::-1]))
    wider = lost_points_bounds(before, after, 0.99)
    assert wider[0] < low < 0.6 < high < wider[1]  # the measured loss is 0.6 points
    # alternatives side by side are bounded one by one
    stacked = np.stack([networks(1000, k)[1] for k in (0, 5, 30)], axis=1)
    _, highs = lost_points_bounds(np.ones(1000, dtype=bool), stacked)
    for column, k in enumerate((0, 5, 30)):
        assert float(highs[column]) == pytest.approx(float(lost_points_bounds(*networks(1000, k))[1]))


def test_lost_points_upper_bound_covers_the_true_loss_at_least_as_often_as_its_confidence():
    """2000 draws of N = 1000 samples, each lost with probability 1 % and gained with 0.5 % (true loss 0.5 points):
    the upper bound at confidence 0.9 is below the true loss in at most 10 % of the draws (the Bonferroni split
    makes it conservative)."""
    outcome = np.random.default_rng(0).random((1000, 2000))
    lost, gained = outcome < 0.01, (outcome >= 0.01) & (outcome < 0.015)
    upper = [float(lost_points_bounds(~gained[:, d], ~lost[:, d], 0.9)[1]) for d in range(2000)]
    assert np.mean(np.array(upper) < 0.5) <= 0.10


def test_equal_accuracy_interval_resamples_both_networks_alike():
    """Half the samples are right from step 1, half only from step 4, and each exits where it turns right: exits
    keep 100 %, which the baseline reaches at t = 4 in every resample, while the mean exit step is 1 + 3 f for the
    resample's share f of late samples. The interval is that of 4 / (1 + 3 f), f ~ B(N, 1/2) / N."""
    samples, time_steps = 400, 6
    late = np.arange(samples) % 2 == 1
    baseline = np.ones((samples, time_steps), dtype=bool)
    baseline[late, :3] = False
    exit_steps = np.where(late, 4, 1)
    low, high = equal_accuracy_interval(baseline, np.ones(samples, dtype=bool), exit_steps)
    spread = 1.645 * (0.25 / samples) ** 0.5  # 90 % of B(N, 1/2) / N lies within 1/2 +- spread
    assert low == pytest.approx(4 / (1 + 3 * (0.5 + spread)), abs=0.03)
    assert high == pytest.approx(4 / (1 + 3 * (0.5 - spread)), abs=0.03)
    assert low < 4 / 2.5 < high
    # the report keys: the same interval around the ratio, and none without an equal T
    keys = reduction_at_equal_accuracy(SimpleNamespace(correct_by_sample=baseline), np.ones(samples, dtype=bool),
                                       exit_steps, 4)
    assert keys == {REDUCTION_KEY: 4 / 2.5, f"{REDUCTION_KEY}_p5": low, f"{REDUCTION_KEY}_p95": high}
    assert set(reduction_at_equal_accuracy(None, None, 2.5, None).values()) == {None}
    # a fixed cost (an average T): only the equal T moves, and here it cannot
    assert equal_accuracy_interval(baseline, np.ones(samples, dtype=bool),
                                   np.full(samples, 6.0)) == pytest.approx((4 / 6, 4 / 6))
    # the compressed network wrong on every late sample: its accuracy is the baseline's at t = 1
    assert equal_accuracy_interval(baseline, ~late, np.full(samples, 2.0)) == pytest.approx((0.5, 0.5))


def test_layer_rows():
    rows = layer_rows(make_sim(), make_ann(), FPGA, 2)
    assert [list(row) for row in rows] == [GOLDEN_LAYER_COLUMNS] * 4
    relu, pool, conv1, conv2 = rows
    assert (relu["layer"], relu["type"], relu["neurons"], relu["threshold"], relu["time_steps"]) == \
        ("relu1", "if", 100, 1.5, 2)
    assert relu["spikes_per_sample"] == 5 and relu["firing_rate_spikes_per_neuron_per_step"] == pytest.approx(0.025)
    assert relu["energy_pj_per_sample"] is None and relu["synaptic_ops_per_sample"] is None
    assert pool["threshold"] is None and pool["spikes_per_sample"] == 2
    assert pool["firing_rate_spikes_per_neuron_per_step"] == pytest.approx(2 / 50)
    assert (conv1["input"], conv1["macs_per_sample"], conv1["synaptic_ops_per_sample"]) == ("analog", 1000, None)
    assert conv1["energy_pj_per_sample"] == pytest.approx(13320)
    assert (conv2["input"], conv2["macs_per_sample"], conv2["synaptic_ops_per_sample"]) == ("spikes", None, 15)
    assert conv2["zero_checks_per_sample"] == 200 and conv2["energy_pj_per_sample"] == pytest.approx(37.0)
    assert conv2["neurons"] is None


def test_sweep_rows():
    rows = sweep_rows(make_sim(), make_ann(), H45)
    assert len(rows) == 2 and [list(row) for row in rows] == [GOLDEN_SWEEP_COLUMNS] * 2
    first, last = rows
    assert (first["time_steps"], first["snn_accuracy_pct"], first["ann_accuracy_pct"]) == (1, 50.0, 100.0)
    assert first["spikes_per_sample"] == 2 and first["synaptic_ops_per_sample"] == 5
    assert first["energy_pj_per_sample_snn"] == pytest.approx(4600 + 0.9 * 5)
    assert first["neuromorphic_energy_truenorth_rel_full_t"] == pytest.approx(0.4 * 2 / 5 + 0.6 * 1 / 2)
    assert last["neuromorphic_energy_spinnaker_rel_full_t"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- report and plots

COVERAGE = [{"node": "conv1", "type": "Conv2d", "status": "passed through", "reason": "analog input: MACs"},
            {"node": "relu1", "type": "ReLU", "status": "converted", "reason": "ReLU -> IF neuron"}]


def report(directory, sim=None, **overrides):
    arguments = dict(title="Tiny net", sim=sim or make_sim(), ann=make_ann(), energy_model=FPGA, time_steps=2,
                     sweep_steps=[1, 2], config={"convert": {"time_steps": 2}}, environment={"torch": "2.x", "seed": 0},
                     coverage=COVERAGE)
    arguments.update(overrides)
    return write_report(directory, **arguments)


def test_report_writes_every_file_with_the_tables(tmp_path):
    written = report(tmp_path / "out", extra_summary={"teas_saved_ops_pct": 12.5})
    expected = {"report.md", "summary.csv", "layers.csv", "sweep.csv", "accuracy_vs_t.png", "firing_rates.png",
                "energy.png"}
    assert set(written) == expected
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(expected)  # no staging leftovers
    for path in written.values():
        assert path.stat().st_size > 0
    for name in ("accuracy_vs_t.png", "firing_rates.png", "energy.png"):
        assert written[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = written["report.md"].read_text()
    for text in ("# Tiny net", "## Summary", "| Quantity | ANN | SNN | Unit |",
                 "| Top-1 accuracy | 100.00 | 100.00 | % |",
                 "## Accuracy and cost at each T", "| 1 | 50.00 | 50.00 |", "## Energy model", "13.32", "1.8", "0.05",
                 "Charged as MACs, once per sample (analog input): `conv1`", "## Layers", "| relu1 | if |",
                 "| conv2 | conv | spikes |", "## Coverage", "| relu1 | ReLU | converted | ReLU -> IF neuron |",
                 "```json", '"time_steps": 2', "## Environment", "| torch | 2.x |", "teas_saved_ops_pct",
                 "not re-verified", "![SNN accuracy vs time steps](accuracy_vs_t.png)"):
        assert text in md, text

    summary = pd.read_csv(written["summary.csv"])
    assert list(summary.columns) == GOLDEN_SUMMARY_KEYS + ["teas_saved_ops_pct"] and len(summary) == 1
    assert summary.loc[0, "energy_pj_per_sample_snn"] == pytest.approx(13357.0)
    layers = pd.read_csv(written["layers.csv"])
    assert list(layers.columns) == GOLDEN_LAYER_COLUMNS and len(layers) == 4
    assert layers["neurons"].tolist()[:2] == [100, 25]
    sweep = pd.read_csv(written["sweep.csv"])
    assert list(sweep.columns) == GOLDEN_SWEEP_COLUMNS and sweep["time_steps"].tolist() == [1, 2]


def test_report_with_exit_policy_adds_the_exit_histogram(tmp_path):
    written = report(tmp_path, sim=make_sim(exit_steps=np.array([1, 2]), exit_correct=1))
    assert {"exits.csv", "exit_histogram.png"} <= set(written)
    exits = pd.read_csv(written["exits.csv"])
    assert exits.to_dict("list") == {"exit_time_step": [1, 2], "samples": [1, 1], "samples_pct": [50.0, 50.0]}
    md = written["report.md"].read_text()
    assert "## Exit time steps" in md and "| Mean exit time step | — | 1.50 | steps |" in md


def test_report_rejects_bad_steps_without_writing(tmp_path):
    with pytest.raises(ConfigError, match="time_steps"):
        report(tmp_path / "a", time_steps=3)
    with pytest.raises(ConfigError, match="sweep_steps"):
        report(tmp_path / "b", sweep_steps=[1, 4])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_report_into_an_unwritable_location_is_an_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="cannot be written"):
        report(blocker / "out")


def test_plots_write_png_files(tmp_path):
    sim = make_sim(exit_steps=np.array([1, 2]), exit_correct=1)
    paths = [plots.plot_accuracy_vs_t(sim, make_ann(), tmp_path / "a.png", chosen_t=2),
             plots.plot_firing_rates(sim, tmp_path / "f.png"),
             plots.plot_energy(energy_breakdown(sim, make_ann(), FPGA), tmp_path / "e.png"),
             plots.plot_exit_histogram(sim, tmp_path / "x.png")]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_a_failure_while_writing_leaves_no_partial_report(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "plot_energy", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        report(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("user file")
    with pytest.raises(OutputError):
        report(existing)
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]
