"""Directly trained spiking transformers as products: exact work counts, artifacts, `snnconv train`, `evaluate`
and `compress --method dts` on them, and the per-group optimizers of the training loop the masks use."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from snnconv import artifacts
from snnconv.data import LabeledData
from snnconv.direct_network import DirectNetwork
from snnconv.engine.direct import attention_accumulates, simulate_spikformer
from snnconv.errors import ArtifactError, ConfigError
from snnconv.spikformer import Spikformer, SpikformerConfig
from snnconv.training import ParamGroup, TrainConfig, fit
from snnconv_cli.main import app

from helpers import Interrupted, cut_after, undefined_summary_keys

runner = CliRunner()


def _model(seed: int = 0, **config) -> Spikformer:
    torch.manual_seed(seed)
    model = Spikformer(SpikformerConfig(**{"depth": 1, "dim": 16, "heads": 2, "image_size": 8, **config}))
    for bn in model.modules():  # BN gains that make every layer fire on random input
        if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
            bn.weight.data.fill_(2.0)
            bn.bias.data.fill_(1.5)
    return model.eval()


def _data(samples: int = 24, seed: int = 0, classes: int = 10) -> LabeledData:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(samples, 1, 8, 8, generator=generator) * 3
    y = torch.randint(0, classes, (samples,), generator=generator)
    return LabeledData(x=x, y=y, num_classes=classes, description="random 8x8")


def test_attention_accumulates_equal_a_brute_force_count():
    generator = torch.Generator().manual_seed(1)
    q, k, v = ((torch.rand(3, 2, 2, 5, 4, generator=generator) > 0.6).float() for _ in range(3))
    expected = np.zeros(3)
    for t in range(3):
        for b in range(2):
            for h in range(2):
                qt, kt, vt = q[t, b, h], k[t, b, h], v[t, b, h]
                # q k^T: one add per coincidence q[i, d] = k[j, d] = 1
                expected[t] += sum(int(qt[i, d] and kt[j, d]) for i in range(5) for j in range(5) for d in range(4))
                scores = qt @ kt.T
                # A v: for every v[j, c] = 1, one add per nonzero A[i, j]
                expected[t] += sum(int(scores[i, j] != 0) for j in range(5) for c in range(4) if vt[j, c]
                                   for i in range(5))
    assert attention_accumulates(q, k, v).tolist() == expected.tolist()
    assert expected.min() > 0


def test_simulation_counts_spikes_and_accumulates_exactly():
    model, data = _model(), _data()
    seen = {}
    hooks = [model.blocks[0].attn.attn_lif.register_forward_hook(lambda _m, _i, out: seen.setdefault("attn", []).append(out)),
             model.sps.lif2.register_forward_hook(lambda _m, _i, out: seen.setdefault("lif2", []).append(out))]
    sim = simulate_spikformer(model, data, 3, batch_size=10)
    for hook in hooks:
        hook.remove()
    layers = {layer.name: layer for layer in sim.synaptic_layers}
    neurons = {layer.name: layer for layer in sim.neuron_layers}
    attn = torch.cat(seen["attn"], dim=1)  # [T, B, N, D]
    # the projection reads the attention LIF's spikes: one accumulate per spike and output channel (16)
    assert layers["blocks.0.attn.proj.linear"].ops_per_step.tolist() == (attn.sum((1, 2, 3)) * 16).tolist()
    assert neurons["blocks.0.attn.attn_lif"].spikes_per_step.tolist() == attn.sum((1, 2, 3)).tolist()
    # conv3 (3x3, padding 1, 8 -> 16 channels) reads max-pooled lif2 spikes on a 4x4 map: fan-out = 16 x the
    # kernel positions that land on the pixel (4 at a corner, 6 at an edge, 9 inside)
    pooled = nn.functional.max_pool2d(torch.cat(seen["lif2"], dim=1).flatten(0, 1), 2).view(3, 24, 8, 4, 4)
    positions = torch.tensor([[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]], dtype=torch.float64)
    expected = (pooled.double() * positions).sum((1, 2, 3, 4)) * 16
    assert layers["sps.conv3.conv"].ops_per_step.tolist() == expected.tolist()
    assert not layers["sps.conv1.conv"].spiking_input and layers["sps.conv1.conv"].synaptic_ops == 0
    assert layers["blocks.0.attn.product"].macs_per_sample_dense == 2 * 2 * 4 * 4 * 8  # 2 N^2 D, N = 4 tokens
    with torch.no_grad():
        logits = model(data.x, 3).cumsum(0)
    assert sim.correct_per_step.tolist() == (logits.argmax(-1) == data.y).sum(1).tolist()
    assert min(layer.spikes for layer in sim.neuron_layers) > 0  # every layer fired: the counts were exercised


def _masked_network() -> DirectNetwork:
    model = _model(3)
    network = DirectNetwork(model=model, time_steps=4, input_shape=(1, 8, 8), num_classes=10,
                            source={"source": "test", "family": "spikformer"})
    steps = {name: 4 - (i % 4) for i, name in enumerate(model.lif_layers())}
    network.set_layer_steps(steps)
    network.time_mask_parameters = {name: [0.25, 0.25, 0.25, float(i)] for i, name in enumerate(model.lif_layers())}
    return network


def test_artifact_round_trip_keeps_outputs_masks_and_work(tmp_path):
    network, data = _masked_network(), _data()
    before = simulate_spikformer(network.model, data, 4)
    with torch.no_grad():
        logits = network.model(data.x, 4)
    artifacts.save_direct(network, tmp_path / "art")
    loaded = artifacts.load_direct(tmp_path / "art")
    assert loaded.layer_steps == network.layer_steps and min(loaded.layer_steps.values()) == 1
    assert loaded.time_mask_parameters == network.time_mask_parameters
    with torch.no_grad():
        assert torch.equal(loaded.model(data.x, 4), logits)
    after = simulate_spikformer(loaded.model, data, 4)
    assert [layer.synaptic_ops for layer in after.synaptic_layers] == [layer.synaptic_ops for layer in before.synaptic_layers]
    fed_by_masked = {layer.name: layer.active_steps for layer in after.synaptic_layers}
    assert fed_by_masked["blocks.0.attn.proj.linear"] == network.layer_steps["blocks.0.attn.attn_lif"]
    with pytest.raises(ArtifactError, match="directly trained spiking transformer"):
        artifacts.load(tmp_path / "art")


def _invoke(*args):
    return runner.invoke(app, [*args])


def _said(result) -> str:
    """The CLI's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def trained_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("spikformer") / "sf"
    result = _invoke("train", "--depth", "1", "--dim", "16", "--heads", "2", "-T", "3", "--epochs", "2", "--lr", "5e-3", "--train-samples", "300",
                     "--limit", "300", "-o", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    return out


def test_cli_train_then_evaluate_reproduces_the_reports(trained_artifact):
    manifest = json.loads((trained_artifact / "manifest.json").read_text())
    assert manifest["family"] == "spikformer" and manifest["time_steps"] == 3 and manifest["schema_version"] == 2
    assert len(manifest["training"]["epoch_losses"]) == 2
    trained = pd.read_csv(trained_artifact / "reports" / "summary.csv").iloc[0]
    assert np.isnan(trained["ann_accuracy_pct"]) and trained["synaptic_ops_per_sample"] > 0
    report = trained_artifact.parent / "again"
    result = _invoke("evaluate", str(trained_artifact), "--limit", "300", "--report-dir", str(report), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["ann_accuracy_pct"] is None  # no ANN: null in JSON, not NaN
    assert undefined_summary_keys(summary) == []
    assert summary["snn_accuracy_pct"] == pytest.approx(trained["snn_accuracy_pct"])
    assert summary["synaptic_ops_per_sample"] == pytest.approx(trained["synaptic_ops_per_sample"])
    assert summary["macs_per_sample_ann"] > summary["macs_per_sample_snn"] > 0
    assert (report / "report.md").read_text().count("Dense, same architecture") == 1


def test_cli_compress_dts_on_a_spikformer_learns_prefixes_that_evaluate_runs(trained_artifact, tmp_path):
    out = tmp_path / "dts"
    result = _invoke("compress", str(trained_artifact), "--method", "dts", "--mask-weight", "0.05", "--mask-lr", "0.5",
                     "--groups", "mlp", "--limit", "300", "-o", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    steps = {layer["name"]: layer["active_steps"] for layer in manifest["layers"]}
    table = pd.read_csv(out / "reports" / "dts.csv")
    assert dict(zip(table["layer"], table["time_steps_dts"])) == steps
    assert set(table.loc[table["penalized"], "layer"]) == {n for n in steps if ".mlp." in n}
    assert min(steps[n] for n in steps if ".mlp." in n) < 3  # the penalized layers lost steps
    evaluated = _invoke("evaluate", str(out), "--limit", "300", "--report-dir", str(tmp_path / "r"), "--json")
    summary = json.loads(evaluated.output)["summary"]
    assert summary["avg_time_steps"] == pytest.approx(sum(steps.values()) / len(steps))
    compressed = pd.read_csv(out / "reports" / "summary.csv").iloc[0]
    assert summary["snn_accuracy_pct"] == pytest.approx(compressed["snn_accuracy_pct"])
    again = _invoke("compress", str(out), "--method", "dts", "-o", str(tmp_path / "twice"), "--quiet")
    assert again.exit_code != 0 and "already has learned time masks" in _said(again)
    assert not (tmp_path / "twice").exists()


def test_cli_refuses_other_methods_and_the_ann_gate_on_a_spikformer(trained_artifact, tmp_path):
    result = _invoke("compress", str(trained_artifact), "--method", "teas", "-o", str(tmp_path / "t"), "--quiet")
    assert result.exit_code != 0 and "only --method dts applies" in _said(result)
    assert not (tmp_path / "t").exists()
    gated = _invoke("evaluate", str(trained_artifact), "--max-acc-drop", "1", "--report-dir", str(tmp_path / "g"))
    assert gated.exit_code != 0 and "--max-acc-drop" in _said(gated) and not (tmp_path / "g").exists()
    wrong = _invoke("train", "--dim", "10", "--heads", "4", "-o", str(tmp_path / "w"), "--quiet")
    assert wrong.exit_code != 0 and "divisible" in _said(wrong) and not (tmp_path / "w").exists()


class _TwoParts(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.0, 1.0]))
        self.masks = nn.ParameterDict({"a": nn.Parameter(torch.tensor([0.5]))})


def _loss(module, batch):
    (x,) = batch
    return (module.weight * x).sum() * 3 + (module.masks["a"] * x[:, :1]).sum() * 2


def test_a_param_group_can_train_with_its_own_optimizer():
    model = _TwoParts()
    x = torch.ones(1, 2)
    config = TrainConfig(epochs=1, batch_size=1, lr=0.1, optimizer="adam", momentum=0.0, weight_decay=0.0,
                         schedule="constant")
    fit(model, [x], _loss, config, param_groups=(ParamGroup("masks.", 0.01, "sgd"),))
    # SGD: a step of lr x gradient (2); Adam's first step is lr x sign(gradient) whatever its size (3)
    assert model.masks["a"].item() == pytest.approx(0.5 - 0.01 * 2)
    assert model.weight.tolist() == pytest.approx([0.9, 0.9])


def test_resume_refuses_a_checkpoint_from_another_mask_setting(tmp_path):
    x = torch.ones(4, 2)
    config = TrainConfig(epochs=2, batch_size=2, lr=0.1, optimizer="adam", weight_decay=0.0)
    groups = (ParamGroup("masks.", 0.01, "sgd"),)
    with pytest.raises(Interrupted):
        fit(_TwoParts(), [x], _loss, config, checkpoint=tmp_path / "c.pt", param_groups=groups,
            fingerprint={"mask_weight": 0.1}, progress=cut_after(3))
    with pytest.raises(ConfigError, match="another training configuration"):
        fit(_TwoParts(), [x], _loss, config, checkpoint=tmp_path / "c.pt", resume=True, param_groups=groups,
            fingerprint={"mask_weight": 0.2})
    resumed, straight = _TwoParts(), _TwoParts()
    fit(resumed, [x], _loss, config, checkpoint=tmp_path / "c.pt", resume=True, param_groups=groups,
        fingerprint={"mask_weight": 0.1})
    fit(straight, [x], _loss, config, param_groups=groups, fingerprint={"mask_weight": 0.1})
    assert torch.equal(resumed.masks["a"], straight.masks["a"]) and torch.equal(resumed.weight, straight.weight)
