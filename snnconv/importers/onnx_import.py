"""ONNX sources: onnx2torch builds a GraphModule, which is then lowered to plain torch ops and checked
against onnxruntime.

onnx2torch keeps ONNX's dynamic style (shape arithmetic, slice bounds and pads arrive as tensors). The
lowering evaluates every node that does not depend on the input once (constant folding) and re-traces
the graph through onnx2torch's wrapper modules with those constants concrete, so what comes out is the
same vocabulary of torch ops and torch.nn modules that a PyTorch model traces to. After this, nothing
downstream knows the model came from ONNX.
"""
from __future__ import annotations

import operator
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.node import map_arg

from ..errors import ImportMismatchError, ModelLoadError, UnsupportedLayerError
from .model import ImportedModel

DEFAULT_TOLERANCE = 1e-4  # max |torch - onnxruntime| allowed, relative to max(1, max |onnxruntime logit|)


def _fold_constants(gm: torch.fx.GraphModule) -> dict[str, object]:
    """Values of every node that does not depend on a placeholder, computed once."""
    values: dict[str, object] = {}
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        inputs = node.all_input_nodes
        if not all(n.name in values for n in inputs):
            continue
        args = map_arg(node.args, lambda n: values[n.name])
        kwargs = map_arg(node.kwargs, lambda n: values[n.name])
        if node.op == "get_attr":
            values[node.name] = _fetch(gm, node.target)
        elif node.op == "call_module":
            with torch.no_grad():
                values[node.name] = gm.get_submodule(node.target)(*args, **kwargs)
        elif node.op == "call_function":
            with torch.no_grad():
                values[node.name] = node.target(*args, **kwargs)
        elif node.op == "call_method":
            with torch.no_grad():
                values[node.name] = getattr(args[0], node.target)(*args[1:], **kwargs)
    return values


def _fetch(module: nn.Module, target: str):
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _is_onnx2torch_wrapper(module: nn.Module) -> bool:
    return type(module).__module__.startswith("onnx2torch")


def _call_wrapper(module: nn.Module, args, kwargs):
    """Call an onnx2torch module while tracing. Its Div asks ``first.is_floating_point()``, which a traced
    activation cannot answer; ONNX Div requires both operands to share one type, so a folded operand
    answers for both (``x / 255`` or ``(x - mean) / std`` inside a model would otherwise fail to import)."""
    if (type(module).__name__ == "OnnxBinaryMathOperation" and module.math_op_function.__name__ == "_onnx_div"
            and not (module.broadcast == 1 and module.axis is not None) and not kwargs):
        known = [a for a in args if isinstance(a, torch.Tensor)]  # traced activations are Proxies, not tensors
        if known and known[0].is_floating_point():
            return torch.div(*args)
    return module(*args, **kwargs)


class _Replay(nn.Module):
    """Re-runs an onnx2torch graph with folded constants; traced by fx to produce the lowered graph."""

    def __init__(self, gm: torch.fx.GraphModule, constants: dict[str, object]):
        super().__init__()
        for name, child in gm.named_children():
            self.add_module(name, child)
        for name, tensor in gm.named_buffers(recurse=False):
            self.register_buffer(name, tensor)
        for name, param in gm.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self._source_graph = gm.graph
        self._constants = constants

    def forward(self, x):
        env: dict[str, object] = {}
        remaining = [x]
        for node in self._source_graph.nodes:
            if node.name in self._constants:
                env[node.name] = self._constants[node.name]
                continue
            args = map_arg(node.args, lambda n: env[n.name])
            kwargs = map_arg(node.kwargs, lambda n: env[n.name])
            if node.op == "placeholder":
                env[node.name] = remaining.pop(0)
            elif node.op == "call_module":
                try:
                    env[node.name] = _call_wrapper(self.get_submodule(node.target), args, kwargs)
                except torch.fx.proxy.TraceError as exc:
                    module = self.get_submodule(node.target)
                    raise UnsupportedLayerError(
                        f"ONNX node '{node.target}' ({type(module).__name__}) depends on the input's values, "
                        "not only its shape, and cannot be converted."
                    ) from exc
            elif node.op == "call_function":
                env[node.name] = node.target(*args, **kwargs)
            elif node.op == "call_method":
                env[node.name] = getattr(args[0], node.target)(*args[1:], **kwargs)
            elif node.op == "get_attr":
                env[node.name] = _fetch(self, node.target)
            elif node.op == "output":
                return args[0]
        raise ModelLoadError("The ONNX graph has no output node.")


