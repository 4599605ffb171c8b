"""The automatic chunk: how many steps the engine simulates together when the caller leaves it open."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import snnconv
import snnconv.network
from snnconv.config import SimulationConfig
from snnconv.engine.chunking import CHUNK_BYTES, largest_layer_bytes
from snnconv.errors import ConfigError

from helpers import as_data, convert

WIDE = 1000  # neurons of the hidden layer: its float32 block is 4000 bytes per sample and step


@pytest.fixture(scope="module")
def wide():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, WIDE), nn.ReLU(), nn.Linear(WIDE, 10)).eval()
    x = torch.rand(64, 3, 2, 2)
    return convert(model, x), x, model


def test_the_largest_layer_is_measured_per_sample(wide):
    network, _, _ = wide
    assert largest_layer_bytes(network.graph, network.input_shape) == 4 * WIDE


@pytest.mark.parametrize("batch,expected", [(1, 8), (1000, 4), (2000, 2), (4194, 1), (5000, 1)])
def test_the_chunk_keeps_a_batch_block_of_the_largest_layer_within_the_budget(wide, batch, expected):
    # 16 MiB / (batch x 4000 bytes), at most 8 steps and at least 1
    assert CHUNK_BYTES == 16 * 2**20
    assert wide[0].chunk_steps_for(batch) == expected


def test_a_chosen_chunk_is_kept(wide):
    assert wide[0].chunk_steps_for(5000, chosen=8) == 8


def test_evaluate_takes_the_automatic_chunk_unless_one_is_chosen(wide, monkeypatch):
    network, x, model = wide
    data = as_data(x, model)
    asked = []
    automatic = snnconv.network.auto_chunk_steps

    def spy(graph, input_shape, batch_size):
        asked.append(batch_size)
        return automatic(graph, input_shape, batch_size)

    monkeypatch.setattr(snnconv.network, "auto_chunk_steps", spy)
    chosen = snnconv.evaluate(network, data, SimulationConfig(time_steps=16, chunk_steps=3, batch_size=32))
    assert asked == []
    default = snnconv.evaluate(network, data, SimulationConfig(time_steps=16, batch_size=32))
    assert asked == [32]
    # the chunk regroups the work, not the result
    assert np.array_equal(default.simulation.correct_per_step, chosen.simulation.correct_per_step)
    for a, b in zip(default.simulation.neuron_layers, chosen.simulation.neuron_layers):
        assert np.array_equal(a.spikes_per_step, b.spikes_per_step)


def test_other_devices_keep_eight_steps():
    # only the CPU was measured; a graph elsewhere (here on the meta device, which holds no data) keeps 8
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, WIDE), nn.ReLU(), nn.Linear(WIDE, 10)).eval()
    network = convert(model, torch.rand(8, 3, 2, 2))
    network.graph.to("meta")
    assert network.chunk_steps_for(5000) == 8


@pytest.mark.parametrize("batch", [0, -3])
def test_a_batch_without_rows_is_refused_by_name(wide, batch):
    # the chunk is a budget divided by the batch: a batch of no rows would divide by zero
    with pytest.raises(ConfigError, match=f"Batch size {batch} must be a positive integer"):
        wide[0].chunk_steps_for(batch)
