"""SEENN inside `snnconv compress`: build the exit policy, run it with real exits, and write ``seenn.csv`` /
``seenn.md`` / ``seenn_fixed.csv`` / ``seenn_tradeoff.png`` beside the standard reports."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import plots
from ..api import Evaluation, evaluate
from ..metrics import load_energy_model, summarize
from ..metrics.summary import exceeds, reduction_at_equal_accuracy, steps_of_equal_accuracy
from ..stages.seenn import (ConfidenceExit, PolicyExit, SeennConfig, SeennResult, alpha_sweep, candidate_alphas,
                            oracle_aet, seenn)
from .tables import quantity_table, write_csv

SWEEP_COLUMNS = ("alpha", "snn_accuracy_pct", "avg_exit_time_steps", "chosen")
FINETUNE_KEYS = ("converted_snn_accuracy_pct", "converted_steps_of_equal_accuracy",
                 "avg_time_steps_reduction_vs_either_fixed_x", "finetune_loss", "finetune_epochs", "finetune_samples",
                 "finetune_loss_first_epoch", "finetune_loss_last_epoch")
MARKDOWN_SWEEP_ROWS = 15
# a held-out split this many points more accurate at fixed T than the evaluation data is easier than it (the
# network's own training images, typically), and alpha chosen there exits too early on the evaluation data
EASIER_HOLDOUT_POINTS = 1.0


def apply_seenn(context, config: SeennConfig, *, checkpoint: Path | None = None, resume: bool = False):
    """Choose the exit policy on the held-out data and evaluate the network with it (see snnconv.compress)."""
    from . import MethodOutcome, _uniform_run
    network, simulation = context.network, context.simulation
    result = seenn(network, context.calibration, config, holdout=context.holdout, batch_size=simulation.batch_size,
                   device=context.device, checkpoint=checkpoint, resume=resume, progress=context.progress,
                   note=context.note)
    fixed, trace = context.uniform, context.trace
    if config.finetune:  # the fixed-T baseline of the network that exits is the fine-tuned one
        context.note("simulating the fine-tuned network without exits")
        fixed, trace = _uniform_run(network, context.evaluation_data, simulation, context.progress, keep_trace=True)
    network.exit_policy = result.policy
    exited = evaluate(network, context.evaluation_data, simulation, progress=context.progress)
    rows = []
    if isinstance(result.policy, ConfidenceExit):
        policy = result.policy
        alphas = sorted(set(candidate_alphas(trace, policy.score, policy.temperature, policy.chunk_steps))
                        | {policy.alpha})
        rows = [{"alpha": p.alpha, "snn_accuracy_pct": p.accuracy_pct, "avg_exit_time_steps": p.avg_exit_time_steps,
                 "chosen": p.alpha == policy.alpha}
                for p in alpha_sweep(trace, policy.score, policy.temperature, policy.chunk_steps, alphas)]
    extra = seenn_summary(result, fixed, exited, load_energy_model(context.energy), converted=context.uniform)
    return MethodOutcome(network=network, evaluation=exited, rows=rows, extra_summary=extra,
                         write_tables=lambda directory: write_seenn_tables(directory, rows, extra, fixed, exited),
                         details=result)


def seenn_summary(result: SeennResult, fixed: Evaluation, exited: Evaluation, model, *,
                  converted: Evaluation | None = None) -> dict:
    """Summary keys a SEENN run adds (docs/metrics.md): the policy, the fixed-T baseline, AETs, wall time; for a
    fine-tuned SNN (``fixed`` is then the fine-tuned network), the network as ``converted`` beside it."""
    before = summarize(fixed.simulation, fixed.ann, model)
    after = summarize(exited.simulation, exited.ann, model)
    sim_fixed, sim_exit = fixed.simulation, exited.simulation
    policy = result.policy
    matching = steps_of_equal_accuracy(sim_fixed, after["snn_accuracy_pct"])
    mean_exit = after["avg_exit_time_steps"]
    ms_fixed = 1000.0 * sim_fixed.wall_time_s / sim_fixed.samples
    ms_exit = 1000.0 * sim_exit.wall_time_s / sim_exit.samples
    policy_layers = [layer for layer in sim_exit.synaptic_layers if layer.part == "exit_policy"]
    policy_macs = sum(layer.macs_per_sample_dense for layer in policy_layers)
    oracle = sim_fixed.oracle_exit_steps
    # each sample's exit answer is held to T, so the last column of the exit run says whether it was right
    reduction = reduction_at_equal_accuracy(sim_fixed, sim_exit.correct_by_sample[:, -1],
                                            np.minimum(sim_exit.exit_steps, sim_exit.time_steps), matching)
    return {
        "seenn_method": "SEENN-II" if isinstance(policy, PolicyExit) else "SEENN-I",
        "seenn_score": getattr(policy, "score", None),
        "seenn_temperature": getattr(policy, "temperature", None),
        "seenn_alpha": getattr(policy, "alpha", None),
        "seenn_beta": result.beta,
        "seenn_accuracy_budget_points": result.accuracy_budget,
        "seenn_budget_confidence": result.budget_confidence,
        "seenn_chunk_steps": policy.chunk_steps,
        "fixed_time_steps": sim_fixed.time_steps,
        "fixed_snn_accuracy_pct": before["snn_accuracy_pct"],
        "fixed_synaptic_ops_per_sample": before["synaptic_ops_per_sample"],
        "fixed_energy_pj_per_sample_snn": before["energy_pj_per_sample_snn"],
        "fixed_steps_of_equal_accuracy": matching,
        **reduction,
        "oracle_aet_time_steps": oracle_aet(sim_fixed.correct_per_step, sim_fixed.samples),
        "empirical_aet_time_steps": float(np.mean(oracle)) if oracle is not None and len(oracle) else None,
        "wall_time_per_sample_ms_fixed": ms_fixed,
        "wall_time_per_sample_ms_exit": ms_exit,
        "wall_time_ratio_fixed_over_exit": ms_fixed / ms_exit if ms_exit > 0 else None,
        "time_steps_ratio_fixed_over_exit": sim_fixed.time_steps / mean_exit if mean_exit else None,
        "policy_macs_per_sample": policy_macs if policy_layers else None,
        "policy_energy_pj_per_sample": policy_macs * model.e_mac_pj if policy_layers else None,
        "seenn_holdout_samples": result.holdout_samples,
        "seenn_holdout_data": result.holdout_data,
        "seenn_holdout_accuracy_fixed_pct": result.holdout_accuracy_full_pct,
        "seenn_holdout_accuracy_exit_pct": result.holdout_accuracy_exit_pct,
        "seenn_holdout_avg_exit_time_steps": result.holdout_avg_exit_time_steps,
        **holdout_loss_keys(result),
        "seenn_training_samples": result.training_samples or None,
        **finetune_keys(result, converted, after["snn_accuracy_pct"], mean_exit, matching),
    }


def holdout_loss_keys(result: SeennResult) -> dict:
    """The points the exits lost on the held-out split, with their 90 % interval."""
    low, high = result.holdout_lost_points_interval
    return {"seenn_holdout_lost_points": result.holdout_accuracy_full_pct - result.holdout_accuracy_exit_pct,
            "seenn_holdout_lost_points_lower": low, "seenn_holdout_lost_points_upper": high}


def holdout_loss_text(seenn_keys: dict) -> str:
    """"lost 0.50 points (90 % interval 0.17 to 0.83) on the 3000 held-out samples"."""
    low, high = seenn_keys.get("seenn_holdout_lost_points_lower"), seenn_keys.get("seenn_holdout_lost_points_upper")
    interval = f" (90 % interval {low:.2f} to {high:.2f})" if low is not None and not math.isnan(low) else ""
    return (f"lost {seenn_keys['seenn_holdout_lost_points']:.2f} points{interval} on the "
            f"{seenn_keys['seenn_holdout_samples']} held-out samples")


def finetune_keys(result: SeennResult, converted: Evaluation | None, exit_accuracy_pct: float, mean_exit: float,
                  fixed_matching: int | None) -> dict:
    """With --finetune: how the SNN was trained, and the exits beside the fixed T of the network as converted.
    Fine-tuning moves the whole fixed-T curve: it can raise the early steps and lower the top, so either network
    may reach the exit accuracy in fewer fixed steps. The reduction against the better of the two credits the
    exits neither with what fine-tuning gained nor with what it took from the full-T accuracy."""
    tuning = result.finetune
    if tuning is None or converted is None:
        return {"seenn_finetuned": False, **dict.fromkeys(FINETUNE_KEYS)}
    sim = converted.simulation
    matching = steps_of_equal_accuracy(sim, exit_accuracy_pct)
    either = min((t for t in (matching, fixed_matching) if t), default=None)
    losses = result.finetune_losses
    return {"seenn_finetuned": True, "converted_snn_accuracy_pct": sim.accuracy_at(sim.time_steps),
            "converted_steps_of_equal_accuracy": matching,
            "avg_time_steps_reduction_vs_either_fixed_x": either / mean_exit if either and mean_exit else None,
            "finetune_loss": tuning.loss, "finetune_epochs": tuning.train.epochs,
            "finetune_samples": result.finetune_samples,
            "finetune_loss_first_epoch": losses[0] if losses else None,
            "finetune_loss_last_epoch": losses[-1] if losses else None}


def _thin(rows: list[dict], count: int) -> list[dict]:
    """About ``count`` rows evenly spread over the sweep, always keeping the chosen one."""
    if len(rows) <= count:
        return rows
    keep = set(np.linspace(0, len(rows) - 1, count).round().astype(int).tolist())
    return [r for i, r in enumerate(rows) if i in keep or r["chosen"]]


def budget_overspent(seenn_keys: dict, exit_accuracy_pct: float) -> str | None:
    """A sentence when the exits lost more accuracy on the evaluation data than the budget alpha was chosen under
    allowed on the held-out split (the budget holds where alpha was chosen, not necessarily elsewhere); else None.
    ``seenn_keys``: the summary keys of :func:`seenn_summary`."""
    budget, fixed = seenn_keys.get("seenn_accuracy_budget_points"), seenn_keys["fixed_snn_accuracy_pct"]
    lost = fixed - exit_accuracy_pct
    if budget is None or not exceeds(lost, budget):
        return None
    held = seenn_keys["seenn_holdout_accuracy_fixed_pct"]
    hint = ("; --holdout-data chooses alpha on images the network was not trained on"
            if held > fixed + EASIER_HOLDOUT_POINTS else "")
    return (f"on the evaluation data the exits lost {lost:.2f} points against the {budget:g}-point budget met on the "
            f"held-out split, where they {holdout_loss_text(seenn_keys)}, {held:.2f} % right at fixed T (the "
            f"evaluation data: {fixed:.2f} %{hint}; docs/seenn.md, \"Which data to choose on\")")


def write_seenn_tables(directory: Path, rows: list[dict], extra: dict, fixed: Evaluation,
                       exited: Evaluation) -> dict[str, Path]:
    files = {}
    if rows:
        files["seenn.csv"] = write_csv(directory / "seenn.csv", SWEEP_COLUMNS, rows)
    curve = [{"time_steps": t, "snn_accuracy_pct": accuracy}  # the curve the fixed T of equal accuracy is read from
             for t, accuracy in enumerate(fixed.simulation.accuracy_per_step.tolist(), 1)]
    files["seenn_fixed.csv"] = write_csv(directory / "seenn_fixed.csv", ("time_steps", "snn_accuracy_pct"), curve)
    sim = exited.simulation
    png = plots.plot_exit_tradeoff(
        fixed.simulation.accuracy_per_step, directory / "seenn_tradeoff.png",
        sweep=[(r["avg_exit_time_steps"], r["snn_accuracy_pct"]) for r in rows],
        chosen=(float(np.mean(sim.exit_steps)), sim.accuracy_at(sim.time_steps)),
        oracle=(extra["oracle_aet_time_steps"], fixed.simulation.accuracy_at(fixed.simulation.time_steps)),
        ann_accuracy_pct=fixed.ann.accuracy, title=f"{extra['seenn_method']}: accuracy vs average time steps")
    files["seenn_tradeoff.png"] = png
    md = directory / "seenn.md"
    lines = [f"# {extra['seenn_method']} early exit", "",
             f"Fixed T = {extra['fixed_time_steps']}: {extra['fixed_snn_accuracy_pct']:.2f} %. With exits: "
             f"{sim.accuracy_at(sim.time_steps):.2f} % at {float(np.mean(sim.exit_steps)):.2f} steps on average. "
             "The fixed-T curve (every sample run t steps, the curve the fixed T of equal accuracy is read from) is "
             "in `seenn_fixed.csv`. Definitions: docs/seenn.md and docs/metrics.md.", ""]
    overspent = budget_overspent(extra, sim.accuracy_at(sim.time_steps))
    lines += [f"Note: {overspent}." if overspent else f"The exits {holdout_loss_text(extra)}.", ""]
    lines += quantity_table(extra)
    if rows:
        lines += ["", "Threshold sweep on the evaluation data (offline, from the fixed-T run; the chosen alpha was "
                      "picked on the held-out split, never on this data):", "",
                  "| alpha | accuracy (%) | mean exit step | chosen |", "|---:|---:|---:|---|"]
        lines += [f"| {r['alpha']:.6g} | {r['snn_accuracy_pct']:.2f} | {r['avg_exit_time_steps']:.2f} | "
                  f"{'yes' if r['chosen'] else ''} |" for r in _thin(rows, MARKDOWN_SWEEP_ROWS)]
    lines += ["", "![Accuracy vs average time steps](seenn_tradeoff.png)", ""]
    md.write_text("\n".join(lines))
    files["seenn.md"] = md
    return files
