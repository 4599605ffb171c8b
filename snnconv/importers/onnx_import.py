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
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.node import map_arg

from ..errors import DataError, ImportMismatchError, ModelLoadError, UnsupportedLayerError
from .model import ImportedModel, non_finite_error

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


def _graph_input(model):
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UnsupportedLayerError(f"The ONNX model has {len(inputs)} inputs; snnconv converts single-input models.")
    return inputs[0]


def _declared_dims(model) -> list[int | None]:
    """The graph input's dims, batch first; None where a dim is symbolic or absent."""
    return [d.dim_value if d.HasField("dim_value") else None for d in _graph_input(model).type.tensor_type.shape.dim]


def _graph_input_shape(model) -> tuple[int, ...] | None:
    per_sample = _declared_dims(model)[1:]
    return tuple(per_sample) if all(d for d in per_sample) else None


def _check_example_fits(model, example: torch.Tensor, source: str, data_name: str) -> None:
    """Data whose per-sample shape contradicts the input's static dims fails inside onnxruntime with a message
    about indices; say which shapes disagree instead (symbolic dims accept anything)."""
    declared = _declared_dims(model)[1:]
    shape = tuple(example.shape[1:])
    if not declared or (len(shape) == len(declared) and all(d in (None, s) for d, s in zip(declared, shape))):
        return
    wanted = "(" + ", ".join("?" if d is None else str(d) for d in declared) + ")"
    raise DataError(f"{data_name} has samples of shape {shape} but the input of ONNX model '{source}' declares "
                    f"{wanted} per sample; check --data/--calib-data and --size.")


def _check_finite_initializers(model, source: str) -> None:
    """NaN weights would only surface as an onnxruntime mismatch of nan; name the tensor instead. A
    one-element infinite constant is a legitimate bound (Clip, a -inf Pad value), so only NaN counts there."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype.kind == "f" and (np.isnan(array).any() or (array.size > 1 and np.isinf(array).any())):
            raise non_finite_error(source, init.name)


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
        # onnx2torch names the operator as "operation_type='LSTM', version=7"
        found = re.search(r"operation_type='([^']+)', version=(\d+)", str(exc))
        what = f"operator {found[1]} (opset {found[2]})" if found else f"an operator it cannot import ({exc})"
        raise UnsupportedLayerError(f"ONNX model '{source}' uses {what}, which has no conversion rule; snnconv "
                                    "converts plain-ReLU CNNs, so replace it or open an issue asking for a "
                                    "handler.") from exc
    except Exception as exc:
        raise ModelLoadError(f"ONNX model '{source}' could not be imported: {type(exc).__name__}: {exc}.") from exc
    return lower_onnx2torch_graph(gm)


def _run_onnxruntime(session, batch: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """The first output on ``batch``; a model with a fixed batch size N only accepts N samples per run, so it
    gets chunks of N, the last one padded by repeating its final sample."""
    feed = session.get_inputs()[0].name
    if fixed_batch is None:
        return session.run(None, {feed: batch})[0]
    outputs = []
    for start in range(0, len(batch), fixed_batch):
        chunk = batch[start:start + fixed_batch]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], fixed_batch - len(chunk), axis=0)])
        outputs.append(session.run(None, {feed: padded})[0][:len(chunk)])
    return np.concatenate(outputs)


def max_abs_difference_to_onnxruntime(model_bytes: bytes, graph: torch.fx.GraphModule, batch: torch.Tensor,
                                      source: str, fixed_batch: int | None = None) -> tuple[float, float]:
    """(max |torch - onnxruntime|, max |onnxruntime|) on ``batch``; ``fixed_batch`` is the batch size the
    model's input declares, if any. The imported graph always runs on the whole batch: it must accept any
    batch size, because the time engine folds time steps into the batch."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    reference = _run_onnxruntime(session, batch.detach().cpu().numpy().astype(np.float32), fixed_batch)
    probe = batch.cpu()
    if fixed_batch is not None and len(probe) == fixed_batch:  # a batch size the export never saw, as in use
        probe = torch.cat([probe, probe[-1:]])
    try:
        with torch.no_grad():  # forward, not __call__: fx's __call__ prints a traceback to stderr on failure
            ours = graph.forward(probe).detach().numpy()[:len(batch)]
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if fixed_batch is None:
            raise ImportMismatchError(f"Imported ONNX model '{source}' fails on a batch that onnxruntime runs "
                                      f"({reason}); the import is not faithful, please report the model.") from exc
        raise ImportMismatchError(
            f"Imported ONNX model '{source}' was exported with a fixed batch size of {fixed_batch} and fails at "
            f"batch size {len(probe)} ({reason}); re-export it with a dynamic batch axis "
            "(torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))."
        ) from exc
    if ours.shape != reference.shape:
        raise ImportMismatchError(
            f"The imported graph outputs shape {tuple(ours.shape)} where onnxruntime gives {tuple(reference.shape)}."
        )
    return float(np.abs(ours - reference).max()), float(np.abs(reference).max())


