"""Simulation speed and memory (SPEC section 5): SNN wall time / (T x ANN wall time), and memory flat in T.

Speed, per model, one process, on one batch of 256 test images, CPU, the default pipeline (``ConvertConfig()``):
- ANN: T = 32 consecutive forward passes of the source network (PyTorch module; for the ONNX ResNet-20 the
  imported torch.fx graph) on the batch, i.e. T x ANN wall time measured directly;
- SNN: the time engine simulating the batch for T = 32 steps, as ``snnconv.evaluate`` runs it (with its
  per-layer spike and synaptic-operation statistics), and bare (``Engine.run_batch`` without statistics);
- the same with the neurons and max-pool gates run as torch ops instead of the fused CPU loops
  (``snnconv/engine/kernels.py``), to show what the loops change;
- the SNN with chunks of 8 steps instead of the automatic chunk (snnconv/engine/chunking.py).
ANN and SNN alternate, ``--repeats`` times each after one warm-up; medians are reported and the ratio is
median SNN / median (T x ANN).

Memory, per model: the parent converts the model once and saves the artifact; a fresh child process per T
loads it, resets its peak-RSS mark (``/proc/self/clear_refs``), simulates one batch of 256 for T = 32 or
T = 512 steps, and reports the peak resident set during the simulation (VmHWM) and over its whole life
(getrusage RUSAGE_SELF ru_maxrss). The ratio is T=512 / T=32.

    /work/venv/bin/python benchmarks/speed_memory.py
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import _common as C  # noqa: E402

COMMAND = "/work/venv/bin/python benchmarks/speed_memory.py"
BATCH = 256
T_SPEED = 32
T_MEMORY = (32, 512)


def build(model: str, threads: int, signed: bool = False):
    """(source ANN module, converted default-pipeline network, with signed spikes if ``signed``, one test
    batch x, y)."""
    torch.set_num_threads(threads)
    import snnconv
    import snnconv.zoo
    from snnconv.api import load_model
    from snnconv.config import ConvertConfig
    from snnconv.data import LabeledData
    cal_x, cal_y = C.calibration_set(model)
    cal = LabeledData(x=cal_x, y=cal_y, description=f"{model} calibration", num_classes=10)
    if model == "resnet20":
        imported = load_model(str(C.CIFAR_ONNX), example=cal_x)
        ann = imported.graph.eval()
        source = imported
    else:
        ann = getattr(snnconv.zoo, f"fmnist_{model}")()
        ann.load_state_dict(torch.load(C.fmnist_weights(model), map_location="cpu", weights_only=True))
        ann.eval()
        source = ann
    net = snnconv.convert(source, cal, ConvertConfig(signed_spikes=signed))
    x, y = C.test_order(model)
    return ann, net, x[:BATCH].contiguous(), y[:BATCH].contiguous()


def measure_speed(model: str, repeats: int, threads: int, signed: bool = False) -> dict:
    from snnconv.engine import Engine, TimePlan, kernels
    ann, net, x, y = build(model, threads, signed)
    engine = Engine(net.graph, "cpu")
    chunk = net.chunk_steps_for(BATCH)  # the automatic chunk, as snnconv.evaluate simulates by default
    plan, plan_8 = TimePlan(T_SPEED, chunk), TimePlan(T_SPEED, 8)

    def run_ann():
        with torch.no_grad():
            for _ in range(T_SPEED):
                ann(x)

    def run_snn():
        engine.simulate([(x, y)], plan)

    def run_bare():
        with torch.no_grad():
            engine.run_batch(x, y, plan)

    def run_snn_8():  # chunks of 8 steps, every run's chunk before the automatic one
        engine.simulate([(x, y)], plan_8)

    def torch_ops(fn):
        def run():
            with kernels.disabled():
                fn()
        return run

    runs = (("ann", run_ann), ("snn", run_snn), ("bare", run_bare), ("snn_torch", torch_ops(run_snn)),
            ("bare_torch", torch_ops(run_bare)), ("snn_chunk8", run_snn_8))
    timings = {key: [] for key, _ in runs}
    for _, fn in runs:  # warm-up (and the loops' compilation)
        fn()
    for _ in range(repeats):
        for key, fn in runs:
            gc.collect()
            start = time.perf_counter()
            fn()
            timings[key].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in timings.items()}
    return {"network": net, "model": row_name(model, signed), "T": T_SPEED, "batch": BATCH, "repeats": repeats,
            "chunk_steps": chunk, "ratio_chunk8": med["snn_chunk8"] / med["ann"],
            "ann_T_forwards_s": med["ann"], "snn_s": med["snn"], "snn_bare_s": med["bare"],
            "ratio": med["snn"] / med["ann"], "ratio_bare": med["bare"] / med["ann"],
            "snn_torch_s": med["snn_torch"], "ratio_torch": med["snn_torch"] / med["ann"],
            "ratio_bare_torch": med["bare_torch"] / med["ann"],
            "ann_runs": timings["ann"], "snn_runs": timings["snn"], "bare_runs": timings["bare"]}


def row_name(model: str, signed: bool) -> str:
    return f"{model}-signed" if signed else model


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def memory_child(model: str, artifact: str, steps: int, threads: int) -> None:
    """Runs in a fresh process: prints one JSON line with the peak RSS of simulating ``steps`` steps."""
    import resource
    from snnconv.artifacts import load
    from snnconv.engine import Engine, TimePlan
    torch.set_num_threads(threads)
    net = load(artifact)
    x, y = C.test_order(model)
    x, y = x[:BATCH].contiguous(), y[:BATCH].contiguous()
    engine = Engine(net.graph, "cpu")
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    chunk = net.chunk_steps_for(BATCH)
    result = engine.simulate([(x, y)], TimePlan(steps, chunk))
    wall = time.perf_counter() - start
    print(json.dumps({"model": row_name(model, net.config.signed_spikes), "T": steps, "chunk_steps": chunk, "rss_before_kb": before,
                      "hwm_kb": _status_kb("VmHWM"), "hwm_reset": reset, "maxrss_life_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "wall_s": wall, "accuracy": result.accuracy_at(steps)}))


def measure_memory(model: str, net, threads: int) -> list[dict]:
    import tempfile
    from snnconv.artifacts import save
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        save(net, Path(tmp) / "artifact")
        for steps in T_MEMORY:
            proc = subprocess.run([sys.executable, __file__, "--memory-child", model, "--artifact",
                                   str(Path(tmp) / "artifact"), "--steps", str(steps), "--threads", str(threads)],
                                  capture_output=True, text=True, check=True)
            out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


SPEED_FIELDS = ["model", "T", "batch", "repeats", "ann_T_forwards_s", "snn_s", "snn_bare_s", "ratio", "ratio_bare",
                "snn_torch_s", "ratio_torch", "ratio_bare_torch", "ann_runs", "snn_runs", "bare_runs", "torch", "date",
                "snnconv", "cpu", "chunk_steps", "ratio_chunk8"]
MEMORY_FIELDS = ["model", "T", "chunk_steps", "rss_before_kb", "hwm_kb", "hwm_reset", "maxrss_life_kb", "wall_s", "accuracy", "date",
                 "snnconv", "cpu"]
_RUN_LISTS = ("ann_runs", "snn_runs", "bare_runs")


def _write_rows(name: str, fields: list[str], rows: list[dict]) -> None:
    with (C.RESULTS / name).open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: " ".join(f"{v:.3f}" for v in row[k]) if k in _RUN_LISTS else row.get(k) for k in fields})


def _read_rows(name: str) -> list[dict]:
    """Rows of an earlier run, numbers parsed back (lists of repeat times included)."""
    path = C.RESULTS / name
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as stream:
        for raw in csv.DictReader(stream):
            row = {}
            for key, value in raw.items():
                if key in _RUN_LISTS:
                    row[key] = [float(v) for v in value.split()]
                elif key in ("model", "torch", "date", "snnconv", "hwm_reset", "cpu"):
                    row[key] = value
                elif value == "":  # a field added after the row was measured
                    row[key] = None
                else:
                    row[key] = float(value) if "." in value or "e" in value else int(value)
            rows.append(row)
    return rows


def _repeats(speed: list[dict]) -> str:
    counts = {int(s["repeats"]) for s in speed}
    if len(counts) <= 1:
        return str(counts.pop()) if counts else "?"
    return "; ".join(f"{s['model']} {int(s['repeats'])}" for s in speed)


def _measured(row: dict) -> str:
    return f"{row['date']}, {row['snnconv']}, {row.get('cpu') or 'CPU not recorded'}"


def _chunk(row: dict) -> str:
    return str(row["chunk_steps"]) if row.get("chunk_steps") is not None else "8"  # rows before the automatic chunk


def _table_order(row: dict) -> tuple[bool, int]:
    """Plain models first, in the benchmarks' model order, then their signed-spike rows."""
    name = row["model"].removesuffix("-signed")
    return row["model"].endswith("-signed"), C.ALL_MODELS.index(name) if name in C.ALL_MODELS else len(C.ALL_MODELS)


