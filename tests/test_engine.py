"""The time engine with a uniform T: early exit against brute force, statistics against hand counts.

The oracle for early exit is the same network simulated for all T steps with every step's
accumulated output recorded: a sample that leaves at step e must get exactly the prediction the
full run had after e steps, although the engine dropped its rows from every tensor.
"""
import contextlib

import numpy as np
import pytest
import torch
from torch import nn

import snnconv
from snnconv.config import ConvertConfig, SimulationConfig
from snnconv.engine import Engine, ExitPolicy, TimePlan
from snnconv.errors import ConfigError

from helpers import as_data, assert_same_run, confident_maxpool, convert
from models import build

T = 32
ALPHA = 0.7  # exit when max softmax(accumulated / 8) exceeds this


class NeverExit(ExitPolicy):
    """Exits nobody, and records the accumulated output it is shown at every boundary."""

    def __init__(self):
        self.seen: list[tuple[int, torch.Tensor]] = []

    def should_exit(self, accumulated, step, rows):
        self.seen.append((step, accumulated.clone()))
        return torch.zeros(accumulated.shape[0], dtype=torch.bool)


class ExitAll(ExitPolicy):
    def should_exit(self, accumulated, step, rows):
        return torch.ones(accumulated.shape[0], dtype=torch.bool)


class Confident(ExitPolicy):
    def __init__(self, alpha: float):
        self.alpha = alpha
        self.batch_sizes: list[int] = []

    def should_exit(self, accumulated, step, rows):
        self.batch_sizes.append(accumulated.shape[0])
        return torch.softmax(accumulated / 8, dim=-1).max(-1).values > self.alpha


@pytest.fixture(scope="module")
def setup():
    """The max-pool tiny model with its logits scaled up, so confidence grows over time and samples
    leave at many different steps."""
    torch.set_num_threads(1)
    model, x, labels = confident_maxpool(64, seed=1, wrong_every=7)
    network = convert(model, x)
    return network, x, labels


@pytest.fixture(scope="module")
def every_step(setup):
    """[T, N, classes]: the output accumulated over steps 1..t, from one run that exits nobody."""
    network, x, labels = setup
    recorder = NeverExit()
    outcome = Engine(network.graph).run_batch(x, labels, TimePlan(T, 1), exit_policy=recorder)
    assert [step for step, _ in recorder.seen] == list(range(1, T))
    return torch.stack([acc for _, acc in recorder.seen] + [outcome["accumulated"]])


def test_recorded_outputs_match_shorter_runs(setup, every_step):
    """The brute-force table is what the engine computes when simply run for t steps."""
    network, x, _ = setup
    engine = Engine(network.graph)
    for t in (1, 2, 7, 19, T):
        assert torch.equal(engine.run_batch(x, None, TimePlan(t, 1))["accumulated"], every_step[t - 1])


def test_policy_that_never_exits_changes_nothing(setup):
    network, x, labels = setup
    engine = Engine(network.graph)
    plain = engine.simulate([(x, labels)], TimePlan(T, 4))
    with_policy = engine.simulate([(x, labels)], TimePlan(T, 4), exit_policy=NeverExit())
    assert plain.exit_steps is None
    assert np.array_equal(plain.correct_per_step, with_policy.correct_per_step)
    assert np.array_equal(with_policy.exit_steps, np.full(len(x), T))
    for a, b in zip(plain.neuron_layers, with_policy.neuron_layers):
        assert np.array_equal(a.spikes_per_step, b.spikes_per_step)
    assert with_policy.exit_correct == plain.correct_per_step[-1]


def test_policy_that_exits_everyone_at_once(setup, every_step):
    network, x, labels = setup
    result = Engine(network.graph).simulate([(x, labels)], TimePlan(T, 1), exit_policy=ExitAll())
    assert np.array_equal(result.exit_steps, np.ones(len(x), dtype=np.int64))
    after_one_step = int((every_step[0].argmax(-1) == labels).sum())
    assert result.exit_correct == after_one_step
    assert np.array_equal(result.correct_per_step, np.full(T, after_one_step))  # answers are kept
    # nobody was simulated past step 1
    for layer in result.neuron_layers:
        assert layer.spikes_per_step[1:].sum() == 0


