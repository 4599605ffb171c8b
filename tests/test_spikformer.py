"""The Spikformer-style spiking transformer: LIF dynamics, the attention block against a hand-computed case, DTS
masks (soft during training, a real prefix after), and direct training through the shared loop."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from snnconv.data import LabeledData
from snnconv.errors import ConfigError
from snnconv.neurons.lif import MultiStepLIF
from snnconv.neurons.time_mask import initial_parameters
from snnconv.spikformer import GROUPS, Spikformer, SpikformerConfig, SpikingSelfAttention, lif_group
from snnconv.engine.direct import simulate_spikformer
from snnconv.stages.direct import DirectConfig, TrainableSpikformer, freeze_masks, penalized_lif_layers, train_direct
from snnconv.training import TrainConfig


def _identity_bn(module: nn.Module) -> None:
    for bn in module.modules():
        if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
            bn.eps = 0.0
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.weight.data.fill_(1.0)
            bn.bias.data.zero_()


def test_lif_neuron_leaks_fires_and_resets_to_zero():
    lif = MultiStepLIF(tau=2.0, threshold=1.0)
    out = lif(torch.full((6, 1), 1.5))
    # H1 = 0.75; H2 = 0.75 + (1.5 - 0.75) / 2 = 1.125 -> spike, V = 0; and again
    assert out.flatten().tolist() == [0, 1, 0, 1, 0, 1]
    assert lif(torch.full((4, 1), 0.9)).sum() == 0  # H approaches 0.9 < 1 from below: never fires


def test_attention_block_matches_a_hand_computed_case():
    config = SpikformerConfig(dim=4, heads=1, attention_scale=0.5)  # dim 4 for the stem's divisibility
    ssa = SpikingSelfAttention(config).eval()
    _identity_bn(ssa)
    with torch.no_grad():
        ssa.q.linear.weight.copy_(2 * torch.eye(4))
        ssa.k.linear.weight.copy_(torch.tensor([[2., 0, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
        ssa.v.linear.weight.copy_(torch.tensor([[0., 2, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
        ssa.proj.linear.weight.copy_(2 * torch.eye(4))
    x = torch.tensor([[[[1., 0, 0, 0], [1, 1, 0, 0]]]])  # [T=1, B=1, N=2, D=4] spikes
    # one step of a LIF from rest: H = X / 2, spike iff H >= theta
    # q = [[1,0],[1,1]], k = [[1,1],[1,1]], v = [[0,1],[1,1]] (first two channels; the rest are 0)
    # q k^T = [[1,1],[2,2]]; (q k^T) v = [[1,2],[2,4]]; x scale 0.5 = [[0.5,1],[1,2]]
    # attention LIF (theta 0.5): H = [[0.25,0.5],[0.5,1]] -> [[0,1],[1,1]]; projection 2 I then LIF: the same
    expected = torch.tensor([[[[0., 1, 0, 0], [1, 1, 0, 0]]]])
    assert torch.equal(ssa(x), expected)


def test_attention_heads_split_the_channels():
    """Two heads: the same block equals two one-head products on each half of the channels (no softmax)."""
    torch.manual_seed(0)
    config = SpikformerConfig(dim=8, heads=2)
    ssa = SpikingSelfAttention(config).eval()
    x = (torch.rand(3, 2, 5, 8) > 0.5).float()
    q, k, v = ssa.q_lif(ssa.q(x)), ssa.k_lif(ssa.k(x)), ssa.v_lif(ssa.v(x))
    halves = [(q[..., h:h + 4] @ k[..., h:h + 4].transpose(-2, -1)) @ v[..., h:h + 4] * config.attention_scale
              for h in (0, 4)]
    expected = ssa.proj_lif(ssa.proj(ssa.attn_lif(torch.cat(halves, -1))))
    assert torch.equal(ssa(x), expected)


def test_every_lif_layer_is_in_one_of_the_paper_groups():
    model = Spikformer(SpikformerConfig(depth=2, dim=16, heads=2, image_size=8))
    groups = {name: group for name, (_lif, group) in model.lif_layers().items()}
    assert set(groups.values()) == set(GROUPS)
    assert groups["sps.lif1"] == "sps" and groups["blocks.1.attn.k_lif"] == "qkv"
    assert groups["blocks.0.attn.proj_lif"] == "attn" and groups["blocks.0.mlp.lif2"] == "mlp"
    assert lif_group("blocks.3.attn.attn_lif") == "attn"
    assert model(torch.rand(3, 1, 8, 8), 2).shape == (2, 3, 10)


def test_frozen_masks_run_a_prefix_that_equals_the_soft_masks():
    torch.manual_seed(0)
    model = Spikformer(SpikformerConfig(depth=1, dim=16, heads=2, image_size=8)).eval()
    trainable = TrainableSpikformer(model, time_steps=4, masks=True)
    for i, mask in enumerate(trainable.masks.values()):
        with torch.no_grad():
            mask.raw.copy_(initial_parameters(4, [4, 3, 1, 2, 0][i % 5]))
    x = torch.rand(5, 1, 8, 8) * 4
    with torch.no_grad():
        soft = trainable(x)
    steps = freeze_masks(trainable)
    assert all(lif.mask is None for lif, _g in model.lif_layers().values())
    with torch.no_grad():
        hard = model(x, 4)
    assert torch.equal(soft, hard)
    assert sorted(set(steps.values())) == [0, 1, 2, 3, 4]


def _task(samples: int = 96):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(samples, 1, 8, 8, generator=generator)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()  # brighter top half or not
    return LabeledData(x=x, y=y, num_classes=2, description="toy halves")


def _train(mask_weight: float, masks: bool = True, tet: bool = False):
    torch.manual_seed(0)
    model = Spikformer(SpikformerConfig(depth=1, dim=16, heads=2, image_size=8, num_classes=2))
    config = DirectConfig(time_steps=4, masks=masks, mask_weight=mask_weight, groups=GROUPS, mask_lr=0.5, tet=tet,
                          train=TrainConfig(epochs=2, batch_size=32, lr=1e-2, optimizer="sgd", momentum=0.9,
                                            weight_decay=0.0))
    trainable, log = train_direct(model, _task(), config)
    return model, trainable, log


def test_direct_training_with_masks_and_the_mask_loss_lowers_time_steps():
    model, trainable, log = _train(0.0)
    free = freeze_masks(trainable)
    model_p, trainable_p, _ = _train(0.05)
    penalized = freeze_masks(trainable_p)
    assert sum(penalized.values()) < sum(free.values())
    sim = simulate_spikformer(model_p, _task(), 4)
    recorded = {layer.name: layer.active_steps for layer in sim.neuron_layers}
    assert recorded == {name: (t if t < 4 else None) for name, t in penalized.items()}
    for layer in sim.neuron_layers:  # a masked layer is silent after its T_l
        if layer.active_steps is not None:
            assert layer.spikes_per_step[layer.active_steps:].sum() == 0
    task = _task()
    with torch.no_grad():  # each sample's readout after steps 1..t, the record the equal-accuracy interval reads
        right = (model_p.eval()(task.x, 4).cumsum(0).argmax(-1) == task.y).T
    assert torch.equal(torch.from_numpy(sim.correct_by_sample), right)
    assert sim.correct_per_step.tolist() == right.sum(0).tolist()
    assert all(v == v for v in log.epoch_losses) and len(log.epoch_losses) == 2


def test_tet_loss_trains_too():
    _model, _trainable, log = _train(0.0, masks=False, tet=True)
    assert len(log.epoch_losses) == 2 and all(loss > 0 for loss in log.epoch_losses)


def test_direct_config_rejects_bad_groups_and_steps():
    with pytest.raises(ConfigError, match="pattern 'ffn' matches no LIF layer"):
        penalized_lif_layers(Spikformer(SpikformerConfig(depth=1, dim=16, heads=2, image_size=8)), ("qkv", "ffn"))
    with pytest.raises(ConfigError, match="Mask optimizer"):
        DirectConfig(mask_optimizer="rmsprop")
    with pytest.raises(ConfigError, match="--initial-steps"):
        DirectConfig(time_steps=4, initial_steps=5)
    with pytest.raises(ConfigError, match=r"--initial-steps must be within 1\.\.4, got 0"):
        DirectConfig(time_steps=4, initial_steps=0)
    with pytest.raises(ConfigError, match="^--depth must be positive, got 0.$"):
        SpikformerConfig(depth=0)
    with pytest.raises(ConfigError, match="divisible"):
        SpikformerConfig(dim=10, heads=4)


def test_mask_loss_patterns_name_groups_or_layers():
    model = Spikformer(SpikformerConfig(depth=2, dim=16, heads=2, image_size=8))
    assert penalized_lif_layers(model, ("qkv",)) == [f"blocks.{b}.attn.{x}_lif" for b in (0, 1) for x in "qkv"]
    assert penalized_lif_layers(model, ("blocks.1.mlp.*", "sps")) == [
        "sps.lif1", "sps.lif2", "sps.lif3", "sps.rpe_lif", "blocks.1.mlp.lif1", "blocks.1.mlp.lif2"]
