"""How early could SEENN-I exit, and how close do rules that read the running output come?

The SEENN benchmark (seenn_bench.py) measures the product's exit rule, max-softmax confidence of the
running output at temperature 8. On the CIFAR-10 ResNet-20 it misses the 2x bar. This probe asks whether
the rule or the information it reads is short, offline on traces of the default conversion for T = 32
(every step's running output, no exits; the offline answer equals the engine's, tests/test_seenn.py):

- ``settled`` (oracle): each sample exits at the first step from which its prediction never changes again,
  so the accuracy is the full-T network's. It needs the future and bounds every rule that keeps that accuracy.
- ``confidence, tau``: the product's rule at temperatures 4, 8 (default) and 16.
- ``mean confidence``: the confidence of the mean output F_t / t (tau 1), which does not grow with t by itself.
- ``confidence, stable k``: the default confidence, counted only once the prediction has not changed for k steps.
- ``learned``: a 2-layer MLP (32 hidden) per step and sample, on 13 features of the running output (top-4 softmax
  of F_t / t, top-3 softmax of F_t / 8, top-3 of F_t / t, steps since the prediction last changed, t / T),
  trained to predict that the current prediction is the final one (Adam 1e-2, 600 full-batch iterations).

Thresholds are chosen as the product chooses alpha (smallest within the budget of the full-T accuracy) on
``--selection`` unseen test images (from 5000 on in the seeded permutation); the learned rule trains on the
first half of them and takes its threshold on the second half. Every rule is then evaluated on the ``--limit``
evaluation images (the first of the permutation, as in seenn_bench.py). ``equal T`` = smallest fixed t within
0.1 points on the evaluation images' fixed-T curve; ``step ratio`` = equal T / mean exit step.

    /work/venv/bin/python benchmarks/seenn_exit_probe.py --models resnet20,vgg
    /work/venv/bin/python benchmarks/seenn_exit_probe.py --models resnet20 --limit 5000 --selection 5000 \
        --signed-spikes --tag signed-5000
"""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import _common as C  # noqa: E402

import snnconv  # noqa: E402
from snnconv.api import load_model  # noqa: E402
from snnconv.config import ConvertConfig  # noqa: E402
from snnconv.metrics.summary import equal_accuracy_interval, first_step_within  # noqa: E402
from snnconv.stages.seenn import (ExitTrace, choose_alpha, exit_score, record_trace, score_sweep,  # noqa: E402
                                  threshold_exit_steps)

COMMAND = "/work/venv/bin/python benchmarks/seenn_exit_probe.py"
BASE_T = 32
BUDGETS = (0.1, 0.25, 0.5, 1.0)
RESAMPLES = 1000  # bootstrap resamples of the evaluation images for the step ratio's interval


def steps_unchanged(trace: ExitTrace) -> torch.Tensor:
    """[T, N]: for how many steps, up to and including t, the prediction has been the one at t."""
    predictions = trace.outputs.argmax(-1)
    run = torch.ones(predictions.shape[1], dtype=torch.float64)
    runs = [run]
    for t in range(1, len(predictions)):
        run = torch.where(predictions[t] == predictions[t - 1], run + 1, torch.ones_like(run))
        runs.append(run)
    return torch.stack(runs)


def settled_steps(trace: ExitTrace) -> torch.Tensor:
    """[N]: the first step from which the prediction stays the final one."""
    final = trace.outputs[-1].argmax(-1)
    same = (trace.outputs.argmax(-1) == final).flip(0)
    return trace.time_steps - same.int().cumprod(0).sum(0) + 1


def mean_output(trace: ExitTrace) -> torch.Tensor:
    steps = torch.arange(1, trace.time_steps + 1, dtype=torch.float64).view(-1, 1, 1)
    return trace.outputs.double() / steps


def features(trace: ExitTrace) -> torch.Tensor:
    """[T, N, 13] what the learned rule reads at step t: only the running output up to t."""
    mean = mean_output(trace)
    by_mean = torch.softmax(mean, -1).sort(-1, descending=True).values[..., :4]
    by_sum = torch.softmax(trace.outputs.double() / 8, -1).sort(-1, descending=True).values[..., :3]
    top = mean.sort(-1, descending=True).values[..., :3]
    unchanged = steps_unchanged(trace).unsqueeze(-1)
    t = (torch.arange(1, trace.time_steps + 1, dtype=torch.float64) / trace.time_steps).view(-1, 1, 1)
    return torch.cat([by_mean, by_sum, top, unchanged.log1p(), unchanged.clamp(max=8) / 8,
                      t.expand_as(unchanged)], -1).float()


