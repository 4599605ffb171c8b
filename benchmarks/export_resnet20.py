"""Write the CIFAR-10 ResNet-20 ONNX weights as a PyTorch state dict for benchmarks/sj_models.ResNet20.

Run in the snnconv environment (it needs onnx and onnxruntime, which the SpikingJelly environment lacks):

    /work/venv/bin/python benchmarks/export_resnet20.py

The ONNX graph (BN already folded) has 19 convolutions in network order and one Gemm; their initializers are
copied in node order. The result is checked against onnxruntime on 512 test images (max |logit difference|
and identical predictions) before benchmarks/models/cifar10_resnet20.pt is written.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import _common as C  # noqa: E402
from sj_models import ResNet20  # noqa: E402

OUT = C.REPO / "benchmarks" / "models" / "cifar10_resnet20.pt"


def main() -> None:
    graph = onnx.load(str(C.CIFAR_ONNX)).graph
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    gemm = [n for n in graph.node if n.op_type == "Gemm"]
    model = ResNet20()
    names = ["conv1"] + [f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in range(3) for c in (1, 2)]
    assert len(convs) == len(names) == 19 and len(gemm) == 1
    state = {}
    for name, node in zip(names, convs):
        state[f"{name}.weight"] = weights[node.input[1]]
        state[f"{name}.bias"] = weights[node.input[2]]
    attrs = {a.name: a for a in gemm[0].attribute}
    w = weights[gemm[0].input[1]]
    state["linear.weight"] = w if "transB" in attrs and attrs["transB"].i == 1 else w.t().contiguous()
    state["linear.bias"] = weights[gemm[0].input[2]]
    model.load_state_dict(state, strict=True)
    model.eval()
    x, y = C.test_order("resnet20")
    x, y = x[:512], y[:512]
    session = onnxruntime.InferenceSession(str(C.CIFAR_ONNX), providers=["CPUExecutionProvider"])
    reference = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ours = model(x).numpy()
    diff = float(np.abs(ours - reference).max())
    same = bool((ours.argmax(1) == reference.argmax(1)).all())
    print(f"max |logit diff| vs onnxruntime on 512 images: {diff:.2e}; same predictions: {same}; "
          f"accuracy {100 * float((ours.argmax(1) == y.numpy()).mean()):.2f}")
    if diff > 1e-3 or not same:
        raise SystemExit("the PyTorch ResNet-20 does not reproduce the ONNX model")
    torch.save(model.state_dict(), OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
