"""Does fine-tuning the converted SNN to be right at every step let SEENN-I exit earlier relative to fixed T?

SEENN's own networks are trained with a loss on every step's output (the TET loss, SEENN section 4.3), so that
they are right early; for converted networks the paper applies SEENN-I unchanged. The CIFAR-10 ResNet-20
misses the 2x bar with the converted network (seenn_exit_probe.py), and its fixed-T curve starts very low
(16 % at t = 1). This probe fine-tunes the default conversion (T = 32) through its SNN simulation (the
library's fine-tuning, snnconv.stages.finetune, with its every-step losses) with a loss on the running
output of every step, then measures the product's SEENN-I rule (confidence, tau 8) on the fine-tuned
network against that network's own fixed-T curve, beside the untouched conversion in the same run:

- ``ce-every-step``: mean over t of CE(F_t / t, y), the TET loss on the running mean output.
- ``distill-every-step``: mean over t of the squared error between F_t / t and the ANN's output.

Fine-tuning images: the first ``--train`` of the seeded training permutation (the calibration images are its
first 1000). Thresholds are chosen as the product chooses alpha on ``--selection`` unseen test images (from 5000
on); evaluation on the first ``--limit`` test images, as in seenn_exit_probe.py.

    /work/venv/bin/python benchmarks/seenn_finetune_probe.py --models resnet20 --train 10000 --lr 1e-4 \
        --tag ce-10000-lr1e-4
"""
from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import _common as C  # noqa: E402
import seenn_exit_probe as probe  # noqa: E402

import snnconv  # noqa: E402
from snnconv.api import load_model  # noqa: E402
from snnconv.config import ConvertConfig  # noqa: E402
from snnconv.metrics.summary import first_step_within  # noqa: E402
from snnconv.stages.finetune import FinetuneConfig, finetune  # noqa: E402
from snnconv.stages.seenn import exit_score, record_trace  # noqa: E402
from snnconv.training import TrainConfig  # noqa: E402

COMMAND = "/work/venv/bin/python benchmarks/seenn_finetune_probe.py"
BASE_T = 32
LOSSES = ("ce-every-step", "distill-every-step")


def measure(network, model: str, limit: int, selection: int) -> dict:
    evaluation = record_trace(network, C.test_data(model, limit), chunk_steps=1)
    select = record_trace(network, C.test_data(model, C.UNSEEN_TEST_START + selection, start=C.UNSEEN_TEST_START),
                          chunk_steps=1)
    curve = [100.0 * float(c) for c in evaluation.correct().double().mean(0)]
    rows = probe.rule_rows("confidence, tau 8", select, exit_score(select.outputs, "confidence", 8.0), evaluation,
                           exit_score(evaluation.outputs, "confidence", 8.0), curve)
    return {"fixed_curve_pct": curve, "settled_mean_step": float(probe.settled_steps(evaluation).double().mean()),
            "rows": rows}


def run(model: str, args, log) -> dict:
    cal = C.training_data(model)
    network = snnconv.convert(load_model(C.source_model(model), example=cal.x), cal,
                              ConvertConfig(time_steps=BASE_T, balance=C.balance(BASE_T, True)))
    converted = measure(network, model, args.limit, args.selection)
    log(f"[{model}] converted: {converted['fixed_curve_pct'][-1]:.2f} % at T = {BASE_T}")
    config = TrainConfig(epochs=args.epochs, batch_size=32, lr=args.lr, optimizer="adam", weight_decay=0.0)
    begin = time.perf_counter()
    train_log = finetune(network, C.training_data(model, args.train), FinetuneConfig(train=config, loss=args.loss))
    seconds = time.perf_counter() - begin
    tuned = measure(network, model, args.limit, args.selection)
    log(f"[{model}] fine-tuned: {tuned['fixed_curve_pct'][-1]:.2f} % at T = {BASE_T} ({seconds:.0f} s)")
    return {"model": model, "base_t": BASE_T, "samples": args.limit, "selection_samples": args.selection,
            "loss": args.loss, "lr": args.lr, "epochs": args.epochs, "train_samples": args.train,
            "epoch_losses": train_log.epoch_losses, "finetune_seconds": seconds,
            "converted": converted, "finetuned": tuned, "date": C.today(), "machine": C.machine(),
            "snnconv": C.git_head(), "torch": torch.__version__}