def _input_dependent(model) -> set[str]:
    """Names of the tensors computed from the graph input."""
    reached = {_graph_input(model).name}
    for node in model.graph.node:  # ONNX nodes are stored in topological order
        if any(name in reached for name in node.input):
            reached.update(node.output)
    return reached


def release_fixed_batch(model, batch: int, source: str):
    """Make a model exported at a fixed batch size N (no dynamic axes) accept any batch size.

    The exporter folds ``x.size(0)`` into constant Reshape targets [N, ...]. A Reshape from [N, ...] to
    [N, ...] rearranges each sample's contiguous block the same way, so its target becomes [-1, *rest]; a
    Reshape that moves the batch axis cannot be freed and is refused. The input's batch dim becomes symbolic.
    Other batch-sized constants are caught by the onnxruntime comparison, which runs the import at another size.
    """
    import onnx
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {info.name: [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
              for info in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    live = _input_dependent(model)
    for index, node in enumerate(model.graph.node):
        if node.op_type != "Reshape" or node.input[0] not in live or node.input[1] in live:
            continue
        before, after = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not (before and after and before[0] == after[0] == batch and all(after[1:])):
            raise UnsupportedLayerError(
                f"ONNX model '{source}' was exported with a fixed batch size of {batch} and its Reshape node "
                f"'{node.name or node.output[0]}' does not keep the batch axis; re-export it with a dynamic batch "
                "axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))."
            )
        name = f"snnconv_batch_free_reshape_{index}"
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1, *after[1:]], dtype=np.int64), name))
        node.input[1] = name
    for info in (_graph_input(model), *model.graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].dim_param = "batch"  # replaces dim_value: the two are one protobuf oneof
    del model.graph.value_info[:]  # shapes inferred at batch N would contradict other batch sizes
    return model


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


def import_onnx(path: Path | None, example: torch.Tensor | None, *, data: bytes | None = None,
                source: str | None = None, tolerance: float = DEFAULT_TOLERANCE, source_format: str = "onnx",
                source_hash: str | None = None, data_name: str = "The calibration data") -> ImportedModel:
    """Import an ONNX model and check it against onnxruntime on ``example`` (a calibration batch, described
    by ``data_name`` in errors)."""
    import hashlib

    source = source or str(path)
    model = load_onnx(path, data, source)
    _check_finite_initializers(model, source)
    if example is not None:
        _check_example_fits(model, example, source, data_name)
    model_bytes = model.SerializeToString()  # onnxruntime checks the model as the user gave it
    fixed_batch = (_declared_dims(model) or [None])[0] or None
    if fixed_batch is not None:
        model = release_fixed_batch(model, fixed_batch, source)
    per_sample = _graph_input_shape(model) or (tuple(example.shape[1:]) if example is not None else None)
    if per_sample is not None:
        model = freeze_batch_dependent_reshapes(model, per_sample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = onnx_to_graph(model, source)
    check: dict = {}
    if example is not None:
        diff, scale = max_abs_difference_to_onnxruntime(model_bytes, graph, example, source, fixed_batch)
        allowed = tolerance * max(1.0, scale)
        check = {"oracle": "onnxruntime", "samples": int(example.shape[0]), "max_abs_diff": diff,
                 "tolerance": allowed}
        if not diff <= allowed:
            raise ImportMismatchError(
                f"Imported ONNX model '{source}' differs from onnxruntime by {diff:.3g} (allowed {allowed:.3g}) "
                "on the calibration batch; the import is not faithful, please report the model."
            )
    source_hash = source_hash or hashlib.sha256(model_bytes if path is None else Path(path).read_bytes()).hexdigest()
    return ImportedModel(graph=graph, source=source, source_format=source_format, source_hash=source_hash,
                         input_shape=_graph_input_shape(model), import_check=check)