class _LoweringTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if _is_onnx2torch_wrapper(m):
            return False
        return super().is_leaf_module(m, module_qualified_name)

    def create_arg(self, a):
        # onnx2torch computes slice bounds from folded constants: make them plain Python numbers
        if isinstance(a, np.generic) or (isinstance(a, torch.Tensor) and a.dim() == 0 and not a.is_floating_point()):
            return a.item()
        if isinstance(a, slice):
            return slice(*(self.create_arg(v) for v in (a.start, a.stop, a.step)))
        return super().create_arg(a)


def lower_onnx2torch_graph(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    if sum(node.op == "placeholder" for node in gm.graph.nodes) != 1:
        raise UnsupportedLayerError("The ONNX model has more than one input; snnconv converts single-input models.")
    replay = _Replay(gm, _fold_constants(gm))
    tracer = _LoweringTracer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnx2torch's slicing idiom warns on every trace
        graph = tracer.trace(replay)
    lowered = torch.fx.GraphModule(replay, graph)
    for node in lowered.graph.nodes:  # x[[slice, ...]] is deprecated indexing; x[(slice, ...)] means the same
        if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[1], list):
            node.args = (node.args[0], tuple(node.args[1]))
    lowered.graph.eliminate_dead_code()
    lowered.delete_all_unused_submodules()
    lowered.recompile()
    return lowered.eval()


def _graph_input_shape(model) -> tuple[int, ...] | None:
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UnsupportedLayerError(f"The ONNX model has {len(inputs)} inputs; snnconv converts single-input models.")
    dims = inputs[0].type.tensor_type.shape.dim
    per_sample = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
    return tuple(per_sample) if all(d for d in per_sample) else None


def load_onnx(path: Path | None = None, data: bytes | None = None, source: str | None = None):
    """Read and check an ONNX model from a file or bytes; returns the onnx ModelProto."""
    import onnx

    source = source or str(path)
    try:
        model = onnx.load_from_string(data) if data is not None else onnx.load(str(path))
        onnx.checker.check_model(model)
    except FileNotFoundError:
        raise ModelLoadError(f"Model file '{source}' does not exist.") from None
    except Exception as exc:
        raise ModelLoadError(f"'{source}' is not a valid ONNX model: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ") + ".") from exc
    return model


FALLBACK_OPSET = 17  # onnx2torch lags new opsets (e.g. AveragePool-19); older versions of an op often convert


def _default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def onnx_to_graph(model, source: str) -> torch.fx.GraphModule:
    import onnx
    import onnx2torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                gm = onnx2torch.convert(model)
            except NotImplementedError:
                if _default_opset(model) <= FALLBACK_OPSET:
                    raise
                gm = onnx2torch.convert(onnx.version_converter.convert_version(model, FALLBACK_OPSET))
    except NotImplementedError as exc:
        raise UnsupportedLayerError(f"ONNX model '{source}' uses an operator with no conversion rule: {exc}.") from exc
    except Exception as exc:
        raise ModelLoadError(f"ONNX model '{source}' could not be imported: {type(exc).__name__}: {exc}.") from exc
    return lower_onnx2torch_graph(gm)


