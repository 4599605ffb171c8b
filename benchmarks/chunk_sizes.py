"""Chunk size: SNN wall time at each chunk of steps and batch size, beside the automatic chunk.

Per model (the default pipeline, as in speed_memory.py): for batches of 1, 16, 64 and 256 test images, the
engine simulates T = 32 steps as ``snnconv.evaluate`` does (with statistics) at chunks of 1, 2, 4 and 8 steps,
alternating the chunks, ``--repeats`` times after a warm-up; medians. At batch 256 the ANN's 32 forward passes
run in the same alternation, so that column's ratios are SNN / (T x ANN) as in the speed table. The automatic
chunk (snnconv/engine/chunking.py) is marked, to show how far it is from the fastest chunk at every size.

    /work/venv/bin/python benchmarks/chunk_sizes.py
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import _common as C  # noqa: E402
from speed_memory import build  # noqa: E402

COMMAND = "/work/venv/bin/python benchmarks/chunk_sizes.py"
T = 32
BATCHES = (1, 16, 64, 256)
CHUNKS = (1, 2, 4, 8)


def measure(model: str, repeats: int, threads: int) -> dict:
    from snnconv.engine import Engine, TimePlan
    ann, net, x, y = build(model, threads)
    engine = Engine(net.graph, "cpu")
    out = {"model": model, "T": T, "repeats": repeats, "date": C.today(), "snnconv": C.git_head(),
           "machine": C.machine(), "batches": {}}
    for batch in BATCHES:
        xb, yb = x[:batch].contiguous(), y[:batch].contiguous()
        runs = {f"chunk {c}": (lambda plan: lambda: engine.simulate([(xb, yb)], plan))(TimePlan(T, c)) for c in CHUNKS}
        if batch == BATCHES[-1]:
            runs["ann"] = lambda: [ann(xb) for _ in range(T)]
        times = {key: [] for key in runs}
        with torch.no_grad():
            for fn in runs.values():
                fn()
            for _ in range(repeats):
                for key, fn in runs.items():
                    gc.collect()
                    start = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - start)
        medians = {key: statistics.median(v) for key, v in times.items()}
        out["batches"][batch] = {"seconds": medians, "automatic": net.chunk_steps_for(batch)}
        print(f"[{model}] batch {batch}: " + " ".join(f"{k}={v * 1e3:.1f}ms" for k, v in medians.items())
              + f" (automatic {net.chunk_steps_for(batch)})", flush=True)
    return out


def render(results: list[dict]) -> None:
    rows = []
    for r in results:
        for batch, entry in r["batches"].items():
            seconds, automatic = entry["seconds"], entry["automatic"]
            fastest = min(CHUNKS, key=lambda c: seconds[f"chunk {c}"])
            cells = []
            for c in CHUNKS:
                ms = seconds[f"chunk {c}"] * 1e3 / int(batch)
                mark = (" (auto)" if c == automatic else "") + (" fastest" if c == fastest else "")
                ratio = f", {seconds[f'chunk {c}'] / seconds['ann']:.2f}x ANN" if "ann" in seconds else ""
                cells.append(f"{ms:.2f}{ratio}{mark}")
            auto_cost = seconds[f"chunk {automatic}"] / seconds[f"chunk {fastest}"]
            eight_cost = seconds["chunk 8"] / seconds[f"chunk {fastest}"]
            rows.append([r["model"], str(batch), *cells, f"{auto_cost:.2f}", f"{eight_cost:.2f}"])
    table = C.md_table(["model", "batch", *[f"chunk {c} (ms/sample)" for c in CHUNKS], "automatic / fastest",
                        "8 steps / fastest"], rows)
    text = "\n".join([
        "### Chunk size",
        "",
        f"Command: `{COMMAND}` (results: `benchmarks/results/chunk_sizes.json`). "
        + C.machines_sentence(results),
        "",
        f"The engine simulates a chunk of steps at a time (docs/design.md, \"Chunks\"). Per model and batch: wall "
        f"time per sample of `Engine.simulate` (with statistics) over T = {T} at each chunk, medians of "
        f"{results[0]['repeats']} alternating runs after a warm-up; at batch 256 also as a ratio to {T} ANN "
        "forward passes in the same alternation. `auto` marks the chunk `snnconv.evaluate` takes by default "
        "(the most steps, up to 8, whose block of the largest layer stays within 16 MiB); the last two columns "
        "are its time and that of 8-step chunks (every run's chunk before 2026-12-04) over the fastest chunk's.",
        "",
        table,
    ])
    C.update_doc("chunk_sizes", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(C.ALL_MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render-only", action="store_true", help="rewrite docs/benchmarks.md from the results")
    args = parser.parse_args()
    path = C.RESULTS / "chunk_sizes.json"
    previous = json.loads(path.read_text()) if path.is_file() else []
    if not args.render_only:
        models = args.models.split(",")
        fresh = [measure(model, args.repeats, args.threads) for model in models]
        previous = [r for r in previous if r["model"] not in models] + fresh
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(previous, indent=1))
    render(previous)


if __name__ == "__main__":
    main()