def learned_scores(train: ExitTrace, traces: list[ExitTrace]) -> list[torch.Tensor]:
    """Train on ``train`` to predict "the prediction at t is the final one"; sigmoid scores for ``traces``."""
    x = features(train).flatten(0, 1)
    target = (train.outputs.argmax(-1) == train.outputs[-1].argmax(-1)).float().flatten()
    mean, std = x.mean(0), x.std(0) + 1e-6
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(600):
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(net((x - mean) / std).squeeze(-1), target)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return [torch.sigmoid(net((features(t) - mean) / std).squeeze(-1)).double() for t in traces]


def step_ratio_interval(evaluation: ExitTrace, exit_steps: torch.Tensor) -> tuple[float, float]:
    """snnconv's paired bootstrap interval of the step ratio (equal_accuracy_interval), from the trace; the
    threshold stays as chosen on the selection images."""
    return equal_accuracy_interval(evaluation.correct(), evaluation.right_at(exit_steps), exit_steps,
                                   resamples=RESAMPLES)


def rule_rows(name: str, select: ExitTrace, select_scores: torch.Tensor, evaluation: ExitTrace,
              eval_scores: torch.Tensor, curve: list[float]) -> list[dict]:
    sweep = score_sweep(select, select_scores, 1)
    decisions = evaluation.decision_steps(1)
    rows = []
    for budget in BUDGETS:
        chosen = choose_alpha(sweep, select.full_accuracy_pct(), budget)
        exit_steps = threshold_exit_steps(eval_scores, decisions, torch.tensor([chosen.alpha], dtype=torch.float64),
                                          evaluation.time_steps)[:, 0]
        accuracy, mean_step = evaluation.outcome(exit_steps)
        t = first_step_within(curve, accuracy)
        rows.append({"rule": name, "budget_points": budget, "alpha": chosen.alpha,
                     "selection_accuracy_pct": chosen.accuracy_pct, "accuracy_pct": accuracy,
                     "mean_exit_step": mean_step, "equal_accuracy_t": t, "step_ratio": t / mean_step if t else None,
                     "step_ratio_interval_90": step_ratio_interval(evaluation, exit_steps)})
    return rows


def run(model: str, limit: int, selection: int, log, signed: bool = False) -> dict:
    cal = C.training_data(model)
    imported = load_model(C.source_model(model), example=cal.x)
    network = snnconv.convert(imported, cal, ConvertConfig(time_steps=BASE_T, balance=C.balance(BASE_T, True),
                                                           signed_spikes=signed))
    evaluation = record_trace(network, C.test_data(model, limit), chunk_steps=1)
    log(f"[{model}] traced {limit} evaluation images")
    select = record_trace(network, C.test_data(model, C.UNSEEN_TEST_START + selection, start=C.UNSEEN_TEST_START),
                          chunk_steps=1)
    log(f"[{model}] traced {selection} selection images")
    curve = [100.0 * float(c) for c in evaluation.correct().double().mean(0)]
    settled = float(settled_steps(evaluation).double().mean())
    full_t = first_step_within(curve, evaluation.full_accuracy_pct())
    rows = [{"rule": "settled (oracle)", "budget_points": None, "accuracy_pct": evaluation.full_accuracy_pct(),
             "mean_exit_step": settled, "equal_accuracy_t": full_t, "step_ratio": full_t / settled,
             "step_ratio_interval_90": step_ratio_interval(evaluation, settled_steps(evaluation))}]

    def rule(name: str, score) -> list[dict]:
        return rule_rows(name, select, score(select), evaluation, score(evaluation), curve)

    for tau in (4.0, 8.0, 16.0):
        rows += rule(f"confidence, tau {tau:g}", lambda t: exit_score(t.outputs, "confidence", tau))
    rows += rule("mean confidence, tau 1", lambda t: torch.softmax(mean_output(t), -1).amax(-1))
    for k in (2, 4):
        rows += rule(f"confidence, stable {k}",
                     lambda t: exit_score(t.outputs, "confidence", 8.0) * (steps_unchanged(t) >= k))
    half = selection // 2
    train, held = select.rows(0, half), select.rows(half, selection)
    held_scores, eval_scores = learned_scores(train, [held, evaluation])
    rows += rule_rows("learned", held, held_scores, evaluation, eval_scores, curve)
    for r in rows:
        log(f"[{model}] {r['rule']} (budget {r['budget_points']}): {r['accuracy_pct']:.2f} % at "
            f"{r['mean_exit_step']:.2f}, equal T {r['equal_accuracy_t']}")
    return {"model": model, "base_t": BASE_T, "signed_spikes": signed, "samples": limit, "selection_samples": selection,
            "fixed_curve_pct": curve, "selection_accuracy_fixed_pct": select.full_accuracy_pct(),
            "empirical_aet": float(torch.where(evaluation.correct().any(1),
                                               evaluation.correct().int().argmax(1) + 1,
                                               torch.tensor(BASE_T)).double().mean()),
            "rows": rows, "date": C.today(), "machine": C.machine(), "snnconv": C.git_head(),
            "torch": torch.__version__}


