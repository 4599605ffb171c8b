"""Which threshold a layer cut to T_l should get (docs/teas.md, section 4): one TEAS allocation held fixed, the
cut layers' thresholds set by the mse search for T_l, 2 T_l or T_l / 2, or left as balanced for the base T;
each variant recalibrated for the windows as TEAS does, then evaluated on the same test images.

    /work/venv/bin/python benchmarks/teas_thresholds.py --model resnet \
        --windows '{"stem_2": 4, "layer1_relu1": 2, "layer1_relu2": 2, "layer2_relu1": 1, "layer2_relu2": 2, "layer3_relu1": 1, "layer3_relu2": 16}'

(that allocation is what TEAS chose for the Fashion-MNIST ResNet-style model with ``--avg-t-budget 4`` and the
thresholds kept). Prints one line per variant; nothing is written.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import _common as C  # noqa: E402

import snnconv  # noqa: E402
import snnconv.zoo  # noqa: E402,F401
from snnconv.api import load_model  # noqa: E402
from snnconv.compress import uniform_steps_matching  # noqa: E402
from snnconv.config import ConvertConfig, SimulationConfig  # noqa: E402
from snnconv.engine import Engine  # noqa: E402
from snnconv.stages.teas import WindowSetup, WindowThresholds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet")
    parser.add_argument("--windows", required=True, help="JSON: neuron layer -> T_l (all layers)")
    parser.add_argument("--base-t", type=int, default=32)
    parser.add_argument("--limit", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    windows, base = json.loads(args.windows), args.base_t
    cut = {name: steps for name, steps in windows.items() if steps != base}
    cal, test = C.training_data(args.model), C.test_data(args.model, args.limit)
    network = snnconv.convert(load_model(C.source_model(args.model), example=cal.x), cal,
                              ConvertConfig(time_steps=base, balance=C.balance(base, True)))
    simulation = SimulationConfig(time_steps=base)
    uniform = snnconv.evaluate(network, test, simulation)
    print(f"{args.model}: uniform T={base} {uniform.simulation.accuracy_at(base):.2f} %, mean T_l "
          f"{sum(windows.values()) / len(windows):.2f}, {args.limit} test images")
    for label, levels in (("thresholds of the base window", None), ("mse search for T_l", lambda t: t),
                          ("mse search for 2 T_l", lambda t: 2 * t), ("mse search for T_l / 2", lambda t: max(1, t // 2))):
        variant = copy.deepcopy(network)
        variant.layer_time_steps = dict(cut)
        if levels is not None:
            WindowThresholds(variant, cal).settle(windows, base, levels)
        # TEAS's own recalibration for the windows (its thresholds are set above, hence no WindowThresholds here)
        WindowSetup(variant, Engine(variant.graph), cal.x[:variant.config.calibration_samples], base, 8, "linear",
                    None, calibrated_trials=False).settle(windows)
        accuracy = snnconv.evaluate(variant, test, simulation).simulation.accuracy_at(base)
        print(f"  {label}: {accuracy:.2f} % (uniform T of equal accuracy: {uniform_steps_matching(uniform, accuracy)})",
              flush=True)


if __name__ == "__main__":
    main()
