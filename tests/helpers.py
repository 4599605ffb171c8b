"""Shared test plumbing: convert a module with fixed options and read the SNN's rate output."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from snnconv.config import BalanceConfig, ConvertConfig
from snnconv.data import LabeledData
from snnconv.engine import Engine, TimePlan
import snnconv


def as_data(x: torch.Tensor, model=None, num_classes: int = 10) -> LabeledData:
    """Label images with the model's own ANN prediction (or zeros)."""
    y = model(x).argmax(1) if model is not None else torch.zeros(len(x), dtype=torch.int64)
    return LabeledData(x=x.float(), y=y.long(), description="test images", num_classes=num_classes)


def convert(model, x: torch.Tensor, **options):
    balance = options.pop("balance", BalanceConfig(method="max", granularity="layer"))
    options.setdefault("calibrate", "none")  # equivalence tests hold the plain conversion; calibration has its own
    config = ConvertConfig(balance=balance, **options)
    with torch.no_grad():
        return snnconv.convert(model, as_data(x, model), config)


def snn_rate_output(network, x: torch.Tensor, time_steps: int, chunk_steps: int = 16) -> torch.Tensor:
    """Accumulated output layer divided by T: the SNN's estimate of the ANN's logits."""
    engine = Engine(network.graph)
    outcome = engine.run_batch(x, None, TimePlan(time_steps, chunk_steps))
    return outcome["accumulated"] / time_steps


def confident_maxpool(samples: int, seed: int, wrong_every: int):
    """The tiny max-pool model with its logits scaled up, so confidence grows over time and samples leave
    at many different steps; labels are its ANN predictions, shifted on every ``wrong_every``-th sample so
    that "correct" is not the same as "agrees with the ANN". Returns (model, x, labels)."""
    from models import build
    x = torch.rand(samples, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    model = build("maxpool")
    with torch.no_grad():
        model.fc.weight.mul_(40)
        model.fc.bias.mul_(40)
        labels = model(x).argmax(1)
    labels[::wrong_every] = (labels[::wrong_every] + 1) % 10
    return model, x, labels


def cli_artifact(directory, *options: str):
    """Convert the embedded default through the CLI at T = 8 on 200 test images; returns the artifact path."""
    from typer.testing import CliRunner
    from snnconv_cli.main import app
    artifact = directory / "art"
    result = CliRunner().invoke(app, ["convert", "-o", str(artifact), "--limit", "200", "-T", "8", "--quiet", *options])
    assert result.exit_code == 0, result.output
    return artifact


def quadrant_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose label (0..3) is the brightest quadrant: a task the tiny models learn in seconds."""
    from models import INPUT_SHAPE
    x = torch.rand(n, *INPUT_SHAPE, generator=torch.Generator().manual_seed(seed)) * 0.5
    y = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(seed + 1))
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 0.3
    return x, y


def trained(name: str, x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    from models import build
    torch.manual_seed(0)
    model = build(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


class Interrupted(Exception):
    """Raised by :func:`cut_after` to simulate a training run killed part-way."""


def cut_after(batches: int):
    """A progress factory for ``fit()`` that interrupts training after ``batches`` batches."""
    def factory(_description, _total):
        done = []

        def advance(n):
            done.append(n)
            if len(done) == batches:
                raise Interrupted

        return advance

    return factory


def assert_same_run(a, output_a: torch.Tensor, b, output_b: torch.Tensor) -> None:
    """Two simulations (SimulationResult and accumulated output each) agree exactly: outputs, accuracy per
    step, exit steps, spikes and synaptic operations per layer and step."""
    assert torch.equal(output_a, output_b)
    assert np.array_equal(a.correct_per_step, b.correct_per_step)
    assert np.array_equal(a.exit_steps, b.exit_steps)
    for layer_a, layer_b in zip(a.neuron_layers, b.neuron_layers, strict=True):
        assert np.array_equal(layer_a.spikes_per_step, layer_b.spikes_per_step), layer_a.name
    for layer_a, layer_b in zip(a.synaptic_layers, b.synaptic_layers, strict=True):
        assert np.array_equal(layer_a.ops_per_step, layer_b.ops_per_step), layer_a.name


def undefined_summary_keys(summary: dict) -> list[str]:
    """Summary keys that docs/metrics.md does not define (every number we print has a unit and a definition)."""
    documented = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    return [key for key in summary if f"`{key}`" not in documented]