def render(results: list[dict]) -> None:
    lines = ["### How early SEENN-I could exit: rules that read the running output", "",
             f"Command: `{COMMAND} --models <model>` (rows tagged `5000`: `--limit 5000 --selection 5000 --tag 5000`; "
             "`signed-5000`: the same with `--signed-spikes --tag signed-5000`; results: "
             "`benchmarks/results/seenn-exit-probe_<model>[_<tag>].json`). "
             + C.machines_sentence(results), "",
             "Offline on traces of the default conversion for T = 32 (with signed spikes, `--signed-spikes`, for "
             "models tagged `signed`; every step's running output, no exits). "
             "`settled (oracle)`: each sample exits at the first step from which its prediction never changes "
             "again (the full-T accuracy; it needs the future). `confidence, tau`: the product's rule; `mean "
             "confidence`: the confidence of F_t / t; `stable k`: the default confidence, counted once the "
             "prediction has held for k steps; `learned`: an MLP on 13 features of the running output, trained "
             "to predict that the current prediction is final. Thresholds chosen as the product chooses alpha, "
             "on unseen test images disjoint from the evaluation images (the learned rule trains on half of them "
             "and takes its threshold on the other half). `equal T` = smallest fixed t within 0.1 points on the "
             "evaluation images; `step ratio` = equal T / mean exit step (the bar is 2). `90 % interval`: the 5th to "
             f"95th percentile of the step ratio over {RESAMPLES} bootstrap resamples of the evaluation images, the "
             "same images for the rule and the fixed-T curve, thresholds as chosen: how much the ratio owes to "
             "which images were drawn.", ""]
    header = ["model", "rule", "budget (points)", "accuracy (%)", "mean exit step", "equal T", "step ratio",
              "90 % interval"]
    body = []
    for r in results:
        for x in r["rows"]:
            budget = "-" if x["budget_points"] is None else f"{x['budget_points']:g}"
            body.append([r["model"], x["rule"], budget, f"{x['accuracy_pct']:.2f}", f"{x['mean_exit_step']:.2f}",
                         str(x["equal_accuracy_t"] or f"> {r['base_t']}"),
                         f"{x['step_ratio']:.2f}" if x["step_ratio"] else "-",
                         "{:.2f}–{:.2f}".format(*x["step_ratio_interval_90"]) if x.get("step_ratio_interval_90")
                         else "-"])
    images = "; ".join(f"{r['model']}: {r['samples']} evaluation, {r['selection_samples']} selection"
                       for r in results)
    lines += [C.md_table(header, body), "", f"Images per model: {images}.", ""]
    C.update_doc("seenn_exit", "\n".join(lines))


def main() -> None:
    parser = C.model_parser(__doc__, "resnet20,vgg")
    parser.add_argument("--limit", type=int, default=2000, help="evaluation images")
    parser.add_argument("--selection", type=int, default=2000, help="unseen test images (from 5000 on) to choose on")
    parser.add_argument("--signed-spikes", action="store_true", help="convert with signed spikes (tag it, e.g. signed)")
    args = parser.parse_args()
    log = partial(print, flush=True)
    C.measure_from_args(args, "seenn-exit-probe",
                        lambda model: run(model, args.limit, args.selection, log, args.signed_spikes), render)


if __name__ == "__main__":
    main()