@pytest.mark.parametrize("batch_size", [64, 24])
def test_confidence_exit_equals_brute_force(setup, every_step, batch_size):
    network, x, labels = setup
    confidence = torch.softmax(every_step / 8, dim=-1).max(-1).values  # [T, N]
    expected_exit = np.full(len(x), T)
    for i in range(len(x)):
        for t in range(1, T):  # the policy is asked after steps 1..T-1
            if confidence[t - 1, i] > ALPHA:
                expected_exit[i] = t
                break
    expected_pred = every_step[torch.as_tensor(expected_exit) - 1, torch.arange(len(x))].argmax(-1)
    final_pred = every_step[-1].argmax(-1)
    # the setup must make this comparison meaningful
    assert 5 < (expected_exit < T).sum() < len(x) and len(set(expected_exit.tolist())) > 5
    assert (expected_pred != final_pred).any(), "no sample's exit answer differs from its final one"

    engine = Engine(network.graph)
    policy = Confident(ALPHA)
    images_before = x.clone()
    batches = [(x[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    result = engine.simulate(batches, TimePlan(T, 1), exit_policy=policy)
    assert np.array_equal(result.exit_steps, expected_exit)
    assert result.exit_correct == int((expected_pred == labels).sum())
    assert min(policy.batch_sizes) < batch_size  # exited rows really left the batch

    predictions = torch.cat([engine.run_batch(xb, yb, TimePlan(T, 1), exit_policy=Confident(ALPHA))["predictions"]
                             for xb, yb in batches])
    assert torch.equal(predictions, expected_pred)

    # the accuracy curve: a sample answers with its running prediction until it leaves, then keeps it
    steps = torch.arange(1, T + 1).unsqueeze(1)
    answer_step = torch.minimum(steps, torch.as_tensor(expected_exit).unsqueeze(0))  # [T, N]
    answers = every_step[answer_step - 1, torch.arange(len(x)).unsqueeze(0)].argmax(-1)
    assert np.array_equal(result.correct_per_step, (answers == labels).sum(1).numpy())
    assert torch.equal(x, images_before)  # the batches are views of x: exits must not move rows in them


def test_oracle_exit_steps_are_first_correct_steps(setup, every_step):
    network, x, labels = setup
    result = Engine(network.graph).simulate([(x[:40], labels[:40]), (x[40:], labels[40:])], TimePlan(T, 5))
    correct = (every_step.argmax(-1) == labels).numpy()  # [T, N]
    expected = np.array([next((t + 1 for t in range(T) if correct[t, i]), T) for i in range(len(x))])
    assert np.array_equal(result.oracle_exit_steps, expected)
    assert (expected < T).any() and (expected > 1).any()
    assert np.array_equal(result.correct_per_step, correct.sum(1))


@pytest.mark.parametrize("steps", [0, -1])
def test_non_positive_time_steps_are_refused(steps):
    with pytest.raises(ConfigError, match="positive"):
        TimePlan(steps)
    with pytest.raises(ConfigError, match="positive"):
        SimulationConfig(time_steps=steps)
    with pytest.raises(ConfigError, match="positive"):
        ConvertConfig(time_steps=steps)
    with pytest.raises(ConfigError, match="positive"):
        TimePlan(8, chunk_steps=steps)


def test_runs_are_deterministic(setup):
    network, x, labels = setup
    runs = []
    for _ in range(2):
        engine = Engine(network.graph)
        result = engine.simulate([(x, labels)], TimePlan(T, 6), exit_policy=Confident(ALPHA))
        runs.append((result, engine.run_batch(x, labels, TimePlan(T, 6))["accumulated"]))
    (a, acc_a), (b, acc_b) = runs
    assert torch.equal(acc_a, acc_b)
    assert np.array_equal(a.correct_per_step, b.correct_per_step)
    assert np.array_equal(a.exit_steps, b.exit_steps) and a.exit_correct == b.exit_correct
    assert np.array_equal(a.oracle_exit_steps, b.oracle_exit_steps)
    for x_layer, y_layer in zip(a.neuron_layers + a.synaptic_layers, b.neuron_layers + b.synaptic_layers):
        counts = "spikes_per_step" if hasattr(x_layer, "spikes_per_step") else "ops_per_step"
        assert np.array_equal(getattr(x_layer, counts), getattr(y_layer, counts))


def test_analog_first_layer_is_not_spiking_input(images):
    model = build("vgg")
    network = convert(model, images)
    result = Engine(network.graph).simulate([(images, torch.zeros(len(images), dtype=torch.int64))], TimePlan(8))
    layers = {layer.name: layer for layer in result.synaptic_layers}
    assert list(layers) == ["conv1", "conv2", "conv3", "head"]
    assert [layer.spiking_input for layer in layers.values()] == [False, True, True, True]
    assert layers["conv1"].synaptic_ops == 0  # analog input: counted as dense MACs, not events
    assert layers["conv1"].macs_per_sample_dense == 8 * 8 * 8 * 9  # 8 out channels x 8x8 positions x 3x3x1 taps
    assert all(layers[name].synaptic_ops > 0 for name in ("conv2", "conv3", "head"))


def test_linear_after_one_if_layer_counts_by_hand():
    """Input -> IF -> (flatten) -> Linear(4, 3): every spike reaches 3 synapses, so ops = 3 x spikes at every step.

    Inputs are dyadic and theta = 1, so the IF counts floor(z T / theta + 1/2) are exact.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.tensor([[0.375, 0.625, 0.875, 0.25],
                      [-1.0, 1.0, 0.125, 0.5],
                      [0.0, 0.75, -0.25, 0.5625]]).view(3, 1, 1, 4)  # images of 1 x 1 x 4 pixels
    network = snnconv.convert(model, as_data(x, model, num_classes=3), ConvertConfig(
        balance=snnconv.BalanceConfig(method="max", granularity="layer")))
    (_, neuron), = network.neuron_layers()
    assert float(neuron.threshold) == 1.0
    steps = 8
    result = Engine(network.graph).simulate([(x, torch.zeros(3, dtype=torch.int64))], TimePlan(steps, 3))
    (spikes,), (synapse,) = result.neuron_layers, result.synaptic_layers
    assert synapse.spiking_input and synapse.kind == "linear"
    assert np.array_equal(synapse.ops_per_step, spikes.spikes_per_step * 3)
    expected = torch.clamp(torch.floor(x * steps / 1.0 + 0.5), 0, steps)
    assert spikes.spikes == int(expected.sum()) == 41
    assert spikes.neurons == 4


def test_cpu_engine_keeps_large_buffers_on_glibc(setup, monkeypatch):
    """The engine tunes glibc's allocator once (docs/design.md); the environment variable opts out."""
    from snnconv.engine import allocator
    monkeypatch.setattr(allocator, "_state", {})
    expected = allocator._glibc() is not None
    Engine(setup[0].graph)
    assert allocator._state == {"applied": expected}
    monkeypatch.setattr(allocator, "_state", {})
    monkeypatch.setenv("SNNCONV_KEEP_MALLOC", "1")
    assert allocator.keep_large_buffers() is False


@pytest.mark.parametrize("name", ["mlp", "residual", "maxpool"])  # the tiny VGG and concat nets pool or concatenate first
def test_spike_fed_layers_count_like_the_nonzero_pass(name, monkeypatch):
    """A weighted layer reading a neuron layer's output directly gets its synaptic ops from that layer's spike
    counts per position; the general path counts the nonzero inputs it receives. Both must give the same exact
    integers, on 300 rows (two partial sums of rows), with samples leaving the batch, and with per-layer windows."""
    torch.manual_seed(0)
    model = build(name)
    x = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    network = convert(model, x)
    labels = model(x).argmax(-1)
    engine = Engine(network.graph)
    assert engine._spike_fed, "every tiny model has a weighted layer fed straight by a neuron layer"
    names = [n for n, _ in network.neuron_layers()]
    plans = [TimePlan(T, 5), TimePlan.per_layer(T, {names[0]: T // 2, names[-1]: T // 4}, 5)]
    counts = []
    for spike_fed in (engine._spike_fed, {}):
        monkeypatch.setattr(engine, "_spike_fed", spike_fed)
        monkeypatch.setattr(engine, "_spike_sources", set(spike_fed.values()))
        runs = [engine.simulate([(x, labels)], plan) for plan in plans]
        runs.append(engine.simulate([(x, labels)], TimePlan(T, 4), exit_policy=Confident(0.6)))
        counts.append([[layer.ops_per_step for layer in run.synaptic_layers] +
                       [layer.spikes_per_step for layer in run.neuron_layers] for run in runs])
    for fast, general in zip(*counts):
        for a, b in zip(fast, general):
            assert np.array_equal(a, b)
            assert np.array_equal(a, np.round(a))  # whole operations


@pytest.mark.parametrize("name", ["vgg", "residual", "maxpool", "concat"])
def test_bias_as_shifted_threshold_matches_adding_the_bias(name):
    """At inference a calibration current b is read as a threshold shifted by t*b; the differentiable mode adds
    b to every step's input. Same dynamics summed in another order: spikes agree but for rare rounding ties."""
    from models import INPUT_SHAPE
    x = torch.rand(32, *INPUT_SHAPE, generator=torch.Generator().manual_seed(5))
    network = convert(build(name), x, time_steps=16)
    generator = torch.Generator().manual_seed(6)
    for _name, neuron in network.neuron_layers():  # calibration currents large enough to matter
        neuron.bias = (torch.rand(neuron.threshold.shape, generator=generator) - 0.5) * neuron.threshold
    plan = TimePlan(16, chunk_steps=5)
    layers = [n for n, _ in network.neuron_layers()]
    runs = []
    for engine in (Engine(network.graph), Engine(network.graph, surrogate_width=1.0)):
        with torch.no_grad():
            runs.append(engine.run_batch(x, None, plan, record=layers))
    for layer, total in runs[1]["recorded"].items():
        agree = torch.isclose(runs[0]["recorded"][layer], total, rtol=0, atol=1e-4 * float(total.abs().max()) + 1e-6)
        assert agree.float().mean() >= 0.995, layer
    assert torch.allclose(runs[0]["accumulated"], runs[1]["accumulated"],
                          atol=0.05 * float(runs[1]["accumulated"].abs().max()))


def test_dropping_rows_in_place_equals_gathering_the_rows_that_stay():
    """Exited rows leave by moving the staying rows beyond the new end into their places: the result must be
    the gather of ``order``, a permutation of exactly the staying rows, whatever the pattern of exits; tensors
    that share storage or carry gradients are gathered instead of moved in place."""
    from snnconv.engine.simulate import _drop_rows_in_place, _rows_after_exit
    generator = torch.Generator().manual_seed(5)
    for leaving_share in (0.0, 0.1, 0.5, 0.9, 1.0):
        leaving = torch.rand(37, generator=generator) < leaving_share
        membrane = torch.randn(37, 3, 4, generator=generator)
        base = torch.randn(37, 6, generator=generator)
        base_before = base.clone()
        state = {"membrane": membrane.clone(), "a": base, "a.view": base[:, :3], "grad": base.clone().requires_grad_()}
        order, moved_to, moved_from = _rows_after_exit(leaving)
        assert sorted(order.tolist()) == torch.nonzero(~leaving).flatten().tolist()
        assert moved_to.numel() == moved_from.numel() <= int(leaving.sum())
        kept = _drop_rows_in_place(state, order, moved_to, moved_from)
        assert torch.equal(kept["membrane"], membrane[order]) and kept["membrane"].is_contiguous()
        assert kept["membrane"].untyped_storage().data_ptr() == state["membrane"].untyped_storage().data_ptr()
        assert torch.equal(kept["a"], base_before[order]) and torch.equal(kept["a.view"], base_before[order, :3])
        assert torch.equal(kept["grad"].detach(), base_before[order]) and kept["grad"].requires_grad
        assert torch.equal(base, base_before)  # shared storage: not written to



class SharedCurrent(nn.Module):
    """A pre-activation read twice: by its ReLU (an IF layer) and by a residual add feeding the next one."""

    def __init__(self):
        super().__init__()
        self.conv0, self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), \
            nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        shared = self.conv1(torch.relu(self.conv0(x)))
        y = torch.relu(self.conv2(torch.relu(shared)) + shared)
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("name", ["vgg", "residual", "maxpool", "concat", "shared"])
@pytest.mark.parametrize("signed", [False, True])
def test_spikes_written_over_their_input_current_change_nothing(name, signed, monkeypatch):
    """An IF layer that alone reads a fresh current writes its spikes over it, and an add that alone reads its
    first operand adds into it: the same outputs, spikes, synaptic operations and exits as with new buffers,
    in the fused loops and the torch steps, with per-layer windows and exits; and a value that another op
    still reads is never overwritten."""
    from test_kernels import _ExitHalf
    from snnconv.engine import kernels, simulate
    x = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    model = SharedCurrent().eval() if name == "shared" else build(name)
    network = convert(model, x, time_steps=12, signed_spikes=signed)
    labels = model(x).argmax(-1)
    names = [n for n, _ in network.neuron_layers()]
    plans = [(TimePlan(12, 5), None), (TimePlan.per_layer(12, {names[1]: 6}, 4), None), (TimePlan(12, 3), _ExitHalf())]
    reused = []
    original = Engine._run_neuron_in_place
    monkeypatch.setattr(Engine, "_run_neuron_in_place", staticmethod(
        lambda per_step, *a, **k: (lambda r: reused.append(r[0] is per_step) or r)(original(per_step, *a, **k))))
    added_in_place = []
    addable = simulate._addable_in_place
    monkeypatch.setattr(simulate, "_addable_in_place",
                        lambda *a: (lambda r: added_in_place.append(r) or r)(addable(*a)))
    runs = {}
    for reuse in (True, False):
        for fused in (True, False):
            engine = Engine(network.graph)
            if not reuse:
                engine._sole_reader, engine._in_place_adds = {}, set()
            with contextlib.nullcontext() if fused else kernels.disabled():
                runs[reuse, fused] = [(engine.simulate([(x, labels)], plan, exit_policy=policy),
                                       engine.run_batch(x, labels, plan)["accumulated"]) for plan, policy in plans]
    if name == "shared":  # conv1's output, read by its IF layer and by the add, is never handed to a reader
        conv1 = next(n for n in network.graph.graph.nodes if n.name == "conv1")
        assert len(conv1.users) == 2 and "conv1" not in Engine(network.graph)._sole_reader
    assert any(reused) and not all(reused)
    assert any(added_in_place) == (name in ("residual", "shared"))
    for fused in (True, False):
        for (a, out_a), (b, out_b) in zip(runs[True, fused], runs[False, fused]):
            assert_same_run(a, out_a, b, out_b)
