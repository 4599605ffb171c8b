"""Resuming a run from recorded spike trains (engine/replay.py), and the linear-cost calibration built on it.

The oracle is the same network simulated from the input: a run resumed after any layer must record the
same sums and the same output, bit for bit, because it replays exactly the blocks the full run produced.
"""
import copy

import pytest
import torch

from snnconv.engine import Engine, TimePlan
from snnconv.engine.replay import frontier
from snnconv.stages.calibrate import calibrate

from helpers import convert
from models import INPUT_SHAPE, TINY_MODELS, build

T = 16


def _images(n: int = 24, seed: int = 3) -> torch.Tensor:
    return torch.rand(n, *INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))


def _neurons(engine: Engine) -> list[str]:
    return [op.name for op in engine.program.neuron_ops if op.kind == "neuron"]


CASES = [pytest.param(name, {}, "linear", id=name) for name in TINY_MODELS] + [
    pytest.param("vgg", {"signed_spikes": True}, "linear", id="vgg-signed"),  # spikes of -theta as well
    pytest.param("residual", {}, "substep", id="residual-substep"),  # crossing fractions replayed beside the spikes
]


@pytest.mark.parametrize("name,options,timing", CASES)
def test_a_run_resumed_after_any_layer_equals_the_run_from_the_input(name, options, timing):
    torch.set_num_threads(1)
    model = build(name).eval()
    x = _images()
    network = convert(model, x, calibrate="none", **options)
    engine = Engine(network.graph)
    neurons = _neurons(engine)
    # uneven windows, so replayed blocks cross re-timed edges; chunks of 3 steps do not divide the windows
    layer_steps = {neurons[0]: 8} if len(neurons) > 1 else {}
    plan = TimePlan.per_layer(T, layer_steps, 3, timing=timing)
    with torch.no_grad():
        full = engine.run_batch(x, None, plan, record=neurons)
    for index, after in enumerate(neurons[:-1]):
        resume, _ = engine.resume_after(x, plan, after)
        assert set(resume.traces) == set(frontier(engine.program, after))
        for trace_name, trace in resume.traces.items():
            if trace_name in neurons:  # an IF layer's train is kept as bits, 8 to a byte
                assert trace.values.dtype == torch.uint8
                assert trace.values.numel() <= -(-full["recorded"][trace_name].numel() // 8) * trace.values.shape[0] \
                    * (2 if options.get("signed_spikes") else 1)
        later = neurons[index + 1:]
        with torch.no_grad():
            resumed = engine.run_batch(x, None, plan, record=later, resume=resume)
        assert torch.equal(resumed["accumulated"], full["accumulated"]), after
        for layer in later:
            assert torch.equal(resumed["recorded"][layer], full["recorded"][layer]), (after, layer)
        assert torch.equal(resume.traces[after].total(), full["recorded"][after])


def test_resuming_is_refused_without_the_traces_it_needs_or_with_counters():
    model = build("residual").eval()
    x = _images(8)
    engine = Engine(convert(model, x).graph)
    neurons = _neurons(engine)
    plan = TimePlan(T, 4)
    resume, _ = engine.resume_after(x, plan, neurons[1])
    dropped = type(resume)(resume.after, {k: v for k, v in list(resume.traces.items())[1:]})
    with pytest.raises(ValueError, match="needs the traces"):
        engine.run_batch(x, None, plan, resume=dropped)
    with pytest.raises(ValueError, match="before the resume point"):
        engine.run_batch(x, None, plan, resume=resume, until=neurons[0])
    with pytest.raises(ValueError, match="without counters or exits"):
        engine.run_batch(x, None, plan, resume=resume, counters=object())


@pytest.mark.parametrize("mode,runs", [("light", 2), ("advanced", 3)])
def test_calibration_simulates_every_layer_a_fixed_number_of_times_whatever_the_depth(monkeypatch, mode, runs):
    """Light: a measurement and the run recording the next resume point; advanced adds the measurement after
    the bias step. No layer is simulated again when a later one is calibrated."""
    model = build("vgg").eval()
    x = _images(16)
    network = convert(model, x)
    engine = Engine(network.graph)
    neurons = _neurons(engine)
    calls: dict[str, int] = {}
    real = Engine._run_neuron

    def counting(self, op, *args, **kwargs):
        calls[op.name] = calls.get(op.name, 0) + 1
        return real(self, op, *args, **kwargs)

    monkeypatch.setattr(Engine, "_run_neuron", counting)
    chunk_steps = 4
    with torch.no_grad():
        log = calibrate(engine, x, T, mode, chunk_steps)
    assert [entry["layer"] for entry in log] == neurons
    assert calls == {name: runs * (T // chunk_steps) for name in neurons}
    # from a later layer on, the layers before it are replayed, not run
    calls.clear()
    with torch.no_grad():
        calibrate(engine, x, T, mode, chunk_steps, start=neurons[2])
    assert calls == {name: (1 if i < 2 else runs) * (T // chunk_steps) for i, name in enumerate(neurons)}


class EarlyShortcutNet(torch.nn.Module):
    """A residual block whose projection shortcut is computed before the block's first layer, so the program
    holds a synapse of the second IF layer's input ahead of the first IF layer."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 6, 3, padding=1)
        self.shortcut = torch.nn.Conv2d(6, 8, 1)
        self.conv1, self.conv2 = torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        identity = self.shortcut(x)
        out = torch.relu(self.conv2(torch.relu(self.conv1(x))) + identity)
        return self.fc(out.mean((2, 3)))


@pytest.mark.parametrize("name,mode", [("residual", "advanced"), ("concat", "light"), ("maxpool", "advanced"),
                                       ("early-shortcut", "weights")])
def test_calibration_resuming_from_traces_equals_calibration_from_the_input(monkeypatch, name, mode):
    """The oracle: the same calibration with every measurement simulated from the input (no resume points)."""
    import snnconv.stages.calibrate as calibration
    torch.manual_seed(0)
    model = (EarlyShortcutNet() if name == "early-shortcut" else build(name)).eval()
    x = _images(16)
    results = {}
    for way in ("resumed", "from the input"):
        network = convert(model, x)
        engine = Engine(network.graph)
        reference = copy.deepcopy(network.graph) if mode == "weights" else None
        if way == "from the input":
            monkeypatch.setattr(calibration, "_resume_points", lambda _e, layers, *_: [None] * len(layers))
        else:
            points = calibration._resume_points(engine, [op for op in engine.program.neuron_ops], None, {
                op.name: calibration.Segment(engine.graph, op.node) for op in engine.program.neuron_ops}
                if mode == "weights" else {})
            if name == "early-shortcut":  # the second block layer resumes before the shortcut, not after layer 1
                assert points[2] != _neurons(engine)[1]
        with torch.no_grad():
            log = calibration.calibrate(engine, x, T, mode, 4, reference=reference)
        results[way] = (network.graph.state_dict(), log)
    (resumed, resumed_log), (plain, plain_log) = results["resumed"], results["from the input"]
    if name == "early-shortcut":  # the refit was kept, so a stale replay of the shortcut would show
        assert not torch.equal(plain["shortcut.weight"], model.shortcut.weight)
    assert resumed.keys() == plain.keys()
    assert all(torch.equal(resumed[k], plain[k]) for k in resumed)
    assert resumed_log == plain_log
