"""How much can any per-layer allocation of time steps gain over a uniform T? A measured error model.

TEAS (teas_bench.py) misses its 3x bar: its average T_l is at most 1.5-2.2x below the uniform T of equal
accuracy. This benchmark asks what the best allocation could reach on the same networks, from a model of how
the output error depends on the windows T_l, fitted to measurements and checked against others.

Measured on the held-out split TEAS uses (1000 of 2000 training images, the default conversion for T = 32,
thresholds searched again for each window and calibration redone, as in every TEAS trial): the output
divergence D (mean total-variation distance of the output distribution from the uniform network's, TEAS's
``cut_divergence``) when

- one layer l runs T_l = 16, 8 or 4 steps and every other layer T = 32 (D_l(T_l));
- two layers run 8 steps (every pair);
- every layer runs 16 or 8 steps (uniform).

Model: each layer adds an independent error of size a_l T_l^-gamma, so the errors add in quadrature,
D^2 = sum_l a_l^2 T_l^-2gamma. The pairs and the uniform runs test the quadrature sum against the plain sum;
gamma is fitted per layer from D_l(4) / D_l(16). Under the model the allocation with the least mean T_l at a
given error has T_l proportional to a_l^q, q = 2 / (2 gamma + 1) (Lagrange), and its mean T_l is below the
uniform T of the same error by

    ratio = L (sum a_l^2)^(1 / 2gamma) / (sum a_l^q)^(1 + 1 / 2gamma),

which is 1 when all layers are equally sensitive and at most L (one layer holds all the error). a_l is taken
from D_l(4) (a common factor cancels). The ratio is an upper bound on what TEAS's search can find, if the model
holds.

    /work/venv/bin/python benchmarks/teas_error_model.py --models resnet,vgg
"""
from __future__ import annotations

import itertools
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import _common as C  # noqa: E402

import snnconv  # noqa: E402
from snnconv.api import load_model  # noqa: E402
from snnconv.config import ConvertConfig  # noqa: E402
from snnconv.engine import Engine  # noqa: E402
from snnconv.stages.teas import WindowSetup, WindowThresholds, _divergence, _Runner  # noqa: E402

COMMAND = "/work/venv/bin/python benchmarks/teas_error_model.py"
BASE_T = 32
CUTS = (16, 8, 4)
PAIR_T = 8
GAMMAS = (0.5, 0.7, 1.0)
TEAS_IMAGES = 2000  # as the rows tagged `2000 TEAS images` of docs/benchmarks.md section 4


def best_ratio(sizes: list[float], gamma: float) -> float:
    """Uniform T / least mean T_l at equal error, for error sizes a_l and exponent gamma (module docstring)."""
    q = 2 / (2 * gamma + 1)
    squares, powers = sum(a * a for a in sizes), sum(a ** q for a in sizes)
    return len(sizes) * squares ** (1 / (2 * gamma)) / powers ** (1 + 1 / (2 * gamma))


def chosen_pairs(names: list[str], limit: int | None) -> list[tuple[str, str]]:
    """Every pair of layers, or ``limit`` of them spread evenly over the list of all pairs (deep networks)."""
    pairs = list(itertools.combinations(names, 2))
    if limit is None or limit >= len(pairs):
        return pairs
    return [pairs[round(i * (len(pairs) - 1) / max(limit - 1, 1))] for i in range(limit)]


def measure(model: str, log, teas_images: int = TEAS_IMAGES, max_pairs: int | None = None) -> dict:
    cal, calibration = C.training_data(model), C.training_data(model, teas_images)  # as teas_bench.py
    network = snnconv.convert(load_model(C.source_model(model), example=cal.x), cal,
                              ConvertConfig(time_steps=BASE_T, balance=C.balance(BASE_T, True)))
    engine = Engine(network.graph, "cpu")
    holdout, _ = calibration.split(0.5, 0)  # TeasConfig's defaults: holdout_fraction 0.5, seed 0
    setup = WindowSetup(network, engine, calibration.x[:network.config.calibration_samples], BASE_T, 8, "linear",
                        WindowThresholds(network, calibration), calibrated_trials=True)
    runner = _Runner(engine, holdout, BASE_T, 256, 8, "linear", setup)
    names = [name for name, _ in network.neuron_layers()]
    uniform = {name: BASE_T for name in names}
    _, reference = runner.run(uniform)
    start = time.perf_counter()

    def divergence(windows: dict[str, int]) -> float:
        _, out = runner.run({**uniform, **windows})
        value = _divergence(out, reference)
        log(f"[{model}] {windows if len(windows) < len(names) else 'all'}: D = {value:.4f} "
            f"({time.perf_counter() - start:.0f} s)")
        return value

    single = {name: {str(t): divergence({name: t}) for t in CUTS} for name in names}
    pairs = [{"layers": [a, b], "measured": divergence({a: PAIR_T, b: PAIR_T}),
              "quadrature": math.hypot(single[a][str(PAIR_T)], single[b][str(PAIR_T)]),
              "sum": single[a][str(PAIR_T)] + single[b][str(PAIR_T)]} for a, b in chosen_pairs(names, max_pairs)]
    everywhere = [{"steps": t, "measured": divergence({name: t for name in names}),
                   "quadrature": math.sqrt(sum(single[n][str(t)] ** 2 for n in names)),
                   "sum": sum(single[n][str(t)] for n in names)} for t in (16, 8)]
    sizes = [single[n]["4"] for n in names]
    return {"model": model, "base_t": BASE_T, "teas_images": teas_images, "holdout_samples": len(holdout),
            "layers": names, "single": single,
            "gamma_per_layer": {n: math.log(single[n]["4"] / single[n]["16"]) / math.log(4) for n in names},
            "pairs": pairs, "uniform_cuts": everywhere,
            "best_ratio": {f"{g:g}": best_ratio(sizes, g) for g in GAMMAS},
            "date": C.today(), "machine": C.machine(), "snnconv": C.git_head(), "torch": torch.__version__}


