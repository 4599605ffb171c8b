"""SEENN benchmark (issue: per-sample early exit): accuracy vs average T for SEENN-I (several accuracy
budgets, i.e. several alpha) and SEENN-II (several beta) beside the fixed-T curve, the oracle AET, and
measured wall time per sample with and without exits.

Per model: the default pipeline, with the mse threshold search for the base T (``--balance-steps T``, the
default before 2026-12-02), converts for T = 32 on the 1000 benchmark calibration images. Data:
- evaluation: the first ``--limit`` test images of the seeded test permutation (as in the other benchmarks);
- selection (SEENN-I's held-out split): test images 5000..9999 of that permutation, disjoint from the
  evaluation images and never seen in training (the training split is not used: the network fits it better
  than unseen data, which makes a threshold chosen there too aggressive, see docs/seenn.md);
- SEENN-II policy training: the first ``--policy-train`` images of the seeded training permutation (the
  paper trains the policy on the training set).
Every exit rule is then run for real on the evaluation set (exited samples leave the batch, chunk of 1 step),
and the fixed network is simulated for the "T of equal accuracy" in the same run; for the wall-time ratio the
rule and that fixed T run alternately WALL_REPEATS times on the same images and the medians are compared, so
a change of load on a shared machine falls on both sides (batch 256, one process).

    /work/venv/bin/python benchmarks/seenn_bench.py --models vgg,resnet,maxpool
    /work/venv/bin/python benchmarks/seenn_bench.py --models resnet20 --limit 1000 --selection 2000 --no-policy \
        --signed-spikes --tag signed
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import _common as C  # noqa: E402

import snnconv  # noqa: E402
import snnconv.zoo  # noqa: E402
from snnconv.api import load_model  # noqa: E402
from snnconv.config import ConvertConfig, SimulationConfig  # noqa: E402
from snnconv.metrics import load_energy_model, summarize  # noqa: E402
from snnconv.metrics.summary import exceeds, steps_of_equal_accuracy  # noqa: E402
from snnconv.stages.seenn import (ConfidenceExit, ExitTrace, PolicyExit, PolicyNet, alpha_sweep, choose_alpha,  # noqa: E402
                                  choose_rule,
                                  TEMPERATURE_GRID, exit_points, oracle_aet, policy_loss, record_trace,
                                  sample_weights)
from snnconv.training import TrainConfig, fit  # noqa: E402

COMMAND = "/work/venv/bin/python benchmarks/seenn_bench.py"
BASE_T = 32
BUDGETS = (0.1, 0.25, 0.5, 1.0)
BETAS = (0.1, 0.5, 2.0)
POLICY_CHUNK = 4  # SEENN-II chooses among steps 4, 8, ..., 32 (docs/seenn.md)
WALL_REPEATS = 3  # alternated runs of an exit rule and its fixed T of equal accuracy; the wall times are medians


def _run(network, data, policy, steps: int):
    # a fixed T runs in the chunk snnconv.evaluate takes by default (rows without `fixed_chunk_steps` ran 8)
    return snnconv.evaluate(network, data, SimulationConfig(time_steps=steps, chunk_steps=1 if policy else None),
                            exit_policy=policy)


def measured(network, data, policy, steps: int = BASE_T) -> dict:
    """Run ``data`` for real (policy None: fixed ``steps``) and return accuracy, mean steps, wall time, energy."""
    ev = _run(network, data, policy, steps)
    s = summarize(ev.simulation, ev.ann, load_energy_model("45nm"))
    return {"accuracy_pct": s["snn_accuracy_pct"], "avg_time_steps": s["avg_time_steps"],
            "wall_ms_per_sample": 1000.0 * ev.simulation.wall_time_s / ev.simulation.samples,
            "synaptic_ops_per_sample": s["synaptic_ops_per_sample"], "energy_pj_per_sample": s["energy_pj_per_sample_snn"],
            "macs_per_sample_snn": s["macs_per_sample_snn"]}


def wall_ms_per_sample(network, data, policy, steps: int) -> float:
    sim = _run(network, data, policy, steps).simulation
    return 1000.0 * sim.wall_time_s / sim.samples


def with_equal_fixed(network, data, curve_sim, row: dict, cache: dict, policy, base_t: int,
                     repeats: int = WALL_REPEATS) -> dict:
    """Add the fixed T of equal accuracy (within 0.1 points) and the wall times of the exit rule and of that
    fixed T, each the median of ``repeats`` runs taken alternately, so that a change of load on the shared
    machine falls on both sides of the ratio alike."""
    t = steps_of_equal_accuracy(curve_sim, row["accuracy_pct"])
    row["equal_accuracy_t"] = t
    if t is not None:
        if t not in cache:
            cache[t] = measured(network, data, None, t)
        exits, fixed = [], []
        for _ in range(repeats):
            exits.append(wall_ms_per_sample(network, data, policy, base_t))
            fixed.append(wall_ms_per_sample(network, data, None, t))
        row["wall_ms_per_sample_runs"], row["equal_fixed_wall_ms_per_sample_runs"] = exits, fixed
        row["wall_ms_per_sample"] = float(np.median(exits))
        row["equal_fixed_wall_ms_per_sample"] = float(np.median(fixed))
        row["step_ratio"] = t / row["avg_time_steps"]
        row["wall_ratio"] = row["equal_fixed_wall_ms_per_sample"] / row["wall_ms_per_sample"]
    return row


def run(model: str, limit: int, selection_count: int, policy_train: int, epochs: int, log,
        temperatures=(8.0,), policy: bool = True, base_t: int = BASE_T, signed: bool = False,
        default_balance: bool = False) -> dict:
    cal, test = C.training_data(model), C.test_data(model, limit)
    selection = C.test_data(model, C.UNSEEN_TEST_START + selection_count, start=C.UNSEEN_TEST_START)
    imported = load_model(C.source_model(model), example=cal.x)
    network = snnconv.convert(imported, cal, ConvertConfig(time_steps=base_t, balance=C.balance(base_t, default_balance),
                                                           signed_spikes=signed))
    traces = []
    fixed = snnconv.evaluate(network, test, SimulationConfig(time_steps=base_t), exit_policy=None, trace_output=True,
                             on_batch=lambda outcome: traces.append(outcome["output_trace"].cpu()))
    sim = fixed.simulation
    eval_trace = ExitTrace(torch.cat(traces, dim=1), test.y.clone())
    full = measured(network, test, None, base_t)  # again without the trace, for a clean wall time
    cache = {base_t: full}
    log(f"[{model}] fixed T={base_t}: {full['accuracy_pct']:.2f} %, {full['wall_ms_per_sample']:.2f} ms/sample")

    selected = record_trace(network, selection)
    selection_full = selected.full_accuracy_pct()
    seenn_one = []
    for budget in BUDGETS:
        tau, chosen, _ = choose_rule(selected, selection_full, budget, temperatures=temperatures)
        rule = ConfidenceExit(chosen.alpha, "confidence", tau, 1)
        row = {"budget_points": budget, "alpha": chosen.alpha, "temperature": tau,
               "selection_accuracy_pct": chosen.accuracy_pct, "selection_avg_exit": chosen.avg_exit_time_steps,
               **measured(network, test, rule, base_t)}
        seenn_one.append(with_equal_fixed(network, test, sim, row, cache, rule, base_t))
        log(f"[{model}] SEENN-I budget {budget}: alpha {chosen.alpha:.6f} tau {tau:g} -> {row['accuracy_pct']:.2f} % at "
            f"{row['avg_time_steps']:.2f} steps (fixed of equal accuracy: {row['equal_accuracy_t']})")
    offline = alpha_sweep(eval_trace, "confidence", 8.0, 1)
    scores = {}
    for score in ("entropy", "margin"):
        pts = alpha_sweep(selected, score, 8.0, 1)
        chosen = choose_alpha(pts, selection_full, 0.5)
        point = alpha_sweep(eval_trace, score, 8.0, 1, [chosen.alpha])[0]
        scores[score] = {"alpha": chosen.alpha, "accuracy_pct": point.accuracy_pct,
                         "avg_time_steps": point.avg_exit_time_steps,
                         "equal_accuracy_t": steps_of_equal_accuracy(sim, point.accuracy_pct)}

    train = C.training_data(model, policy_train)
    t0 = time.perf_counter()
    seenn_two = []
    if policy:
        train_trace = record_trace(network, train)
        points = exit_points(train_trace, POLICY_CHUNK)
        correct = train_trace.correct()[:, torch.tensor(points) - 1]
        weights = sample_weights(correct)
    for beta in BETAS if policy else ():
        torch.manual_seed(0)
        net = PolicyNet(tuple(train.sample_shape), len(points), 8)
        t1 = time.perf_counter()
        fit(net, [train.x, correct, weights], lambda m, b: policy_loss(m(b[0]), b[1], b[2], beta),
            TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, optimizer="adam", weight_decay=5e-4))
        rule = PolicyExit(net, points, POLICY_CHUNK)
        row = {"beta": beta, "train_s": time.perf_counter() - t1, **measured(network, test, rule, base_t)}
        seenn_two.append(with_equal_fixed(network, test, sim, row, cache, rule, base_t))
        log(f"[{model}] SEENN-II beta {beta}: {row['accuracy_pct']:.2f} % at {row['avg_time_steps']:.2f} steps "
            f"(fixed of equal accuracy: {row['equal_accuracy_t']})")
    return {
        "model": model, "base_t": base_t, "signed_spikes": signed, "samples": limit, "selection_samples": len(selection),
        "policy_train_samples": policy_train if policy else 0, "policy_epochs": epochs, "ann_accuracy_pct": fixed.ann.accuracy,
        "fixed_curve_pct": [sim.accuracy_at(t) for t in range(1, base_t + 1)], "fixed": full,
        "fixed_runs": {str(t): v for t, v in cache.items()},
        "selection_accuracy_fixed_pct": selection_full,
        "oracle_aet": oracle_aet(sim.correct_per_step, sim.samples),
        "empirical_aet": float(np.mean(sim.oracle_exit_steps)),
        "seenn_one": seenn_one, "other_scores": scores,
        "offline_sweep": [(p.avg_exit_time_steps, p.accuracy_pct) for p in offline[:: max(1, len(offline) // 60)]],
        "seenn_two": seenn_two, "policy_s": time.perf_counter() - t0,
        "date": C.today(), "machine": C.machine(), "snnconv": C.git_head(), "torch": torch.__version__,
        "fixed_chunk_steps": network.chunk_steps_for(SimulationConfig().batch_size),
    }


def _ratio_text(row: dict, base_t: int) -> tuple[str, str, str]:
    if row.get("equal_accuracy_t") is None:
        return f"> {base_t}", "-", "-"
    return str(row["equal_accuracy_t"]), f"{row['step_ratio']:.2f}", f"{row['wall_ratio']:.2f}"


def render(results: list[dict]) -> None:
    lines = ["## 5. SEENN: per-sample early exit", "",
             f"Command: `{COMMAND}` (results: `benchmarks/results/seenn_<model>.json`). " + C.machines_sentence(results), "",
             "`mseT-channel-half-advanced` (the default pipeline with the mse search for the base T, as before 2026-12-02; section 1; "
             "models tagged `default-balance` use today's default `mse-channel-half-advanced`, the search for T/2, "
             "`--default-balance`) converted for T = 32 (T = 64 for models tagged `t64`; with signed spikes, "
             "`--signed-spikes`, for models tagged `signed`). SEENN-I: max softmax of the summed output at temperature tau "
             "(8, or, for models tagged `tau-auto`, chosen per budget from {1, 2, ..., 64} on the selection images as "
             "`--temperature auto` does), "
             "alpha chosen on unseen test images (the "
             "`selection` column: images from 5000 on in the seeded permutation, never among the evaluation images) as "
             "the smallest alpha within the accuracy budget of the fixed-T accuracy there; SEENN-II: a width-8 ResNet-8-like policy "
             "choosing among steps 4, 8, ..., 32 (decisions every 4 steps), trained on training images with the "
             "exact-expectation reward (Adam lr 1e-3, weight decay 5e-4, cosine, 30 epochs). "
             "Every rule then runs for real on the evaluation images (exited samples leave the batch; decisions after "
             "every step). `equal T` = smallest fixed t within 0.1 points of the exit accuracy, simulated in the same "
             "run for its wall time. `step ratio` = equal T / mean exit step (bar >= 2); `wall ratio` = wall time per "
             "sample at equal T / with exits (bar: within 30 % of the step ratio, i.e. wall ratio >= 0.7 x step "
             "ratio). Energy (45 nm) includes the policy network's MACs for SEENN-II. `wall runs` = how each wall "
             f"time was taken: `{WALL_REPEATS} alt.` = the rule and its equal T ran alternately {WALL_REPEATS} times each "
             "on the same images, medians; `1` = one run each, at different moments of the benchmark; `chunk N` = "
             "the steps the fixed-T runs simulated together (the automatic chunk `snnconv.evaluate` takes by default "
             "since 2026-12-04, docs/design.md \"Chunks\"; 8 before; exit runs decide after every step, in chunks of "
             "1). Other "
             "benchmarks shared the 2 cores, so single-run wall ratios are noisy; the step ratios and accuracies are "
             "not affected.", ""]
    header = ["model", "rule", "accuracy (%)", "mean exit step", "equal T", "step ratio", "bar >= 2", "wall ratio",
              "wall bar", "wall runs", "ms/sample", "energy (µJ)"]
    body = []
    for r in results:
        f = r["fixed"]
        body.append([r["model"], f"fixed T = {r['base_t']}", f"{f['accuracy_pct']:.2f}", str(r["base_t"]), "", "", "",
                     "", "", "", f"{f['wall_ms_per_sample']:.2f}", f"{f['energy_pj_per_sample'] / 1e6:.2f}"])
        rows = [(f"SEENN-I budget {x['budget_points']:g} (alpha {x['alpha']:.6g}, tau {x.get('temperature', 8):g})", x)
                for x in r["seenn_one"]]
        rows += [(f"SEENN-II beta {x['beta']:g}", x) for x in r["seenn_two"]]
        for name, x in rows:
            equal, step, wall = _ratio_text(x, r["base_t"])
            step_ok = x.get("step_ratio") is not None and not exceeds(2, x["step_ratio"])
            wall_ok = x.get("wall_ratio") is not None and not exceeds(0.7 * x["step_ratio"], x["wall_ratio"])
            body.append([r["model"], name, f"{x['accuracy_pct']:.2f}", f"{x['avg_time_steps']:.2f}", equal, step,
                         "holds" if step_ok else "FAILS", wall, "holds" if wall_ok else "FAILS",
                         (f"{len(x['wall_ms_per_sample_runs'])} alt." if "wall_ms_per_sample_runs" in x else "1")
                         + f", chunk {r.get('fixed_chunk_steps', 8)}",
                         f"{x['wall_ms_per_sample']:.2f}", f"{x['energy_pj_per_sample'] / 1e6:.2f}"])
    lines += [C.md_table(header, body), ""]
    lines += ["Oracle AET (SEENN Eq. 4, from the fixed run's per-step accuracy) and empirical AET (mean earliest "
              "correct step, T when never correct); other SEENN-I scores at budget 0.5 (offline on the evaluation "
              "trace):", ""]
    other = []
    for r in results:
        s = r["other_scores"]
        other.append([r["model"], str(r["samples"]), str(r["selection_samples"]), str(r["policy_train_samples"]),
                      f"{r['ann_accuracy_pct']:.2f}", f"{r['fixed']['accuracy_pct']:.2f} (T={r['base_t']})",
                      f"{r['oracle_aet']:.2f}", f"{r['empirical_aet']:.2f}"]
                     + [f"{s[k]['accuracy_pct']:.2f} % at {s[k]['avg_time_steps']:.2f}" for k in ("entropy", "margin")])
    lines += [C.md_table(["model", "images", "selection", "policy train", "ANN", "fixed T", "oracle AET",
                          "empirical AET", "entropy score", "margin score"],
                         other), ""]
    for r in results:
        curve = r["fixed_curve_pct"]
        marks = [t for t in (1, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64) if t <= r["base_t"]]
        lines += [f"Fixed-T curve, {r['model']}:", "",
                  C.md_table(["t"] + [str(t) for t in marks], [["accuracy (%)"] + [f"{curve[t - 1]:.2f}" for t in marks]]),
                  ""]
    C.update_doc("seenn", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vgg,resnet,maxpool")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--selection", type=int, default=5000, help="test images (from 5000 on) that choose alpha")
    parser.add_argument("--policy-train", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--temperature", default="8", help="SEENN-I softmax temperature, or auto (grid 1..64)")
    parser.add_argument("--no-policy", action="store_true", help="skip SEENN-II")
    parser.add_argument("--tag", default="", help="suffix of the result file and the model label, e.g. tau-auto")
    parser.add_argument("--time-steps", type=int, default=BASE_T, help="T the models are converted for")
    parser.add_argument("--signed-spikes", action="store_true", help="convert with signed spikes (tag it, e.g. signed)")
    parser.add_argument("--default-balance", action="store_true",
                        help="convert with the product default (mse search for T/2; tag it, e.g. default-balance)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    C.RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.render_only:
        for model in args.models.split(","):
            temperatures = TEMPERATURE_GRID if args.temperature == "auto" else (float(args.temperature),)
            result = run(model, args.limit, args.selection, args.policy_train, args.epochs,
                         lambda m: print(m, flush=True), temperatures, policy=not args.no_policy,
                         base_t=args.time_steps, signed=args.signed_spikes,
                         default_balance=args.default_balance)
            suffix = f"_{args.tag}" if args.tag else ""
            result["model"] = f"{model} ({args.tag})" if args.tag else model
            (C.RESULTS / f"seenn_{model}{suffix}.json").write_text(json.dumps(result, indent=1))
            render([json.loads(p.read_text()) for p in sorted(C.RESULTS.glob("seenn_*.json"))])
    render([json.loads(p.read_text()) for p in sorted(C.RESULTS.glob("seenn_*.json"))])


if __name__ == "__main__":
    main()
