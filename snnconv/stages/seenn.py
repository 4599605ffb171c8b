"""SEENN: per-sample early exit over time steps (Li et al., NeurIPS 2023; ALGORITHMS.md sections 4 and 6.4).

SEENN-I exits a sample at the first decision step whose score of the accumulated output F_t exceeds a
threshold alpha: max softmax(F_t / tau) (the paper), 1 - H(softmax(F_t / tau)) / ln C (entropy), or the
top-1 minus top-2 probability (margin). alpha is the smallest one whose accuracy on a held-out
calibration split stays within a budget of the full-T network's.

SEENN-II trains a small policy network that maps the image to a distribution over exit steps
1..T, with the exact expected reward of the paper's code: 2^-(k-1) when the SNN is right at step k,
-beta when it is wrong, samples reweighted by the SNN's one-step accuracy.

With ``finetune``, SEENN-I first fine-tunes the SNN's weights on the training part of the split with a loss
on every step's running output (snnconv.stages.finetune, ``ce-every-step`` by default: the TET loss SEENN
trains its own networks with), so that more samples are right, and confident, early.

Both are :class:`ExitPolicy` objects, so the time engine drops exited samples from the batch and the
savings are real. Every rule can also be applied offline to an :class:`ExitTrace` (the running output
of every step, recorded in one pass), which is how alpha is chosen and how sweeps are drawn; the
offline answer equals the engine's for the same decision steps (tested).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import _Plain
from ..data import LabeledData
from ..engine import Engine, ExitPolicy
from ..engine.fanout import dense_macs
from ..errors import ConfigError
from ..metrics.summary import lost_points_bounds
from ..network import SpikingNetwork
from ..results import SynapticLayerStats
from .finetune import FinetuneConfig, finetune
from ..training import TrainConfig, fit

SCORES = ("confidence", "entropy", "margin")
DEFAULT_TEMPERATURE = 8.0  # the paper's conversion code: softmax(F_t / 8), F_t summed over steps
TEMPERATURE_GRID = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
MAX_CANDIDATE_ALPHAS = 1024

ProgressFn = Callable[[str], None]


# ---------------------------------------------------------------------------- scores and SEENN-I

def exit_score(accumulated: torch.Tensor, score: str, temperature: float) -> torch.Tensor:
    """Score in [0, 1] of accumulated outputs [..., classes]; a sample exits when it exceeds alpha."""
    p = torch.softmax(accumulated.double() / temperature, dim=-1)  # float64 delays saturation at 1
    if score == "confidence":
        return p.max(-1).values
    if score == "entropy":
        entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
        return 1.0 - entropy / math.log(p.shape[-1])
    if score == "margin":
        top = p.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]
    raise ConfigError(f"--score '{score}' is unknown; choose from {', '.join(SCORES)}.")


class ConfidenceExit(ExitPolicy):
    """SEENN-I: leave after step t when ``exit_score(F_t) > alpha``."""

    def __init__(self, alpha: float, score: str = "confidence", temperature: float = DEFAULT_TEMPERATURE,
                 chunk_steps: int = 1):
        if score not in SCORES:
            raise ConfigError(f"--score '{score}' is unknown; choose from {', '.join(SCORES)}.")
        if not temperature > 0:
            raise ConfigError(f"--temperature must be positive, got {temperature}.")
        if alpha < 0:
            raise ConfigError(f"--alpha must be >= 0, got {alpha}.")
        self.alpha, self.score, self.temperature, self.chunk_steps = float(alpha), score, float(temperature), chunk_steps

    def should_exit(self, accumulated_output, step, rows):
        return exit_score(accumulated_output, self.score, self.temperature) > self.alpha

    def describe(self) -> dict:
        return {"kind": "confidence", "score": self.score, "alpha": self.alpha, "temperature": self.temperature,
                "chunk_steps": self.chunk_steps}


# ---------------------------------------------------------------------------- SEENN-II

class _Pointwise(nn.Conv2d):
    """A 1x1 convolution (no padding) computed as a strided subsample and a channel product. oneDNN's AVX-512
    backward of 1x1 convolutions crashed the process (SIGSEGV in jit_avx512_common_1x1_convolution_bwd_weights)
    when a policy trained on 25 samples; the same parameters, so saved policies load unchanged."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        step = self.stride[0]
        return torch.einsum("bchw,oc->bohw", x[:, :, ::step, ::step], self.weight[:, :, 0, 0])


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(_Pointwise(cin, cout, stride), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class PolicyNet(nn.Module):
    """ResNet-8-like exit policy: a 3x3 stem and three basic blocks (width w, 2w, 4w; strides 1, 2, 2),
    global average pooling and a linear layer to one logit per exit point. Inputs larger than 32 pixels
    are average-pooled to at most 32 first, so the cost stays small whatever the image size."""

    def __init__(self, input_shape: tuple[int, int, int], choices: int, width: int = 8):
        super().__init__()
        channels, height, width_px = input_shape
        factor = max(1, math.ceil(max(height, width_px) / 32))
        self.input_shape, self.choices, self.width = tuple(input_shape), int(choices), int(width)
        self.shrink = nn.AvgPool2d(factor) if factor > 1 else nn.Identity()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(_Block(width, width, 1), _Block(width, 2 * width, 2),
                                    _Block(2 * width, 4 * width, 2))
        self.head = nn.Linear(4 * width, choices)

    def forward(self, x):
        x = self.blocks(self.stem(self.shrink(x)))
        return self.head(x.mean(dim=(2, 3)))

    def describe(self) -> dict:
        return {"input_shape": list(self.input_shape), "choices": self.choices, "width": self.width}


def layer_macs(net: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, str, int, int]]:
    """(name, conv|linear, dense MACs, input elements) per weighted layer of ``net`` for one sample."""
    found: list[tuple[str, str, int, int]] = []
    hooks = []
    for name, module in net.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def hook(mod, inputs, output, name=name):
                kind = "linear" if isinstance(mod, nn.Linear) else "conv"
                found.append((name, kind, dense_macs(mod, output.shape[1:]), int(inputs[0][0].numel())))
            hooks.append(module.register_forward_hook(hook))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros((1, *input_shape), device=next(net.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    return found


class PolicyExit(ExitPolicy):
    """SEENN-II: the policy network picks each sample's exit point before the SNN runs it.

    ``points`` are the readout steps it chooses among: the engine's decision steps for ``chunk_steps``
    followed by T (one per policy output)."""

    def __init__(self, net: PolicyNet, points: list[int], chunk_steps: int = 1):
        if len(points) != net.choices:
            raise ConfigError(f"The policy network has {net.choices} outputs but {len(points)} exit points were given.")
        self.net, self.points, self.chunk_steps = net.eval(), [int(p) for p in points], chunk_steps
        self._chosen: torch.Tensor | None = None

    def check_time_steps(self, time_steps):
        if time_steps != self.points[-1]:
            raise ConfigError(f"This SEENN-II policy chooses exit steps up to {self.points[-1]}; evaluate the "
                              f"network at T={self.points[-1]}, not T={time_steps}.")

    def start_batch(self, x):
        self._chosen = policy_exit_steps(self.net, x, self.points).to(x.device)

    def should_exit(self, accumulated_output, step, rows):
        return self._chosen.to(rows.device)[rows] <= step

    def cost_layers(self) -> list[SynapticLayerStats]:
        return [SynapticLayerStats(name=f"exit_policy.{name}", kind=kind, spiking_input=False,
                                   macs_per_sample_dense=macs, input_elements=elements, time_steps=1,
                                   ops_per_step=np.zeros(1, dtype=np.int64), part="exit_policy")
                for name, kind, macs, elements in layer_macs(self.net, self.net.input_shape)]

    def describe(self) -> dict:
        return {"kind": "policy", "network": self.net.describe(), "points": self.points,
                "chunk_steps": self.chunk_steps}

    def state_dict(self):
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}


def exit_policy_from(description: dict, state: dict[str, torch.Tensor]) -> ExitPolicy:
    """Rebuild a policy saved as ``describe()`` and ``state_dict()`` (the artifact's exit_policy entry)."""
    kind = description.get("kind")
    chunk = int(description.get("chunk_steps", 1))
    if kind == "confidence":
        return ConfidenceExit(float(description["alpha"]), description["score"], float(description["temperature"]),
                              chunk)
    if kind == "policy":
        spec = description["network"]
        net = PolicyNet(tuple(spec["input_shape"]), int(spec["choices"]), int(spec["width"]))
        net.load_state_dict(state)
        return PolicyExit(net, description["points"], chunk)
    raise ConfigError(f"Exit policy kind '{kind}' is unknown to this snnconv.")


def policy_loss(logits: torch.Tensor, correct: torch.Tensor, weights: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative expected reward: mean_x w(x) sum_k v_k(x) (beta (1 - c_k) - 2^-(k-1) c_k), v = softmax(logits),
    k = 1.. the exit points (with one decision per step, the steps: the paper's case)."""
    point = torch.arange(correct.shape[1], device=logits.device, dtype=logits.dtype)  # k - 1
    reward = torch.where(correct, torch.pow(0.5, point), torch.full_like(point, -beta))
    return -(weights * (torch.softmax(logits, -1) * reward).sum(-1)).mean()


def sample_weights(correct: torch.Tensor) -> torch.Tensor:
    """The paper's class reweighting: 1 for samples right at the first exit point, rate / (1 - rate) for the
    others, rate being the accuracy there (all ones when every sample, or none, is right there)."""
    rate = float(correct[:, 0].float().mean())
    if rate in (0.0, 1.0):
        return torch.ones(correct.shape[0])
    return torch.where(correct[:, 0], torch.tensor(1.0), torch.tensor(rate / (1 - rate)))


# ---------------------------------------------------------------------------- offline evaluation

@dataclass
class ExitTrace:
    """The network's output summed over steps 1..t for every t, with the labels: what any exit rule needs."""

    outputs: torch.Tensor  # [T, N, classes], float32, CPU
    labels: torch.Tensor  # [N]
    # chunk steps -> the readout steps after which the engine asks the policy (see decision_grid)
    decisions_for: Callable[[int], torch.Tensor] | None = None

    @property
    def time_steps(self) -> int:
        return self.outputs.shape[0]

    def correct(self) -> torch.Tensor:
        """[N, T] bool: is the prediction from steps 1..t right."""
        return (self.outputs.argmax(-1) == self.labels.unsqueeze(0)).T

    def full_accuracy_pct(self) -> float:
        """Accuracy (%) of the network run for all T steps."""
        return 100.0 * float(self.correct()[:, -1].double().mean())

    def rows(self, start: int, stop: int) -> "ExitTrace":
        """The trace of samples start..stop-1."""
        return ExitTrace(self.outputs[:, start:stop], self.labels[start:stop], self.decisions_for)

    def right_at(self, exit_steps: torch.Tensor) -> torch.Tensor:
        """[N] bool: is sample i right when it answers from its running output at ``exit_steps[i]``."""
        return self.correct().gather(1, (exit_steps.long() - 1).unsqueeze(1)).squeeze(1)

    def outcome(self, exit_steps: torch.Tensor) -> tuple[float, float]:
        """(accuracy %, mean exit step) when sample i answers from its running output at ``exit_steps[i]``."""
        return 100.0 * float(self.right_at(exit_steps).double().mean()), float(exit_steps.double().mean())

    def lost_points_interval(self, exit_steps: torch.Tensor) -> tuple[float, float]:
        """90 % interval of the points lost against the full-T network when sample i exits at ``exit_steps[i]``
        (:func:`snnconv.metrics.summary.lost_points_bounds` at confidence 0.95 on each side)."""
        lower, upper = lost_points_bounds(self.correct()[:, -1], self.right_at(exit_steps), 0.95)
        return float(lower), float(upper)

    def decision_steps(self, chunk_steps: int) -> torch.Tensor:
        """Steps after which the engine asks the policy: chunk boundaries before T for a uniform network;
        with per-layer windows, the steps at which the readout's output becomes available."""
        if self.decisions_for is not None:
            return self.decisions_for(chunk_steps)
        return torch.arange(chunk_steps, self.time_steps, chunk_steps)


def decision_grid(network: SpikingNetwork, device: str | torch.device = "cpu") -> Callable[[int], torch.Tensor]:
    """chunk steps -> the engine's decision steps for ``network`` (its T and per-layer windows)."""
    engine = Engine(network.graph, device)

    def steps(chunk_steps: int) -> torch.Tensor:
        plan = network.time_plan(chunk_steps)
        return torch.tensor(engine.decision_steps(plan), dtype=torch.long)

    return steps


def record_trace(network: SpikingNetwork, data: LabeledData, *, batch_size: int = 256, chunk_steps: int = 8,
                 device: str | torch.device = "cpu", progress=None) -> ExitTrace:
    """Simulate ``data`` without exits for the network's T (and its per-layer windows) and keep every step's output."""
    engine = Engine(network.graph, device)
    plan = network.time_plan(chunk_steps)
    advance = progress(f"Simulating T={network.time_steps} without exits", len(data)) if progress else None
    outputs = []
    with torch.no_grad():
        for x, y in data.batches(batch_size):
            outputs.append(engine.run_batch(x.to(engine.device), y.to(engine.device), plan,
                                            trace_output=True)["output_trace"].cpu())
            if advance is not None:
                advance(len(x))
    return ExitTrace(outputs=torch.cat(outputs, dim=1), labels=data.y.clone(), decisions_for=decision_grid(network, device))


def threshold_exit_steps(scores: torch.Tensor, decisions: torch.Tensor, alphas: torch.Tensor,
                         time_steps: int) -> torch.Tensor:
    """[N, A] exit step of every sample under every alpha: the first decision step whose score exceeds alpha."""
    if len(decisions) == 0:
        return torch.full((scores.shape[1], len(alphas)), time_steps, dtype=torch.long)
    running = torch.cummax(scores[decisions - 1], dim=0).values.T.contiguous()  # [N, K], non-decreasing
    index = torch.searchsorted(running, alphas.expand(running.shape[0], -1).contiguous(), right=True)
    steps = torch.cat([decisions, torch.tensor([time_steps])])
    return steps[index]


@dataclass(frozen=True)
class SweepPoint:
    alpha: float
    accuracy_pct: float
    avg_exit_time_steps: float
    # with a budget confidence c: the upper bound at confidence c on the points lost vs the full-T network
    # (metrics.summary.lost_points_bounds), what the budget is checked against instead of the measured loss
    lost_points_bound: float | None = None


def candidate_alphas(trace: ExitTrace, score: str, temperature: float, chunk_steps: int) -> list[float]:
    """0, 1 and the midpoints between consecutive distinct scores seen at decision steps: every distinct
    behaviour, with a margin on both sides so float rounding in a rerun cannot flip a decision; thinned to
    MAX_CANDIDATE_ALPHAS by quantiles."""
    decisions = trace.decision_steps(chunk_steps)
    return _candidates(exit_score(trace.outputs[decisions - 1], score, temperature), decisions)


def _candidates(decision_scores: torch.Tensor, decisions: torch.Tensor) -> list[float]:
    if len(decisions) == 0:
        return [0.0, 1.0]
    values = torch.unique(decision_scores.flatten())
    values = (values[1:] + values[:-1]) / 2
    if len(values) > MAX_CANDIDATE_ALPHAS:
        values = torch.quantile(values, torch.linspace(0, 1, MAX_CANDIDATE_ALPHAS, dtype=torch.float64))
    return sorted({0.0, 1.0, *values.tolist()})


def alpha_sweep(trace: ExitTrace, score: str, temperature: float, chunk_steps: int,
                alphas: list[float] | None = None, confidence: float | None = None) -> list[SweepPoint]:
    """Accuracy and mean exit step for each alpha (default: :func:`candidate_alphas`)."""
    return score_sweep(trace, exit_score(trace.outputs, score, temperature), chunk_steps, alphas, confidence)


def score_sweep(trace: ExitTrace, scores: torch.Tensor, chunk_steps: int, alphas: list[float] | None = None,
                confidence: float | None = None) -> list[SweepPoint]:
    """The threshold rule on any per-step score ([T, N], computed from ``trace``): accuracy and mean exit step
    for each alpha (default: the midpoints between the scores seen at decision steps, as for SEENN-I), and with
    ``confidence``, the bound on the points lost that the budget is then checked against."""
    decisions = trace.decision_steps(chunk_steps)
    if alphas is None:
        alphas = _candidates(scores[decisions - 1], decisions)
    alphas = torch.as_tensor(alphas, dtype=torch.float64)
    steps = threshold_exit_steps(scores, decisions, alphas, trace.time_steps)  # [N, A]
    correct = trace.correct()  # [N, T]
    right = correct.gather(1, steps - 1)  # [N, A]
    accuracy = 100.0 * right.double().mean(0)
    mean_steps = steps.double().mean(0)
    bounds = [None] * len(alphas)
    if confidence is not None:
        upper = lost_points_bounds(correct[:, -1], right, confidence)[1]
        # a rule under which no sample exits early is the full-T network itself: it loses nothing on any data
        bounds = torch.where((steps == trace.time_steps).all(0), 0.0, upper).tolist()
    return [SweepPoint(float(a), float(acc), float(m), bound)
            for a, acc, m, bound in zip(alphas, accuracy, mean_steps, bounds)]


def choose_alpha(points: list[SweepPoint], full_accuracy_pct: float, budget: float) -> SweepPoint:
    """The smallest alpha whose accuracy is within ``budget`` points of the full-T accuracy (ALGORITHMS 6.4), or
    whose bound on the points lost is, for points swept with a budget confidence."""
    def lost(point: SweepPoint) -> float:
        return full_accuracy_pct - point.accuracy_pct if point.lost_points_bound is None else point.lost_points_bound

    passing = [p for p in points if lost(p) <= budget + 1e-9]
    return min(passing, key=lambda p: p.alpha)


def oracle_aet(correct_per_step: np.ndarray, samples: int) -> float:
    """SEENN Eq. 4: (|C_1| + T |W| + sum_{t>=2} t (|C_t| - |C_{t-1}|)) / N, from the count right at each t."""
    counts = np.asarray(correct_per_step, dtype=np.float64)
    steps = len(counts)
    wrong = samples - counts[-1]
    return float((counts[0] + steps * wrong + sum(t * (counts[t - 1] - counts[t - 2]) for t in range(2, steps + 1)))
                 / samples)


# ---------------------------------------------------------------------------- the stage

@dataclass(frozen=True)
class SeennConfig(_Plain):
    policy: bool = False  # False: SEENN-I (score threshold); True: SEENN-II (policy network)
    score: str = "confidence"
    temperature: float | None = DEFAULT_TEMPERATURE  # None: calibrated on the held-out split
    alpha: float | None = None  # None: chosen on the held-out split within accuracy_budget
    accuracy_budget: float = 0.5  # points the exit may lose vs the full-T network on the held-out split
    # None: the loss measured on the held-out split is checked against the budget; c in (0, 1): its upper bound at
    # confidence c, so the budget holds with that confidence on data drawn like the split
    budget_confidence: float | None = None
    chunk_steps: int = 1  # steps between exit decisions (1 = exact SEENN)
    holdout_fraction: float = 0.5  # of the calibration data; SEENN-II trains its policy on the rest
    beta: float = 0.01  # SEENN-II penalty for exiting at a wrong step
    policy_width: int = 8
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    finetune: bool = False  # SEENN-I: fine-tune the SNN (tuning) on the training split before choosing alpha
    tuning: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(loss="ce-every-step"))

    def __post_init__(self):
        if self.score not in SCORES:
            raise ConfigError(f"--score '{self.score}' is unknown; choose from {', '.join(SCORES)}.")
        if self.temperature is not None and not self.temperature > 0:
            raise ConfigError(f"--temperature must be positive or 'auto', got {self.temperature}.")
        if self.alpha is not None and self.alpha < 0:
            raise ConfigError(f"--alpha must be >= 0, got {self.alpha}.")
        if self.accuracy_budget < 0:
            raise ConfigError(f"--accuracy-budget must be >= 0 points, got {self.accuracy_budget}.")
        if self.budget_confidence is not None:
            if not 0 < self.budget_confidence < 1:
                raise ConfigError(f"--budget-confidence must be between 0 and 1, got {self.budget_confidence}.")
            if self.alpha is not None or self.policy:
                raise ConfigError("--budget-confidence applies to the alpha SEENN-I chooses within --accuracy-budget, "
                                  f"which {'--alpha' if self.alpha is not None else '--policy'} does not use; drop "
                                  "one of the two.")
        if self.chunk_steps <= 0:
            raise ConfigError(f"--exit-chunk must be a positive number of steps, got {self.chunk_steps}.")
        if not 0 < self.holdout_fraction < 1:
            raise ConfigError(f"--holdout-fraction must be between 0 and 1, got {self.holdout_fraction}.")
        if self.beta < 0:
            raise ConfigError(f"--beta must be >= 0, got {self.beta}.")
        if self.policy_width <= 0:
            raise ConfigError(f"--policy-width must be positive, got {self.policy_width}.")
        if self.finetune and self.policy:
            raise ConfigError("--finetune applies to SEENN-I; SEENN-II (--policy) trains its policy on the frozen "
                              "network, so drop one of the two.")

    def check_time_steps(self, steps: int) -> None:
        """Refuse what cannot apply to a network of T = ``steps``."""
        if self.chunk_steps >= steps:
            raise ConfigError(f"--exit-chunk {self.chunk_steps} leaves no exit decision before the network's T = "
                              f"{steps}; choose fewer steps (1 = exact SEENN).")



@dataclass
class SeennResult:
    policy: ExitPolicy
    time_steps: int
    holdout_samples: int
    holdout_accuracy_full_pct: float  # the network without exits, at T, on the held-out split
    holdout_accuracy_exit_pct: float
    holdout_avg_exit_time_steps: float
    holdout_sweep: list[SweepPoint] = field(default_factory=list)  # SEENN-I: accuracy vs alpha on the split
    training_samples: int = 0
    training_losses: list[float] = field(default_factory=list)
    beta: float | None = None  # SEENN-II reward penalty
    accuracy_budget: float | None = None  # SEENN-I: the points alpha was chosen to lose at most (None: --alpha given)
    budget_confidence: float | None = None  # SEENN-I: the confidence the budget was met with (SeennConfig)
    finetune: FinetuneConfig | None = None  # how the SNN was fine-tuned before alpha was chosen, if it was
    finetune_samples: int = 0  # the training split it was fine-tuned on
    finetune_losses: list[float] = field(default_factory=list)
    holdout_data: str = ""  # where the held-out split came from (LabeledData.description)
    # 90 % interval of the points the exits lost on the held-out split (ExitTrace.lost_points_interval)
    holdout_lost_points_interval: tuple[float, float] = (math.nan, math.nan)


def _check_classes(trace: ExitTrace) -> None:
    if trace.outputs.shape[-1] < 2:
        raise ConfigError("SEENN needs a network with at least two outputs to score its confidence.")


def seenn(network: SpikingNetwork, calibration: LabeledData, config: SeennConfig = SeennConfig(), *,
          holdout: LabeledData | None = None, batch_size: int = 256, device: str | torch.device = "cpu",
          checkpoint: Path | None = None, resume: bool = False, progress=None,
          note: ProgressFn | None = None) -> SeennResult:
    """Build the exit policy of ``config`` for ``network`` from its calibration data. alpha is chosen (or the
    policy validated) on ``holdout`` when given, and everything of ``calibration`` is trained on; else on the
    ``config.holdout_fraction`` share of ``calibration``, and the rest is trained on."""
    note = note or (lambda _message: None)
    config.check_time_steps(network.time_steps)
    if holdout is None:
        holdout, training = calibration.split(config.holdout_fraction, config.seed)
    else:
        training = calibration
    tuned = None
    if config.finetune:
        note(f"fine-tuning the SNN on the training split ({len(training)} samples, {config.tuning.loss} loss)")
        tuned = finetune(network, training, config.tuning, checkpoint=checkpoint, resume=resume, progress=progress)
    note(f"simulating the held-out split ({len(holdout)} samples, T={network.time_steps}) without exits")
    held = record_trace(network, holdout, batch_size=batch_size, device=device, progress=progress)
    _check_classes(held)
    full = held.full_accuracy_pct()
    if not config.policy:
        result = _seenn_confidence(held, full, config, note)
        if tuned is not None:
            result.finetune, result.finetune_samples = config.tuning, len(training)
            result.finetune_losses = tuned.epoch_losses
    else:
        result = _seenn_policy(network, training, holdout, held, full, config, batch_size, device, checkpoint, resume,
                               progress, note)
    result.holdout_data = holdout.description
    return result


def choose_rule(trace: ExitTrace, full_accuracy_pct: float, budget: float, *, score: str = "confidence",
                temperatures=(DEFAULT_TEMPERATURE,), chunk_steps: int = 1, alpha: float | None = None,
                confidence: float | None = None) -> tuple[float, SweepPoint, list[SweepPoint]]:
    """SEENN-I's choice on a held-out trace: per temperature the smallest alpha within ``budget`` (with
    ``confidence``: whose loss is within it with that confidence; or the given ``alpha``), then the temperature
    whose choice exits earliest. Returns (temperature, chosen point, the sweep at that temperature)."""
    best = None
    for tau in temperatures:
        points = alpha_sweep(trace, score, tau, chunk_steps, confidence=confidence)
        if alpha is not None:
            chosen = alpha_sweep(trace, score, tau, chunk_steps, [alpha])[0]
        else:
            chosen = choose_alpha(points, full_accuracy_pct, budget)
        if best is None or chosen.avg_exit_time_steps < best[1].avg_exit_time_steps - 1e-12:
            best = (tau, chosen, points)
    return best


def _seenn_confidence(held: ExitTrace, full: float, config: SeennConfig, note: ProgressFn) -> SeennResult:
    temperatures = (config.temperature,) if config.temperature is not None else TEMPERATURE_GRID
    tau, chosen, points = choose_rule(held, full, config.accuracy_budget, score=config.score,
                                      temperatures=temperatures, chunk_steps=config.chunk_steps, alpha=config.alpha,
                                      confidence=config.budget_confidence)
    note(f"alpha = {chosen.alpha:.6g} (temperature {tau:g}): held-out accuracy {chosen.accuracy_pct:.2f} % "
         f"(full T: {full:.2f} %), mean exit step {chosen.avg_exit_time_steps:.2f}")
    steps = threshold_exit_steps(exit_score(held.outputs, config.score, tau), held.decision_steps(config.chunk_steps),
                                 torch.tensor([chosen.alpha], dtype=torch.float64), held.time_steps)[:, 0]
    return SeennResult(policy=ConfidenceExit(chosen.alpha, config.score, tau, config.chunk_steps),
                       time_steps=held.time_steps, holdout_samples=held.outputs.shape[1], holdout_accuracy_full_pct=full,
                       holdout_accuracy_exit_pct=chosen.accuracy_pct,
                       holdout_avg_exit_time_steps=chosen.avg_exit_time_steps, holdout_sweep=points,
                       accuracy_budget=config.accuracy_budget if config.alpha is None else None,
                       budget_confidence=config.budget_confidence,
                       holdout_lost_points_interval=held.lost_points_interval(steps))


def exit_points(trace: ExitTrace, chunk_steps: int) -> list[int]:
    """The readout steps a SEENN-II policy chooses among: the engine's decision steps, then T."""
    return trace.decision_steps(chunk_steps).tolist() + [trace.time_steps]


def policy_exit_steps(net: PolicyNet, x: torch.Tensor, points: list[int], batch_size: int = 256) -> torch.Tensor:
    """Exit step of each sample: the exit point of the policy's largest output."""
    device = next(net.parameters()).device
    net.eval()
    with torch.no_grad():
        chosen = torch.cat([net(x[i:i + batch_size].to(device)).argmax(-1).cpu() for i in range(0, len(x), batch_size)])
    return torch.tensor(points, dtype=torch.long)[chosen]


def _seenn_policy(network, training, holdout, held, full, config, batch_size, device, checkpoint, resume, progress,
                  note) -> SeennResult:
    note(f"simulating the training split ({len(training)} samples) without exits")
    trace = record_trace(network, training, batch_size=batch_size, device=device, progress=progress)
    points = exit_points(trace, config.chunk_steps)
    correct = trace.correct()[:, torch.tensor(points) - 1]  # right at each exit point
    weights = sample_weights(correct)
    torch.manual_seed(config.seed)
    net = PolicyNet(tuple(training.sample_shape), len(points), config.policy_width).to(device)

    def loss(model, batch):
        x, right, w = batch
        return policy_loss(model(x), right, w, config.beta)

    note(f"training the exit policy ({sum(p.numel() for p in net.parameters()):,} parameters, beta={config.beta:g})")
    log = fit(net, [training.x, correct, weights], loss, config.train, checkpoint=checkpoint, resume=resume,
              progress=progress, description="Training the SEENN-II policy")
    net.eval()
    steps = policy_exit_steps(net, holdout.x, points, batch_size)
    accuracy, mean_steps = held.outcome(steps)
    note(f"held-out accuracy {accuracy:.2f} % (full T: {full:.2f} %), mean exit step {mean_steps:.2f}")
    return SeennResult(policy=PolicyExit(net, points, config.chunk_steps), time_steps=held.time_steps,
                       holdout_samples=held.outputs.shape[1], holdout_accuracy_full_pct=full,
                       holdout_accuracy_exit_pct=accuracy, holdout_avg_exit_time_steps=mean_steps,
                       training_samples=len(training), training_losses=log.epoch_losses, beta=config.beta,
                       holdout_lost_points_interval=held.lost_points_interval(steps))
