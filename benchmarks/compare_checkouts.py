"""The default pipeline of two snnconv checkouts on the same images: how far a change moved the numbers.

Each checkout runs in its own process with its own code first on sys.path: it converts the model with
``ConvertConfig()`` on the 1000 benchmark calibration images and evaluates the first ``--limit`` images of
the seeded test permutation at T = 32. Printed per checkout: its commit, accuracy after 8, 16 and 32 steps,
spikes and synaptic operations of the whole run.

    git worktree add --detach /tmp/before <commit>
    /work/venv/bin/python benchmarks/compare_checkouts.py /tmp/before . --model vgg --limit 2000
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys, torch
repo, model, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path[:0] = [repo + "/benchmarks", repo]
torch.set_num_threads(1)
import _common as C, snnconv
from snnconv.api import load_model
from snnconv.config import ConvertConfig, SimulationConfig
from snnconv.data import LabeledData
cx, cy = C.calibration_set(model)
tx, ty = C.test_order(model)
cal = LabeledData(x=cx, y=cy, num_classes=10, description=f"{model} calibration")
test = LabeledData(x=tx[:limit], y=ty[:limit], num_classes=10, description=f"{model} test[:{limit}]")
network = snnconv.convert(load_model(C.source_model(model), example=cx), cal, ConvertConfig())
sim = snnconv.evaluate(network, test, SimulationConfig(time_steps=32)).simulation
print(json.dumps({"commit": C.git_head(), "accuracy_pct": {t: sim.accuracy_at(t) for t in (8, 16, 32)},
                  "spikes": sum(layer.spikes for layer in sim.neuron_layers),
                  "synaptic_ops": sum(layer.synaptic_ops for layer in sim.synaptic_layers)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs=2, type=Path)
    parser.add_argument("--model", default="vgg")
    parser.add_argument("--limit", type=int, default=2000)
    args = parser.parse_args()
    for checkout in args.checkouts:
        run = subprocess.run([sys.executable, "-c", CHILD, str(checkout.resolve()), args.model, str(args.limit)],
                             capture_output=True, text=True, check=True)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{checkout}: {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