def max_abs_difference_to_onnxruntime(model_bytes: bytes, graph: torch.fx.GraphModule, batch: torch.Tensor) -> tuple[float, float]:
    """(max |torch - onnxruntime|, max |onnxruntime|) on ``batch``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    reference = session.run(None, {input_name: batch.detach().cpu().numpy().astype(np.float32)})[0]
    with torch.no_grad():
        ours = graph(batch.cpu()).detach().numpy()
    if ours.shape != reference.shape:
        raise ImportMismatchError(
            f"The imported graph outputs shape {tuple(ours.shape)} where onnxruntime gives {tuple(reference.shape)}."
        )
    return float(np.abs(ours - reference).max()), float(np.abs(reference).max())


def freeze_batch_dependent_reshapes(model, per_sample_shape: tuple[int, ...]):
    """Replace Reshape targets computed from the input's shape by constants with a -1 batch entry.

    ``x.view(x.size(0), -1)`` exports as Shape -> Gather -> Concat -> Reshape, whose target fx cannot trace.
    onnxruntime runs the model at batch sizes 1 and 2; when only the leading entry of a target follows the
    batch, the target becomes the constant [-1, *per-sample output shape]. The lowered graph then reshapes
    by the live batch size, which also lets the time engine fold time steps into the batch.
    """
    import onnx
    import onnxruntime
    from onnx import helper, numpy_helper

    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    targets = [node for node in model.graph.node if node.op_type == "Reshape" and node.input[1] not in constants]
    if not targets:
        return model
    inferred = onnx.shape_inference.infer_shapes(model)
    elem_types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    wanted = {node.input[1]: onnx.TensorProto.INT64 for node in targets}
    wanted.update({node.output[0]: elem_types.get(node.output[0], onnx.TensorProto.FLOAT) for node in targets})
    for name, elem_type in wanted.items():
        if name not in existing:
            probe.graph.output.append(helper.make_tensor_value_info(name, elem_type, None))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feed = session.get_inputs()[0].name
    runs = [dict(zip(names, session.run(None, {feed: np.zeros((batch, *per_sample_shape), np.float32)})))
            for batch in (1, 2)]
    for index, node in enumerate(targets):
        one, two = runs[0][node.input[1]], runs[1][node.input[1]]
        if one.shape != two.shape or not (np.count_nonzero(one != two) == 1 and one[0] == 1 and two[0] == 2):
            continue  # only a leading batch entry is understood; anything else stays dynamic and is reported
        frozen = np.array([-1, *runs[0][node.output[0]].shape[1:]], dtype=np.int64)
        name = f"snnconv_frozen_reshape_{index}"
        model.graph.initializer.append(numpy_helper.from_array(frozen, name))
        node.input[1] = name
    return model


def import_onnx(path: Path | None, example: torch.Tensor | None, *, data: bytes | None = None, source: str | None = None,
                tolerance: float = DEFAULT_TOLERANCE, source_format: str = "onnx", source_hash: str | None = None) -> ImportedModel:
    """Import an ONNX model and check it against onnxruntime on ``example`` (a calibration batch)."""
    import hashlib

    source = source or str(path)
    model = load_onnx(path, data, source)
    model_bytes = model.SerializeToString()
    per_sample = _graph_input_shape(model) or (tuple(example.shape[1:]) if example is not None else None)
    if per_sample is not None:
        model = freeze_batch_dependent_reshapes(model, per_sample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = onnx_to_graph(model, source)
    check: dict = {}
    if example is not None:
        diff, scale = max_abs_difference_to_onnxruntime(model_bytes, graph, example)
        allowed = tolerance * max(1.0, scale)
        check = {"oracle": "onnxruntime", "samples": int(example.shape[0]), "max_abs_diff": diff,
                 "tolerance": allowed}
        if not diff <= allowed:
            raise ImportMismatchError(
                f"Imported ONNX model '{source}' differs from onnxruntime by {diff:.3g} (allowed {allowed:.3g}) "
                "on the calibration batch; the import is not faithful, please report the model."
            )
    return ImportedModel(graph=graph, source=source, source_format=source_format,
                         source_hash=source_hash or hashlib.sha256(model_bytes if path is None else Path(path).read_bytes()).hexdigest(),
                         input_shape=_graph_input_shape(model), import_check=check)
