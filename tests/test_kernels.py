"""The fused CPU loops (snnconv/engine/kernels.py) against the torch steps they replace: bit for bit."""
from __future__ import annotations

import contextlib
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnconv.engine import Engine, ExitPolicy, TimePlan, kernels, simulate
from snnconv.neurons import if_step_, maxpool_gate_step, signed_if_step_

from helpers import assert_same_run, convert
from models import INPUT_SHAPE, TINY_MODELS, build

pytestmark = pytest.mark.skipif(kernels._numba() is None, reason="numba is a dependency; this checks its loops")


def _currents(steps, rows, shape, seed):
    """Currents with silent, steady and overdriven neurons (a backlog: more than one threshold per step)."""
    generator = torch.Generator().manual_seed(seed)
    scale = torch.rand(1, rows, *shape, generator=generator) * 3.0
    return (torch.randn(steps, rows, *shape, generator=generator) + 0.3) * scale


@pytest.fixture(params=["serial", "parallel"])
def loop_build(request, monkeypatch):
    """Each loop has a serial build (small chunks) and one on numba's threads (large ones): both are checked,
    with a record of which one ran."""
    if request.param == "parallel" and kernels._threads() == 1:
        pytest.skip("numba has one thread here: the parallel build never runs")
    monkeypatch.setattr(kernels, "PARALLEL_FROM", 0 if request.param == "parallel" else 1 << 62)
    ran = []
    original = kernels._kernels
    monkeypatch.setattr(kernels, "_kernels",
                        lambda parallel, in_place=False: ran.append(parallel) or original(parallel, in_place))
    yield ran
    assert ran and set(ran) == {request.param == "parallel"}


