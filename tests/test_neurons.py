"""The IF neuron's defining invariant: constant input z for T steps gives an exact spike count."""
import math

import pytest
import torch

from snnconv.engine import Engine, TimePlan
from snnconv.neurons import IFNeuron, if_step


def count_spikes(z: torch.Tensor, theta: float, steps: int, half_init: bool) -> torch.Tensor:
    neuron = IFNeuron(torch.tensor(theta), half_init=half_init)
    v = neuron.initial_potential(z.shape[1:], z.shape[0])
    total = torch.zeros_like(z)
    for _ in range(steps):
        s, v = if_step(z, v, neuron.threshold)
        total += s
    return total


@pytest.mark.parametrize("steps", [1, 2, 7, 16, 33])
@pytest.mark.parametrize("theta", [1.0, 0.37, 2.5])
def test_constant_input_fires_round_half_up(steps, theta):
    # z on a grid that avoids exact ties at k + 1/2, where float rounding could go either way
    z = torch.linspace(-0.5, 1.6, 211, dtype=torch.float64).unsqueeze(0) * theta + 1e-7
    spikes = count_spikes(z, theta, steps, half_init=True)
    expected = torch.clamp(torch.floor(z * steps / theta + 0.5), 0, steps)
    assert torch.equal(spikes, expected)


@pytest.mark.parametrize("steps", [1, 5, 32])
def test_without_half_init_the_count_floors(steps):
    z = torch.linspace(0.0, 1.3, 97, dtype=torch.float64).unsqueeze(0) + 1e-7
    spikes = count_spikes(z, 1.0, steps, half_init=False)
    assert torch.equal(spikes, torch.clamp(torch.floor(z * steps), 0, steps))


def test_engine_neuron_matches_formula_through_a_network():
    """A linear layer feeding one IF layer: the engine's spike count per neuron obeys the same law."""
    import torch.fx
    from torch import nn

    from snnconv.stages.convert import normalize, to_spiking

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()
            self.out = nn.Linear(5, 2)

        def forward(self, x):
            return self.out(self.relu(x))

    z = torch.tensor([[0.0, 0.24, 0.26, 0.74, 1.7]])
    gm, _ = normalize(torch.fx.symbolic_trace(Net().eval()))
    relu = next(n.name for n in gm.graph.nodes if n.op == "call_module" and "relu" in n.name)
    snn = to_spiking(gm, {relu: torch.tensor(1.0)}, half_init=True)
    steps = 10
    outcome = Engine(snn).run_batch(z, None, TimePlan(steps, 3), record=[relu])
    counts = outcome["recorded"][relu]  # theta = 1: summed output equals the spike count
    assert counts.tolist() == [[min(steps, math.floor(v * steps + 0.5)) for v in z[0].tolist()]]
