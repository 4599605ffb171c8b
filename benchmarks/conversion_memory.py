"""Peak memory and time of `snnconv.convert` (default pipeline) for several conversion T, for one or more checkouts.

Each measurement runs in its own process, so the peak resident set size (ru_maxrss) is that conversion's
alone, read before and after the call. The default model is the shipped Fashion-MNIST VGG with the first 256
images of the shipped subset (the library's default calibration budget); other benchmark models (``--models
resnet20``) use the first 256 of their benchmark calibration images. The checkouts are imported from their own
source trees, one process each, so two commits are compared side by side; ``digest`` is a hash of the converted
network's parameters and buffers, equal when two checkouts convert to the same network bit for bit.

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
import torch  # noqa: E402

CHILD = r"""
import hashlib, json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[3]))
import snnconv
from snnconv.config import BalanceConfig, ConvertConfig
from snnconv.data import DataConfig, LabeledData, load_data
from snnconv.zoo import default_model
assert snnconv.__file__.startswith(sys.argv[1]), snnconv.__file__
T, name = int(sys.argv[2]), sys.argv[4]
if name == "vgg":
    calibration = load_data(DataConfig("builtin", split="train", limit=256))
    model = default_model()
else:
    sys.path.insert(1, sys.argv[5])
    import _common as C
    from snnconv.api import load_model
    x, y = C.calibration_set(name, 256)
    calibration = LabeledData(x=x, y=y, num_classes=10, description=f"{name} calibration")
    model = load_model(C.source_model(name), example=x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
network = snnconv.convert(model, calibration, ConvertConfig(time_steps=T, balance=BalanceConfig(time_steps=T)))
seconds = time.perf_counter() - start
digest = hashlib.sha256()
for key, value in sorted(network.graph.state_dict().items()):
    digest.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
print(json.dumps({"seconds": seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                  "rss_before_gb": before / 1e6, "digest": digest.hexdigest()[:16]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkouts", default=".", help="comma-separated source trees (default: this one)")
    parser.add_argument("--time-steps", default="32,64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="vgg", help="comma-separated: vgg (shipped), resnet, maxpool, resnet20")
    parser.add_argument("--tag", default="", help="results file conversion_memory_<tag>.json (default: no suffix)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the children's count, so that the machine line states what they ran
    rows = []
    here = str(Path(__file__).resolve().parent)
    for model in args.models.split(","):
        for t in (int(v) for v in args.time_steps.split(",")):
            for checkout in args.checkouts.split(","):  # checkouts side by side for each model and T
                root = str(Path(checkout).resolve())
                commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True, check=True).stdout.strip()
                out = subprocess.run([sys.executable, "-c", CHILD, root, str(t), str(args.threads), model, here],
                                     capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                row = {"checkout": root, "commit": commit, "model": model, "time_steps": t, **json.loads(out)}
                rows.append(row)
                print(f"{model} {commit} T={t}: convert {row['seconds']:.1f} s, peak RSS {row['peak_rss_gb']:.2f} GB "
                      f"(before converting {row['rss_before_gb']:.2f} GB), digest {row['digest']}", flush=True)
    path = C.RESULTS / (f"conversion_memory_{args.tag}.json" if args.tag else "conversion_memory.json")
    path.write_text(json.dumps({"command": " ".join(["benchmarks/conversion_memory.py"] + sys.argv[1:]),
                                "machine": C.machine(), "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
