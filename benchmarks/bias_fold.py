"""Calibration currents inside the convolution (docs/design.md, "The time engine"): the bare time engine with the
fold (the default) beside the same engine without it, side by side in one process.

Per model: the default pipeline, one batch of 256 test images, T = 32, ``Engine.run_batch`` without statistics;
the two engines alternate ``--repeats`` times after a warm-up and medians are reported. Also reported: whether
the two give the same predictions, and the largest difference of their summed outputs (float rounding).

    /work/venv/bin/python benchmarks/bias_fold.py
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import _common as C  # noqa: E402
from speed_memory import BATCH, T_SPEED, build  # noqa: E402

COMMAND = "/work/venv/bin/python benchmarks/bias_fold.py"


def measure(model: str, repeats: int, threads: int) -> dict:
    from snnconv.engine import Engine, TimePlan
    _ann, net, x, y = build(model, threads)
    plan = TimePlan(T_SPEED, 8)
    engines = {"fold": Engine(net.graph, "cpu"), "plain": Engine(net.graph, "cpu", fold_bias=False)}
    outputs, timings = {}, {key: [] for key in engines}
    for key, engine in engines.items():  # warm-up
        with torch.no_grad():
            outputs[key] = engine.run_batch(x, y, plan)["accumulated"]
    for _ in range(repeats):
        for key, engine in engines.items():
            gc.collect()
            start = time.perf_counter()
            with torch.no_grad():
                engine.run_batch(x, y, plan)
            timings[key].append(time.perf_counter() - start)
    med = {key: statistics.median(v) for key, v in timings.items()}
    return {"model": model, "fold_s": med["fold"], "plain_s": med["plain"], "speedup": med["plain"] / med["fold"],
            "folded_layers": len(engines["fold"]._bias_into),
            "same_predictions": bool((outputs["fold"].argmax(-1) == outputs["plain"].argmax(-1)).all()),
            "max_output_difference": float((outputs["fold"] - outputs["plain"]).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vgg,resnet,maxpool")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for model in args.models.split(","):
        r = measure(model, args.repeats, args.threads)
        print(r, flush=True)
        rows.append([model, str(r["folded_layers"]), f"{r['plain_s']:.2f}", f"{r['fold_s']:.2f}", f"{r['speedup']:.2f}",
                     "yes" if r["same_predictions"] else "no", f"{r['max_output_difference']:.3g}"])
    text = "\n".join([
        "### Calibration currents inside the convolution", "",
        f"Command: `{COMMAND}`. Machine: {C.machine()}. Measured {C.today()}, snnconv {C.git_head()}.", "",
        f"One batch of {BATCH}, T = {T_SPEED}, bare engine (`run_batch`, no statistics), the engine with the bias fold "
        f"(default) and without it alternating, medians of {args.repeats}. `max output difference`: largest "
        "difference of the summed outputs (float rounding can flip a spike).", "",
        C.md_table(["model", "folded layers", "without fold (s)", "with fold (s)", "speed-up (x)", "same predictions",
                    "max output difference"], rows), ""])
    C.update_doc("bias_fold", text)


if __name__ == "__main__":
    main()