@pytest.mark.parametrize("shape", [(11,), (3, 5, 4)])
@pytest.mark.parametrize("channel_wise", [False, True])
@pytest.mark.parametrize("biased", [False, True])
# in_place: the outputs overwrite the current (the loop built for it); a constant current, an expanded view, never
@pytest.mark.parametrize("constant, in_place", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("signed", [False, True])
def test_if_loop_equals_the_torch_steps(shape, channel_wise, biased, constant, signed, in_place, loop_build):
    steps, rows, t0 = 7, 9, 5
    generator = torch.Generator().manual_seed(1)
    channels = shape[0]
    view = (1, channels, *([1] * (len(shape) - 1)))
    theta = (torch.rand(channels, generator=generator) + 0.5).view(view) if channel_wise else torch.tensor(0.8)
    bias = (torch.rand(view, generator=generator) - 0.5) * 0.2 if biased else torch.zeros(())
    if constant:
        per_step = _currents(1, rows, shape, 2)[0].expand(steps, rows, *shape)
    else:
        per_step = _currents(steps, rows, shape, 2)
    v0 = torch.rand(rows, *shape, generator=generator) * theta
    net0 = torch.randint(0, 3, (rows, *shape), generator=generator).float() if signed else None

    v_eager, out_eager = v0.clone(), torch.empty(steps, rows, *shape)
    net_eager = net0.clone() if signed else None
    for i in range(steps):  # the engine's eager branch: the bias read as a threshold shifted by t * b
        compare = theta - (t0 + i + 1) * bias
        if signed:
            signed_if_step_(per_step[i], v_eager, theta, net_eager, out_eager[i], compare=compare)
        else:
            if_step_(per_step[i], v_eager, theta, out_eager[i], compare=compare)

    v_fused = v0.clone()
    out_fused = per_step.clone() if in_place else torch.empty(steps, rows, *shape)
    net_fused = net0.clone() if signed else None
    compare = torch.stack([(theta - (t0 + i + 1) * bias).expand(1, *shape) for i in range(steps)])
    counts = kernels.if_chunk_(out_fused if in_place else per_step, v_fused, theta, compare, out_fused, net_fused)

    assert torch.equal(out_fused, out_eager)
    assert torch.equal(v_fused, v_eager)
    if signed:
        assert torch.equal(net_fused, net_eager)
        assert (out_eager < 0).any() and (net_eager >= 0).all()  # some spikes retracted, never below zero net
    assert torch.equal(counts, (out_eager != 0).sum(1).reshape(steps, -1).to(torch.float64))
    assert 0 < counts.sum() < steps * rows * v0[0].numel()  # some neurons fire, not all of them every step


@pytest.mark.parametrize("kernel_size, stride", [(2, 2), (3, 2), (3, 1), ((2, 3), (1, 2))])
@pytest.mark.parametrize("spiking", [True, False])
def test_gate_loop_equals_the_torch_steps(kernel_size, stride, spiking, loop_build):
    steps, rows, channels = 6, 3, 4
    pool = nn.MaxPool2d(kernel_size, stride)
    generator = torch.Generator().manual_seed(2)
    if spiking:  # theta * s, one threshold per channel
        theta = torch.rand(1, 1, channels, 1, 1, generator=generator) + 0.5
        x = (torch.rand(steps, rows, channels, 9, 8, generator=generator) < 0.4).float() * theta
    else:
        x = torch.randn(steps, rows, channels, 9, 8, generator=generator)
    accumulated = torch.rand(rows, channels, 9, 8, generator=generator)
    window_max = F.max_pool2d(accumulated, kernel_size, stride)

    eager_acc, eager_max, eager_out = accumulated.clone(), window_max.clone(), []
    for i in range(steps):
        out, eager_acc, eager_max = maxpool_gate_step(x[i], eager_acc, eager_max, pool)
        eager_out.append(out)

    assert kernels.gate_fusable(pool, x)
    fused_acc, fused_max = accumulated.clone(), window_max.clone()
    fused_out = torch.empty(steps, *window_max.shape)
    counts = kernels.gate_chunk_(x, fused_acc, fused_max, fused_out, pool)

    assert torch.equal(fused_out, torch.stack(eager_out))
    assert torch.equal(counts, (fused_out != 0).sum(1).reshape(steps, -1).to(torch.float64))
    assert torch.equal(fused_acc, eager_acc)
    assert torch.equal(fused_max, eager_max)


def test_what_the_loops_do_not_handle_goes_to_torch(monkeypatch):
    x = torch.zeros(2, 1, 3, 8, 8)
    assert kernels.fused_available(x)
    assert not kernels.fused_available(x.double())
    assert not kernels.gate_fusable(nn.MaxPool2d(2, padding=1), x)
    assert not kernels.gate_fusable(nn.MaxPool2d(2, dilation=2), x)
    assert not kernels.gate_fusable(nn.MaxPool2d(3, 2, ceil_mode=True), x)
    monkeypatch.setattr(kernels, "_compiled", {})
    monkeypatch.setenv("SNNCONV_FUSED", "0")
    assert not kernels.fused_available(x)


class _ExitHalf(ExitPolicy):
    """Every other remaining sample leaves at each chunk boundary (exercises batch compaction)."""

    def should_exit(self, accumulated_output, step, rows):
        return rows % 2 == 1


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("signed", [False, True])
def test_engine_results_do_not_depend_on_the_fused_loops(name, signed, monkeypatch):
    """Whole simulations with and without the fused loops: the same output, spike and synaptic-op counts and
    accuracy curve, with calibration currents, per-layer windows and samples leaving the batch."""
    x = torch.rand(40, *INPUT_SHAPE, generator=torch.Generator().manual_seed(3))
    model = build(name)
    network = convert(model, x, time_steps=16, signed_spikes=signed)
    generator = torch.Generator().manual_seed(4)
    for _layer, neuron in network.neuron_layers():
        neuron.bias = (torch.rand(neuron.threshold.shape, generator=generator) - 0.5) * 0.1 * neuron.threshold
    labels = model(x).argmax(-1)
    names = [n for n, _ in network.neuron_layers()]
    plans = [(TimePlan(16, 5), None), (TimePlan.per_layer(16, {names[0]: 8}, 4), None), (TimePlan(16, 4), _ExitHalf())]
    engine = Engine(network.graph)
    calls = []
    for loop in ("if_chunk_", "gate_chunk_"):
        original = getattr(simulate, loop)
        monkeypatch.setattr(simulate, loop, lambda *a, _f=original, _n=loop: calls.append(_n) or _f(*a))
    runs = {}
    for fused in (True, False):
        runs[fused] = []
        with contextlib.nullcontext() if fused else kernels.disabled():
            for plan, policy in plans:
                result = engine.simulate([(x, labels)], plan, exit_policy=policy)
                with torch.no_grad():
                    output = engine.run_batch(x, labels, plan)["accumulated"]
                runs[fused].append((result, output))
    for (fused, fused_output), (eager, eager_output) in zip(runs[True], runs[False]):
        assert_same_run(fused, fused_output, eager, eager_output)
    assert any(layer.spikes > 0 for layer in runs[True][0][0].neuron_layers)
    assert "if_chunk_" in calls and ("gate_chunk_" in calls) == (name == "maxpool")


@pytest.mark.skipif("NUMBA_THREADING_LAYER" in os.environ, reason="the user chose numba's layer")
def test_the_loops_run_on_numbas_workqueue_layer_not_a_second_openmp():
    """numba's OpenMP layer beside torch's OpenMP gave every small torch op a fixed cost of about 15 ms once a
    loop had run (docs/design.md, "Fused CPU loops"); the engine selects the workqueue layer before the first loop."""
    numba = kernels._numba()
    kernels.warm_up()
    assert numba.threading_layer() == "workqueue"
