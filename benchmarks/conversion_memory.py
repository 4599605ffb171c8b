"""Peak memory and time of `snnconv.convert` (default pipeline) for several conversion T, for one or more checkouts.

Each measurement runs in its own process, so the peak resident set size (ru_maxrss) is that conversion's
alone, read before and after the call. The model is the shipped Fashion-MNIST VGG and the calibration data
the first 256 images of the shipped subset, the library's default calibration budget; the checkouts are
imported from their own source trees, one process each, so two commits are compared side by side.

    /work/venv/bin/python benchmarks/conversion_memory.py --checkouts /work/wt-old,. --time-steps 32,64
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[3]))
import snnconv
from snnconv.config import BalanceConfig, ConvertConfig
from snnconv.data import DataConfig, load_data
from snnconv.zoo import default_model
assert snnconv.__file__.startswith(sys.argv[1]), snnconv.__file__
T = int(sys.argv[2])
calibration = load_data(DataConfig("builtin", split="train", limit=256))
model = default_model()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
snnconv.convert(model, calibration, ConvertConfig(time_steps=T, balance=BalanceConfig(time_steps=T)))
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                  "rss_before_gb": before / 1e6}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkouts", default=".", help="comma-separated source trees (default: this one)")
    parser.add_argument("--time-steps", default="32,64")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for checkout in args.checkouts.split(","):
        root = str(Path(checkout).resolve())
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        for t in (int(v) for v in args.time_steps.split(",")):
            out = subprocess.run([sys.executable, "-c", CHILD, root, str(t), str(args.threads)], capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]
            row = {"checkout": root, "commit": commit, "time_steps": t, **json.loads(out)}
            rows.append(row)
            print(f"{commit} T={t}: convert {row['seconds']:.1f} s, peak RSS {row['peak_rss_gb']:.2f} GB "
                  f"(before converting {row['rss_before_gb']:.2f} GB)", flush=True)
    path = C.RESULTS / "conversion_memory.json"
    path.write_text(json.dumps({"command": " ".join(["benchmarks/conversion_memory.py"] + sys.argv[1:]),
                                "machine": C.machine(), "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
