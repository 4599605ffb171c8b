"""A Spikformer-style spiking vision transformer, trained directly with surrogate gradients (issue #7 part 4).

Architecture after Spikformer (Zhou et al. 2022, arXiv 2209.15425) as modified by the dynamic-time-step paper
(Datta et al., arXiv 2311.16456, Section II-B): no dropout, BatchNorm after every linear or convolution layer
instead of LayerNorm, no softmax in attention, LIF neurons (tau = 2, hard reset) before every product, so every
weighted layer except the first convolution reads spikes. Attention does not convert from ReLU to IF, which is
why this family is trained directly rather than converted.

- SPS (spiking patch splitting) stem: three conv-BN-LIF stages (the last two followed by 2x2 max pooling), so a
  28x28 image becomes 7x7 = 49 tokens of ``dim`` channels, plus a conv-BN-LIF relative position embedding
  added to the tokens.
- Blocks: ``x = x + SSA(x)``, ``x = x + MLP(x)``. SSA: q, k, v = LIF(BN(Linear(x))), per head
  ``A = q k^T * scale`` and ``y = A v`` (no softmax: spike products are non-negative), then LIF (threshold 0.5),
  Linear-BN-LIF. MLP: Linear-BN-LIF, Linear-BN-LIF (hidden = ``mlp_ratio * dim``).
- Head: tokens averaged, one linear layer, per time step. The prediction averages the steps.

Input is direct (analog) encoding: the same image at every step. Tensors are [T, B, ...]; stateless layers run
on T and B folded together, LIF layers loop over T. Every LIF layer belongs to one of the paper's groups:
``sps``, ``qkv``, ``attn`` (the attention LIF and the projection after it) and ``mlp``. DTS time masks attach
per LIF layer (:meth:`Spikformer.attach_masks`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import _Plain
from .errors import ConfigError
from .neurons.lif import MultiStepLIF

GROUPS = ("sps", "qkv", "attn", "mlp")


@dataclass(frozen=True)
class SpikformerConfig(_Plain):
    depth: int = 2  # transformer blocks
    dim: int = 64  # embedding dimension
    heads: int = 4
    mlp_ratio: int = 4
    in_channels: int = 1
    image_size: int = 28  # square images; the stem downsamples by 4
    num_classes: int = 10
    tau: float = 2.0
    attention_scale: float = 0.125  # Spikformer's fixed scale of q k^T
    attention_threshold: float = 0.5  # Spikformer's threshold of the LIF after q k^T v

    def __post_init__(self):
        for flag, value in (("--depth", self.depth), ("--dim", self.dim), ("--heads", self.heads),
                            ("--mlp-ratio", self.mlp_ratio)):
            if value <= 0:
                raise ConfigError(f"{flag} must be positive, got {value}.")
        if self.dim % self.heads or self.dim % 4:
            raise ConfigError(f"Spikformer dim {self.dim} must be divisible by 4 and by heads ({self.heads}).")
        if self.image_size % 4:
            raise ConfigError(f"Spikformer image_size {self.image_size} must be divisible by 4 (two 2x2 poolings).")


def _fold(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(0, 1)


def _unfold(x: torch.Tensor, steps: int) -> torch.Tensor:
    return x.view(steps, -1, *x.shape[1:])


class _LinearBN(nn.Module):
    """Linear (no bias, the paper's choice) then BatchNorm over channels, on [T, B, N, C] tokens."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out, bias=False)
        self.bn = nn.BatchNorm1d(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return self.bn(y.flatten(0, 2)).view_as(y)


class _ConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, C, H, W]
        return _unfold(self.bn(self.conv(_fold(x))), x.shape[0])


class SpikingPatchSplitting(nn.Module):
    def __init__(self, config: SpikformerConfig):
        super().__init__()
        d = config.dim
        self.conv1, self.lif1 = _ConvBN(config.in_channels, d // 4), MultiStepLIF(config.tau)
        self.conv2, self.lif2 = _ConvBN(d // 4, d // 2), MultiStepLIF(config.tau)
        self.conv3, self.lif3 = _ConvBN(d // 2, d), MultiStepLIF(config.tau)
        self.rpe, self.rpe_lif = _ConvBN(d, d), MultiStepLIF(config.tau)
        self.pool = nn.MaxPool2d(2)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return _unfold(self.pool(_fold(x)), x.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, C, H, W] -> [T, B, N, D]
        x = self.lif1(self.conv1(x))
        x = self._pool(self.lif2(self.conv2(x)))
        x = self._pool(self.lif3(self.conv3(x)))
        x = x + self.rpe_lif(self.rpe(x))
        return x.flatten(3).transpose(2, 3)


class SpikeAttentionProduct(nn.Module):
    """``(q k^T) v * scale`` per head on spikes [T, B, heads, N, D / heads]: the attention map is not normalized
    (no softmax), so a spike product is a count of coincidences and needs no multiplier (docs/spikformer.md)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (q @ k.transpose(-2, -1)) @ v * self.scale


class SpikingSelfAttention(nn.Module):
    """SSA without softmax: per head ``LIF(q k^T v * scale)``, then Linear-BN-LIF."""

    def __init__(self, config: SpikformerConfig):
        super().__init__()
        d = config.dim
        self.heads = config.heads
        self.q, self.q_lif = _LinearBN(d, d), MultiStepLIF(config.tau)
        self.k, self.k_lif = _LinearBN(d, d), MultiStepLIF(config.tau)
        self.v, self.v_lif = _LinearBN(d, d), MultiStepLIF(config.tau)
        self.product = SpikeAttentionProduct(config.attention_scale)
        self.attn_lif = MultiStepLIF(config.tau, config.attention_threshold)
        self.proj, self.proj_lif = _LinearBN(d, d), MultiStepLIF(config.tau)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, N, D] -> [T, B, heads, N, D / heads]
        t, b, n, d = x.shape
        return x.view(t, b, n, self.heads, d // self.heads).transpose(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._split(self.q_lif(self.q(x)))
        k = self._split(self.k_lif(self.k(x)))
        v = self._split(self.v_lif(self.v(x)))
        y = self.product(q, k, v).transpose(2, 3).flatten(3)
        return self.proj_lif(self.proj(self.attn_lif(y)))


class SpikingMLP(nn.Module):
    def __init__(self, config: SpikformerConfig):
        super().__init__()
        hidden = config.dim * config.mlp_ratio
        self.fc1, self.lif1 = _LinearBN(config.dim, hidden), MultiStepLIF(config.tau)
        self.fc2, self.lif2 = _LinearBN(hidden, config.dim), MultiStepLIF(config.tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif2(self.fc2(self.lif1(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, config: SpikformerConfig):
        super().__init__()
        self.attn, self.mlp = SpikingSelfAttention(config), SpikingMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Spikformer(nn.Module):
    """x [B, C, H, W] -> per-step logits [T, B, classes] for ``time_steps`` steps (direct encoding)."""

    def __init__(self, config: SpikformerConfig = SpikformerConfig()):
        super().__init__()
        self.config = config
        self.sps = SpikingPatchSplitting(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.head = nn.Linear(config.dim, config.num_classes)

    def forward(self, x: torch.Tensor, time_steps: int) -> torch.Tensor:
        if time_steps <= 0:
            raise ConfigError(f"Time steps T must be positive, got {time_steps}.")
        tokens = self.sps(x.unsqueeze(0).expand(time_steps, *x.shape))
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(tokens.mean(2))

    def spike_sources(self) -> dict[str, tuple[str, ...]]:
        """For every layer that reads spikes straight from LIF layers, those LIF layers (by qualified name).

        A layer named here receives nothing once all of them have stopped (DTS); the others read sums of spike
        trains (the residual stream, the token mean), which stay live for the whole window."""
        sources = {"sps.conv2.conv": ("sps.lif1",), "sps.conv3.conv": ("sps.lif2",), "sps.rpe.conv": ("sps.lif3",)}
        for i in range(len(self.blocks)):
            a, m = f"blocks.{i}.attn", f"blocks.{i}.mlp"
            sources[f"{a}.product"] = (f"{a}.q_lif", f"{a}.k_lif", f"{a}.v_lif")
            sources[f"{a}.proj.linear"] = (f"{a}.attn_lif",)
            sources[f"{m}.fc2.linear"] = (f"{m}.lif1",)
        return sources

    def lif_layers(self) -> dict[str, tuple[MultiStepLIF, str]]:
        """Every LIF layer by qualified name, with its group (``sps``, ``qkv``, ``attn`` or ``mlp``)."""
        layers = {}
        for name, module in self.named_modules():
            if isinstance(module, MultiStepLIF):
                layers[name] = (module, lif_group(name))
        return layers


def lif_group(name: str) -> str:
    """The paper's group of a LIF layer, from its qualified name in :class:`Spikformer`."""
    leaf = name.rsplit(".", 1)[-1]
    if name.startswith("sps."):
        return "sps"
    if leaf in ("q_lif", "k_lif", "v_lif"):
        return "qkv"
    if leaf in ("attn_lif", "proj_lif"):
        return "attn"
    return "mlp"
