"""Per-layer time windows T_l (TEAS execution): re-timing, scheduling across chunks, equivalences.

Oracles: the rate code (charge a layer integrates over its own window), the uniform engine (equal T_l
everywhere), the same plan simulated in one chunk (chunking must not change a per-layer run), and the ANN at
large windows.
"""
import numpy as np
import pytest
import torch

from snnconv.engine import Engine, ExitPolicy, TimePlan
from snnconv.engine.simulate import retime
from snnconv.errors import ConfigError

from helpers import convert
from models import build


@pytest.mark.parametrize("source,target", [(8, 3), (3, 8), (16, 4), (4, 16), (5, 5), (7, 1), (1, 7)])
def test_retime_preserves_the_rate_code(source, target):
    """Charge over the receiving window / its length == source spikes / source window, per neuron."""
    spikes = (torch.rand(source, 6, generator=torch.Generator().manual_seed(source)) < 0.4).float()
    moved = retime(spikes, 0, source, target, 0, target)
    assert moved.shape == (target, 6)
    assert torch.allclose(moved.sum(0) / target, spikes.sum(0) / source, atol=1e-6)
    # each source step lands on floor(t * target / source)
    for t in range(source):
        single = torch.zeros(source, 1)
        single[t] = 1.0
        landed = retime(single, 0, source, target, 0, target)[:, 0]
        assert landed.nonzero().flatten().tolist() == [t * target // source]


def test_retime_of_a_slice_matches_the_whole_train():
    """The engine re-times chunk by chunk: target steps j..k from the source steps that map onto them."""
    source, target = 12, 5
    train = torch.rand(source, 3, generator=torch.Generator().manual_seed(0))
    whole = retime(train, 0, source, target, 0, target)
    lo, hi = -(-2 * source // target), -(-4 * source // target)  # source steps feeding target steps 2, 3
    assert torch.allclose(retime(train[lo:hi], lo, source, target, 2, 2), whole[2:4])


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    x = torch.rand(24, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    model = build("vgg").eval()
    network = convert(model, x)
    return model, network, x


def neuron_names(network) -> list[str]:
    return [op.name for op in Engine(network.graph).program.neuron_ops if op.kind == "neuron"]


def test_equal_windows_reproduce_the_uniform_engine_exactly(vgg):
    _, network, x = vgg
    engine = Engine(network.graph)
    uniform = engine.run_batch(x, None, TimePlan(20, 6))["accumulated"]
    named = TimePlan.per_layer(20, {name: 20 for name in neuron_names(network)}, chunk_steps=6)
    assert torch.equal(engine.run_batch(x, None, named)["accumulated"], uniform)


@pytest.mark.parametrize("chunk_steps", [1, 3, 5])
def test_chunking_does_not_change_a_per_layer_run(vgg, chunk_steps):
    """Mixed windows (down, up, and a readout of its own) simulated in many chunks == in one chunk."""
    _, network, x = vgg
    names = neuron_names(network)
    windows = {name: [16, 5, 9, 3, 12][i % 5] for i, name in enumerate(names)}
    engine = Engine(network.graph)
    one = engine.simulate([(x, torch.zeros(len(x), dtype=torch.long))], TimePlan.per_layer(11, windows, 64))
    many = engine.simulate([(x, torch.zeros(len(x), dtype=torch.long))], TimePlan.per_layer(11, windows, chunk_steps))
    a = engine.run_batch(x, None, TimePlan.per_layer(11, windows, 64))["accumulated"]
    b = engine.run_batch(x, None, TimePlan.per_layer(11, windows, chunk_steps))["accumulated"]
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-5)
    for la, lb in zip(one.neuron_layers, many.neuron_layers):
        assert la.time_steps == lb.time_steps == windows.get(la.name, 11)
        assert np.array_equal(la.spikes_per_step, lb.spikes_per_step)
    assert len(one.correct_per_step) == 11


def test_mixed_windows_approach_the_ann_when_long(vgg):
    """Rate code through re-timed boundaries: long, unequal windows still reproduce the ANN's logits."""
    model, network, x = vgg
    names = neuron_names(network)
    windows = {name: (1024 if i % 2 else 512) for i, name in enumerate(names)}
    plan = TimePlan.per_layer(768, windows, chunk_steps=64)
    rate = Engine(network.graph).run_batch(x, None, plan)["accumulated"] / 768
    with torch.no_grad():
        ann = model(x)
    error = (rate - ann).abs().max() / ann.abs().max()
    assert error < 0.05, f"relative max logit error {error:.3f}"


def test_unknown_layer_in_a_plan_is_named(vgg):
    _, network, _ = vgg
    with pytest.raises(ConfigError, match="'conv_nope'"):
        Engine(network.graph).windows(TimePlan.per_layer(8, {"conv_nope": 4}))


def test_non_positive_layer_window_is_refused():
    with pytest.raises(ConfigError, match="'relu'"):
        TimePlan.per_layer(8, {"relu": 0})


class Recorder(ExitPolicy):
    def __init__(self, leave_at: int | None = None):
        self.seen, self.leave_at = [], leave_at

    def should_exit(self, accumulated, step, rows):
        self.seen.append((step, accumulated.clone()))
        leaving = torch.zeros(accumulated.shape[0], dtype=torch.bool)
        if step == self.leave_at:
            leaving[::2] = True
        return leaving


def test_early_exit_under_per_layer_windows_matches_the_full_run(vgg):
    """Samples leave mid-run (rows dropped from states and re-timing buffers); the rest are unaffected."""
    _, network, x = vgg
    windows = {name: [16, 5, 9][i % 3] for i, name in enumerate(neuron_names(network))}
    plan = TimePlan.per_layer(12, windows, chunk_steps=4)
    engine = Engine(network.graph)
    full = Recorder()
    final = engine.run_batch(x, None, plan, exit_policy=full)["accumulated"]
    boundary = full.seen[1][0]
    leaving = Recorder(leave_at=boundary)
    outcome = engine.run_batch(x, None, plan, exit_policy=leaving)
    assert np.array_equal(outcome["exit_step"][::2], np.full(len(x[::2]), boundary))
    assert torch.equal(outcome["predictions"][::2], full.seen[1][1][::2].argmax(-1))
    assert torch.allclose(outcome["accumulated"], final[1::2], atol=1e-5)


def test_calibration_over_per_layer_windows():
    """Equal windows calibrate exactly as the uniform T; a shorter window changes that layer's correction."""
    from snnconv.stages.calibrate import calibrate
    model = build("vgg").eval()
    x = torch.rand(32, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    names = neuron_names(convert(model, x))

    def corrections(layer_steps):
        network = convert(model, x)
        with torch.no_grad():
            calibrate(Engine(network.graph), x, 16, "advanced", layer_steps=layer_steps)
        return {name: neuron.v_offset.clone() for name, neuron in network.neuron_layers()}

    plain = corrections(None)
    same = corrections({name: 16 for name in names})
    assert all(torch.equal(plain[n], same[n]) for n in names)
    short = corrections({names[1]: 4})
    assert torch.equal(short[names[0]], plain[names[0]])  # layers before the shortened one are untouched
    assert not torch.equal(short[names[1]], plain[names[1]])
