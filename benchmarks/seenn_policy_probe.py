"""Why SEENN-II misses the 2x bar on converted networks: what an exit policy that sees only the image can learn.

The SEENN benchmark (seenn_bench.py) measures SEENN-II as the product trains it. This probe asks where the
limit lies, offline on recorded traces (every step's running output, no exits; the offline answer equals the
engine's, tests/test_seenn.py). Per model, the default conversion for T = 32, exit points every 4 steps as
in seenn_bench.py, and the same reward, weighting and optimizer (Adam lr 1e-3, weight decay 5e-4, cosine,
batch 128). Policies:

- ``image``: the product's width-8 ResNet-8-like policy on the image, trained on N training images
  (N = the seenn_bench.py setting, and 4x more), 30 epochs;
- ``image, unseen``: the same network trained on unseen test images (from 5000 on in the seeded permutation,
  never evaluation images), where the SNN is no more accurate than on the evaluation images;
- ``ANN logits``: a 2-layer MLP (64 hidden) on the sorted softmax and sorted logits of the ANN the network
  was converted from, trained on the larger training set, 10 epochs. The ANN's output is a function of the
  image that any image policy could at best learn, and the strongest image-only signal of difficulty we have.

Each policy is evaluated on the evaluation images (the first ``--limit`` of the seeded test permutation) and,
to show the generalization gap, on its own training images. ``equal T`` = smallest fixed t within 0.1 points
of the policy's accuracy on the fixed-T curve of the evaluation images; ``step ratio`` = equal T / mean exit step.

    /work/venv/bin/python benchmarks/seenn_policy_probe.py --models vgg
    /work/venv/bin/python benchmarks/seenn_policy_probe.py --models resnet20 --limit 2000 --unseen 2000 --train 2500
"""
from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import _common as C  # noqa: E402

import snnconv  # noqa: E402
from snnconv import artifacts  # noqa: E402
from snnconv.api import load_model  # noqa: E402
from snnconv.config import ConvertConfig  # noqa: E402
from snnconv.metrics.summary import first_step_within  # noqa: E402
from snnconv.stages.seenn import (ExitTrace, PolicyNet, exit_points, policy_exit_steps, policy_loss,  # noqa: E402
                                  record_trace, sample_weights)
from snnconv.training import TrainConfig, fit  # noqa: E402

COMMAND = "/work/venv/bin/python benchmarks/seenn_policy_probe.py"
BASE_T = 32
POLICY_CHUNK = 4
BETAS = (0.5, 2.0, 5.0)