def render(speed: list[dict], memory: list[dict]) -> None:
    from snnconv.metrics.summary import exceeds

    speed, memory = sorted(speed, key=_table_order), sorted(memory, key=_table_order)
    rows = []
    def optional(row, key):
        return f"{row[key]:.2f}" if row.get(key) is not None else "-"

    for s in speed:
        rows.append([s["model"], _chunk(s), f"{s['ann_T_forwards_s']:.2f}", f"{s['snn_s']:.2f}", f"**{s['ratio']:.2f}**",
                     f"{s['snn_bare_s']:.2f}", f"{s['ratio_bare']:.2f}", optional(s, "ratio_torch"),
                     optional(s, "ratio_bare_torch"), optional(s, "ratio_chunk8"),
                     "FAILS" if exceeds(s["ratio"], 1.2) else "holds", _measured(s)])
    speed_table = C.md_table(["model", "chunk", "32 x ANN (s)", "SNN T=32 (s)", "ratio", "SNN bare (s)", "ratio bare",
                              "ratio, torch ops", "ratio bare, torch ops", "ratio, 8-step chunks", "bar <= 1.2",
                              "measured"], rows, "lrrrrrrrrrll")
    mrows = []
    by_model: dict[str, dict[int, dict]] = {}
    for m in memory:
        by_model.setdefault(m["model"], {})[m["T"]] = m
    for model, runs in by_model.items():
        a, b = runs[T_MEMORY[0]], runs[T_MEMORY[1]]
        ratio = b["hwm_kb"] / a["hwm_kb"]
        growth_a, growth_b = a["hwm_kb"] - a["rss_before_kb"], b["hwm_kb"] - b["rss_before_kb"]
        mrows.append([model, _chunk(b), f"{a['rss_before_kb'] / 1024:.0f}", f"{a['hwm_kb'] / 1024:.0f}", f"{b['hwm_kb'] / 1024:.0f}",
                      f"**{ratio:.3f}**", f"{growth_a / 1024:.0f} / {growth_b / 1024:.0f}",
                      f"{a['maxrss_life_kb'] / 1024:.0f} / {b['maxrss_life_kb'] / 1024:.0f}",
                      f"{b['wall_s'] / a['wall_s']:.1f}", "FAILS" if exceeds(ratio, 1.2) else "holds",
                      _measured(b)])
    memory_table = C.md_table(["model", "chunk", "RSS before sim (MiB)", "peak T=32 (MiB)", "peak T=512 (MiB)", "ratio",
                               "growth during sim 32 / 512 (MiB)", "life max RSS 32 / 512 (MiB)",
                               "wall 512/32", "bar <= 1.2", "measured"], mrows, "lrrrrrrrrll")
    text = "\n".join([
        "## 3. Simulation speed and memory",
        "",
        f"Command: `{COMMAND}`",
        "",
        "Machines: 2-core CPUs shared with other jobs, 1 torch thread (the command's default). Each row says when, "
        "at which snnconv commit and on which CPU it was measured; a run replaces only the rows of the models it "
        "measured, and ratios compare runs "
        "within one row only (rows from different CPUs or loads are not comparable with each other).",
        "",
        f"Speed: one batch of {BATCH} test images, CPU, default pipeline, T = {T_SPEED}; the ANN column times "
        f"{T_SPEED} consecutive ANN forward passes of the source network (so the ratio is SNN / (T x ANN)); "
        f"medians of {_repeats(speed)} alternating repetitions after a warm-up. `SNN` is the "
        "engine as `snnconv.evaluate` runs it (with spike and synaptic-operation statistics); `bare` is "
        "`Engine.run_batch` without statistics. `torch ops`: the same two runs, in the same process and "
        "alternation, with the neurons and max-pool gates run as torch ops instead of the fused CPU loops "
        "(docs/design.md, \"Fused CPU loops\"; what the engine does without numba or on CUDA). Rows named "
        "`MODEL-signed` convert with signed spikes (`--signed-spikes`, not the default; measured with "
        f"`{COMMAND} --signed-spikes`). `chunk`: the steps simulated together, the automatic chunk "
        "`snnconv.evaluate` takes for a batch of this size (docs/design.md, \"Chunks\"; rows measured before "
        "2026-12-04 ran 8); `ratio, 8-step chunks`: the SNN run with 8 steps per chunk instead, in the same "
        "alternation. Bar: ratio <= 1.2.",
        "",
        speed_table,
        "",
        f"Memory: the model is converted once and saved; a fresh process per run loads the artifact, resets its peak-RSS mark (`/proc/self/clear_refs`), "
        f"simulates one batch of {BATCH} for T steps, and reports VmHWM (the peak during the simulation); ratio = "
        f"peak at T={T_MEMORY[1]} / peak at T={T_MEMORY[0]}. `life max RSS` is getrusage(RUSAGE_SELF).ru_maxrss "
        "of the whole child, artifact loading included. Bar: ratio <= 1.2.",
        "",
        memory_table,
    ])
    C.update_doc("speed_memory", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(C.ALL_MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--signed-spikes", action="store_true",
                        help="convert with signed spikes; rows are named MODEL-signed and kept beside the default ones")
    parser.add_argument("--render-only", action="store_true", help="rewrite docs/benchmarks.md from the CSV files")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--artifact", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.artifact, args.steps, args.threads)
        return
    if args.render_only:
        torch.set_num_threads(args.threads)  # the machine line reports the thread count of the measurement
        render(_read_rows("speed.csv"), _read_rows("memory.csv"))
        return
    torch.set_num_threads(args.threads)
    print(C.machine(), flush=True)
    speed, memory = [], []
    for model in args.models.split(","):
        s = measure_speed(model, args.repeats, args.threads, args.signed_spikes)
        print(f"[{model}] speed: 32xANN {s['ann_T_forwards_s']:.2f}s SNN {s['snn_s']:.2f}s bare {s['snn_bare_s']:.2f}s "
              f"ratio {s['ratio']:.2f} (bare {s['ratio_bare']:.2f})", flush=True)
        speed.append(s)
        m = measure_memory(model, s.pop("network"), args.threads)
        print(f"[{model}] memory: " + "; ".join(f"T={r['T']} peak {r['hwm_kb'] / 1024:.0f} MiB (before "
                                                f"{r['rss_before_kb'] / 1024:.0f})" for r in m), flush=True)
        memory += m
    C.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = {"date": C.today(), "snnconv": C.git_head(), "cpu": C.cpu_name()}
    run = {row_name(model, args.signed_spikes) for model in args.models.split(",")}
    speed = [{**s, "torch": torch.__version__, **stamp} for s in speed]
    memory = [{**m, **stamp} for m in memory]
    # rows of models not measured in this run stay, with their own date
    speed = [r for r in _read_rows("speed.csv") if r["model"] not in run] + speed
    memory = [r for r in _read_rows("memory.csv") if r["model"] not in run] + memory
    _write_rows("speed.csv", SPEED_FIELDS, speed)
    _write_rows("memory.csv", MEMORY_FIELDS, memory)
    render(speed, memory)


if __name__ == "__main__":
    main()