def _ratio_range(pairs: list[dict], key: str) -> str:
    ratios = [p[key] / p["measured"] for p in pairs]
    return f"{min(ratios):.2f}-{max(ratios):.2f} (mean {sum(ratios) / len(ratios):.2f})"


def render(results: list[dict]) -> None:
    lines = ["### What any per-layer allocation could gain: a measured error model", "",
             f"Command: `{COMMAND} --models <model>` (results: `benchmarks/results/teas-error-model_<model>.json`). "
             + C.machines_sentence(results), "",
             "Output divergence D from the uniform network (TEAS's `cut_divergence`) on TEAS's held-out split "
             f"(`images`: {TEAS_IMAGES} training images unless the row says otherwise, half held out; default "
             f"conversion for T = {BASE_T}; every cut with "
             "its thresholds searched again and calibration redone). Model: independent layer errors a_l T_l^-gamma "
             "that add in quadrature. `pairs`: predicted / measured D for every pair of layers (or `pairs` of them, "
             "spread evenly over all pairs: `--max-pairs`) cut to "
             f"{PAIR_T} steps, as a quadrature sum and as a plain sum of the single cuts. `uniform 16` / `uniform "
             "8`: the same for every layer cut. `gamma`: fitted per layer from D_l(4) / D_l(16). `best ratio`: "
             "uniform T / the least mean T_l at equal error under the model (a_l from D_l(4)), for gamma 0.5, 0.7 "
             "and 1; TEAS's bar asks for 3.", ""]
    header = ["model", "images", "layers", "pairs", "pairs: quadrature / measured", "pairs: sum / measured", "uniform 16 (quadrature, "
              "sum, measured)", "uniform 8 (quadrature, sum, measured)", "gamma (per layer)",
              "best ratio (gamma 0.5 / 0.7 / 1)"]
    body = []
    for r in results:
        cuts = {u["steps"]: u for u in r["uniform_cuts"]}
        gammas = list(r["gamma_per_layer"].values())
        body.append([r["model"], str(r.get("teas_images", TEAS_IMAGES)), str(len(r["layers"])), str(len(r["pairs"])),
                     _ratio_range(r["pairs"], "quadrature"),
                     _ratio_range(r["pairs"], "sum"),
                     *[f"{cuts[t]['quadrature']:.4f}, {cuts[t]['sum']:.4f}, {cuts[t]['measured']:.4f}" for t in (16, 8)],
                     f"{min(gammas):.2f}-{max(gammas):.2f}",
                     " / ".join(f"{r['best_ratio'][f'{g:g}']:.2f}" for g in GAMMAS)])
    lines += [C.md_table(header, body), ""]
    single_header = ["model", "layer"] + [f"D at T_l = {t}" for t in CUTS]
    single_rows = [[r["model"], n] + [f"{r['single'][n][str(t)]:.4f}" for t in CUTS]
                   for r in results for n in r["layers"]]
    lines += ["Single cuts (every other layer at T = 32):", "", C.md_table(single_header, single_rows), ""]
    lines += teas_run_bounds()
    C.update_doc("teas_error_model", "\n".join(lines))


def teas_run_bounds() -> list[str]:
    """The model's best ratio from the sensitivities stored TEAS runs measured (each layer cut to T/4 alone)."""
    body = []
    for path in sorted(C.RESULTS.glob("teas_*.json")):
        run = json.loads(path.read_text())
        sizes = [row["cut_divergence"] for row in run.get("rows", []) if "cut_divergence" in row]
        if "finetune" in path.name or not sizes or min(sizes) <= 0:
            continue
        body.append([run["model"], str(run["base_t"]), str(run["holdout"]), str(len(sizes)),
                     f"{max(sizes) / min(sizes):.1f}", " / ".join(f"{best_ratio(sizes, g):.2f}" for g in GAMMAS)])
    return ["The same bound from the sensitivities the TEAS runs above measured (`cut_divergence`: each layer cut "
            "to T/4 alone, on their held-out images; the CIFAR-10 ResNet-20 on 250 of them), taking the model as "
            "measured on the Fashion-MNIST models:", "",
            C.md_table(["TEAS run", "base T", "held-out images", "layers", "largest / smallest a_l",
                        "best ratio (gamma 0.5 / 0.7 / 1)"], body), ""]


def main() -> None:
    parser = C.model_parser(__doc__, "resnet,vgg")
    parser.add_argument("--teas-images", type=int, default=TEAS_IMAGES, help="training images, half held out")
    parser.add_argument("--max-pairs", type=int, default=None, help="measure this many pairs of layers, not all")
    args = parser.parse_args()
    C.measure_from_args(args, "teas-error-model", partial(measure, log=partial(print, flush=True),
                                                          teas_images=args.teas_images, max_pairs=args.max_pairs),
                        render)


if __name__ == "__main__":
    main()