def ann_features(ann: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Sorted softmax and sorted logits (scaled by 1/10) of the ANN: what it says about how sure it is."""
    with torch.no_grad():
        logits = torch.cat([ann(x[i:i + 500]) for i in range(0, len(x), 500)])
    ordered = logits.sort(-1, descending=True).values
    return torch.cat([torch.softmax(ordered, -1), ordered / 10], -1)


def ann_policy(features: int, choices: int) -> nn.Module:
    return nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, choices))


def exit_steps(policy: nn.Module, inputs: torch.Tensor, points: list[int]) -> torch.Tensor:
    if isinstance(policy, PolicyNet):
        return policy_exit_steps(policy, inputs, points)
    with torch.no_grad():
        return torch.tensor(points)[policy.eval()(inputs).argmax(-1)]


def probe(name: str, make_policy, inputs: torch.Tensor, trace: ExitTrace, eval_inputs: torch.Tensor,
          eval_trace: ExitTrace, points: list[int], beta: float, epochs: int, log) -> dict:
    correct = trace.correct()[:, torch.tensor(points) - 1]
    torch.manual_seed(0)
    policy = make_policy()
    start = time.perf_counter()
    fit(policy, [inputs, correct, sample_weights(correct)], lambda m, b: policy_loss(m(b[0]), b[1], b[2], beta),
        TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, optimizer="adam", weight_decay=5e-4))
    accuracy, mean_step = eval_trace.outcome(exit_steps(policy, eval_inputs, points))
    own_accuracy, own_mean_step = trace.outcome(exit_steps(policy, inputs, points))
    curve = [100.0 * float(c) for c in eval_trace.correct().double().mean(0)]
    t = first_step_within(curve, accuracy)
    row = {"policy": name, "train_samples": len(inputs), "epochs": epochs, "beta": beta,
           "accuracy_pct": accuracy, "mean_exit_step": mean_step, "equal_accuracy_t": t,
           "step_ratio": t / mean_step if t else None,
           "own_accuracy_pct": own_accuracy, "own_mean_exit_step": own_mean_step,
           "own_fixed_accuracy_pct": trace.full_accuracy_pct(),
           "train_s": time.perf_counter() - start}
    log(f"{name} (n={len(inputs)}, beta {beta:g}): {accuracy:.2f} % at {mean_step:.2f} (equal T {t}); "
        f"on its training images {own_accuracy:.2f} % at {own_mean_step:.2f}")
    return row


def run(model: str, limit: int, unseen: int, train: int, log, artifact: str | None = None) -> dict:
    cal = C.training_data(model)
    imported = load_model(C.source_model(model), example=cal.x)
    if artifact:  # e.g. a `compress --method seenn --finetune` output: its fine-tuned SNN (the exit rule is unused)
        network = artifacts.load(artifact)
    else:
        network = snnconv.convert(imported, cal,
                                  ConvertConfig(time_steps=BASE_T, balance=C.balance(BASE_T, True)))
    splits = {"evaluation": C.test_data(model, limit),
              "unseen": C.test_data(model, C.UNSEEN_TEST_START + unseen, start=C.UNSEEN_TEST_START),
              "training": C.training_data(model, 4 * train)}
    traces = {}
    for split, data in splits.items():
        traces[split] = record_trace(network, data, chunk_steps=POLICY_CHUNK)
        log(f"[{model}] traced {len(data)} {split} images")
    points = exit_points(traces["evaluation"], POLICY_CHUNK)
    px, ev_x, ev_trace = splits["training"].x, splits["evaluation"].x, traces["evaluation"]
    shape = tuple(ev_x.shape[1:])

    def image_policy():
        return PolicyNet(shape, len(points), 8)

    rows = []
    for beta in BETAS:
        rows.append(probe("image", image_policy, px[:train], traces["training"].rows(0, train), ev_x, ev_trace,
                          points, beta, 30, log))
        rows.append(probe("image", image_policy, px, traces["training"], ev_x, ev_trace, points, beta, 30, log))
        rows.append(probe("image, unseen", image_policy, splits["unseen"].x, traces["unseen"], ev_x, ev_trace,
                          points, beta, 30, log))
    ann = imported.graph.eval()
    features, ev_features = ann_features(ann, px), ann_features(ann, ev_x)
    for beta in BETAS:
        rows.append(probe("ANN logits", lambda: ann_policy(features.shape[1], len(points)), features,
                          traces["training"], ev_features, ev_trace, points, beta, 10, log))
    curve = [100.0 * float(c) for c in ev_trace.correct().double().mean(0)]
    return {"model": model, "base_t": network.time_steps, "points": points, "samples": limit, "unseen_samples": unseen,
            "artifact": artifact,
            "artifact_summary": artifacts.read_manifest(artifact)["summary"] if artifact else None,
            "fixed_curve_pct": curve, "rows": rows,
            "split_fixed_accuracy_pct": {s: t.full_accuracy_pct() for s, t in traces.items()},
            "date": C.today(), "machine": C.machine(), "snnconv": C.git_head(), "torch": torch.__version__}


def render(results: list[dict]) -> None:
    lines = ["### Why SEENN-II misses the bar: what an image-only exit policy can learn", "",
             f"Command: `{COMMAND} --models <model>` (ResNet-20: `--limit 2000 --unseen 2000 --train 2500`; results: "
             "`benchmarks/results/seenn-policy-probe_<model>.json`). " + C.machines_sentence(results), "",
             "Offline on traces of the default conversion for T = 32 (no exits; every step's running output), exit "
             "points every 4 steps, the reward and optimizer of the SEENN benchmark above. `image`: the product's "
             "width-8 ResNet-8-like policy, 30 epochs, trained on training images or on unseen test images "
             "(`image, unseen`). `ANN logits`: a 2-layer MLP on the sorted softmax and logits of the ANN the "
             "network was converted from (10 epochs): the strongest image-only signal we have of how hard an image "
             "is. `own images` = the same policy on the images it was trained on, against the fixed-T accuracy "
             "there. `equal T` = smallest fixed t within 0.1 points on the evaluation images; `step ratio` = equal T "
             "/ mean exit step (the bar is 2). `resnet20 (finetuned-cli)`: the same probe on the SNN of an artifact "
             "instead of the default conversion (`--artifact B --tag finetuned-cli`, B the output of `snnconv compress "
             "A --method seenn --finetune --epochs 3` of docs/seenn.md: the network fine-tuned for 3 epochs on every "
             "step's output; its SEENN-I exit rule is not used).", ""]
    header = ["model", "policy", "train images", "beta", "accuracy (%)", "mean exit step", "equal T", "step ratio",
              "own images: accuracy (%) at mean step", "own images: fixed T = 32 (%)"]
    body = []
    for r in results:
        for x in r["rows"]:
            body.append([r["model"], x["policy"], str(x["train_samples"]), f"{x['beta']:g}", f"{x['accuracy_pct']:.2f}",
                         f"{x['mean_exit_step']:.2f}", str(x["equal_accuracy_t"] or f"> {r['base_t']}"),
                         f"{x['step_ratio']:.2f}" if x["step_ratio"] else "-",
                         f"{x['own_accuracy_pct']:.2f} at {x['own_mean_exit_step']:.2f}",
                         f"{x['own_fixed_accuracy_pct']:.2f}"])
    lines += [C.md_table(header, body), ""]
    C.update_doc("seenn_policy", "\n".join(lines))


def main() -> None:
    parser = C.model_parser(__doc__, "vgg,resnet")
    parser.add_argument("--limit", type=int, default=2000, help="evaluation images")
    parser.add_argument("--unseen", type=int, default=5000, help="unseen test images (from 5000 on) for a policy")
    parser.add_argument("--train", type=int, default=5000, help="training images (the large set is 4x this)")
    parser.add_argument("--artifact", help="an artifact of --models to probe instead of its default conversion")
    args = parser.parse_args()
    log = partial(print, flush=True)
    C.measure_from_args(args, "seenn-policy-probe",
                        lambda model: run(model, args.limit, args.unseen, args.train, log, args.artifact), render)


if __name__ == "__main__":
    main()