def _rows(label: str, measured: dict, either_curve: list[float]) -> list[list[str]]:
    curve = measured["fixed_curve_pct"]
    out = []
    for x in measured["rows"]:
        either = first_step_within(either_curve, x["accuracy_pct"])
        out.append([label, f"{curve[0]:.2f} / {curve[7]:.2f} / {curve[-1]:.2f}",
                    f"{measured['settled_mean_step']:.2f}", f"{x['budget_points']:g}", f"{x['accuracy_pct']:.2f}",
                    f"{x['mean_exit_step']:.2f}", str(x["equal_accuracy_t"] or f"> {BASE_T}"),
                    f"{x['step_ratio']:.2f}" if x["step_ratio"] else "-",
                    "{:.2f}–{:.2f}".format(*x["step_ratio_interval_90"]),
                    str(either or f"> {BASE_T}"), f"{either / x['mean_exit_step']:.2f}" if either else "-"])
    return out


def render(results: list[dict]) -> None:
    lines = ["### SEENN-I after fine-tuning the SNN on every step's output", "",
             f"Command: `{COMMAND} --models <model> --train N --epochs E --lr LR --loss LOSS --tag TAG` (results: "
             "`benchmarks/results/seenn-finetune-probe_<model>_<tag>.json`). " + C.machines_sentence(results), "",
             "The default conversion for T = 32, then fine-tuned through its SNN simulation (surrogate gradient, "
             "Adam, batch 32, cosine schedule) with a loss on the running mean output F_t / t of every step "
             "(`ce-every-step`: cross-entropy, the TET loss of SEENN's own training; `distill-every-step`: squared "
             "error to the ANN's output). Both networks are measured in the same run on the same images: the "
             "product's SEENN-I rule (confidence, tau 8), alpha chosen as the product chooses it on unseen test "
             "images, evaluated on the first test images of the seeded permutation. Each network is compared with "
             "its own fixed-T curve. `accuracy at t = 1 / 8 / 32`: that curve; `settled`: the oracle's mean "
             "exit step (each sample exits where its prediction stops changing); `equal T` and `step ratio` as in "
             "the exit probe above (the bar is 2); `90 % interval`: paired bootstrap, 1000 resamples. `equal T, either "
             "network`: the smallest t at which the converted or the fine-tuned network, run for t steps, is within "
             "0.1 points of the exit accuracy, and `ratio vs either` = that t / mean exit step. Fine-tuning changes "
             "the whole fixed-T curve, the top included, so the fixed T a user could run instead is the better "
             "of the two curves: this is the comparison that does not credit the exits with what fine-tuning "
             "took from the full-T accuracy.", ""]
    header = ["network", "accuracy at t = 1 / 8 / 32 (%)", "settled", "budget (points)", "accuracy (%)",
              "mean exit step", "equal T", "step ratio", "90 % interval", "equal T, either network",
              "ratio vs either"]
    for r in results:
        either = [max(a, b) for a, b in zip(r["converted"]["fixed_curve_pct"], r["finetuned"]["fixed_curve_pct"])]
        lines += [f"{r['model']}: fine-tuned on {r['train_samples']} training images, {r['epochs']} epoch(s), "
                  f"`{r['loss']}`, lr {r['lr']:g} ({r['finetune_seconds']:.0f} s; mean loss per epoch "
                  + ", ".join(f"{v:.4f}" for v in r["epoch_losses"]) + f"); {r['samples']} evaluation and "
                  f"{r['selection_samples']} selection images.", "",
                  C.md_table(header, _rows("converted", r["converted"], either) + _rows("fine-tuned", r["finetuned"],
                                                                                      either)), ""]
    C.update_doc("seenn_finetune", "\n".join(lines))


def main() -> None:
    parser = C.model_parser(__doc__, "resnet20")
    parser.add_argument("--limit", type=int, default=2000, help="evaluation images")
    parser.add_argument("--selection", type=int, default=2000, help="unseen test images (from 5000 on) to choose on")
    parser.add_argument("--train", type=int, default=4000, help="fine-tuning images (training split)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--loss", choices=LOSSES, default="ce-every-step")
    args = parser.parse_args()
    log = partial(print, flush=True)
    C.measure_from_args(args, "seenn-finetune-probe", lambda model: run(model, args, log), render)


if __name__ == "__main__":
    main()
