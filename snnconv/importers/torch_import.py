"""PyTorch sources: an nn.Module, a factory spec, a state dict plus a factory, a TorchScript file,
or (only with an explicit opt-in) a pickled module."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import pickle
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ModelLoadError, UnsafeModelError
from .model import ImportedModel, require_finite
from .tracing import trace_module


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """Hash of a module's parameters and buffers in name order: identifies in-memory sources."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def is_factory_spec(text: str) -> bool:
    """``pkg.module:callable`` or ``path/file.py:callable`` (a Windows drive letter is not a spec)."""
    if ":" not in text:
        return False
    left, _, right = text.rpartition(":")
    return bool(left) and right.isidentifier() and not (len(left) == 1 and left.isalpha())


def resolve_factory(spec: str) -> Callable[[], nn.Module]:
    """Import the callable named by ``pkg.module:name`` or ``path/file.py:name``."""
    location, _, name = spec.rpartition(":")
    try:
        if location.endswith(".py"):
            path = Path(location)
            if not path.is_file():
                raise ModelLoadError(f"Factory file '{location}' does not exist; check the path in '{spec}'.")
            module_name = f"snnconv_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(location)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"Cannot import '{location}' for factory '{spec}': {type(exc).__name__}: {exc}.") from exc
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ModelLoadError(f"'{name}' in '{location}' is not a callable; a factory spec names a function returning an nn.Module.")
    return factory


def build_from_factory(spec: str) -> nn.Module:
    model = resolve_factory(spec)()
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"Factory '{spec}' returned {type(model).__name__}, not a torch.nn.Module.")
    return model.eval()


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())


def _check_torch_file(path: Path) -> None:
    """torch.save writes a zip archive, or (legacy format) a pickle that opens with the protocol byte 0x80.
    Anything else is not a PyTorch file; reporting it as an unsafe pickle would invite unpickling garbage."""
    with open(path, "rb") as handle:
        legacy_pickle = handle.read(1) == b"\x80"
    if not (legacy_pickle or _is_torch_archive(path)):
        raise ModelLoadError(f"'{path}' is corrupt or not a PyTorch file (neither a torch.save zip archive nor a "
                             "legacy torch pickle); save the model again with torch.save or torch.jit.save.")


def _is_torch_archive(path: Path) -> bool:
    """A zip archive as torch.save and torch.jit.save write it: one top folder holding data.pkl."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/")[1:] == ["data.pkl"] for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _first_mismatch(model: nn.Module, state: dict) -> str | None:
    """The first difference between a state dict and an architecture, as a phrase."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            return f"the architecture has '{key}' but the file does not"
        shape = getattr(state[key], "shape", None)  # a weights_only load holds tensors, but say so if not
        if shape != tensor.shape:
            found = list(shape) if shape is not None else type(state[key]).__name__
            return f"'{key}' has shape {found} in the file but {list(tensor.shape)} in the architecture"
    unexpected = next((key for key in state if key not in expected), None)
    return None if unexpected is None else f"the file has '{unexpected}' but the architecture does not"


def _load_state_dict(path: Path) -> dict:
    _check_torch_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeModelError(
            f"'{path}' holds a pickled object, not a state dict; loading it would run code, so pass "
            "--allow-pickle if you trust the file, or save a state dict and name its architecture with --arch."
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"Cannot read '{path}' as a PyTorch file: {type(exc).__name__}: {exc}.") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # common training-checkpoint layout
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"'{path}' does not hold a state dict of tensors.")
    return state


def load_torch_file(path: Path, arch: str | None, allow_pickle: bool) -> tuple[nn.Module | torch.jit.ScriptModule, str]:
    """Returns the module and its format ("pytorch" or "torchscript")."""
    if not path.is_file():
        raise ModelLoadError(f"Model file '{path}' does not exist.")
    if arch is not None:
        model = build_from_factory(arch)
        state = _load_state_dict(path)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            # torch's message is a header line plus one line per problem; the sentence carries the first one
            lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
            first = _first_mismatch(model, state) or (lines[0] if lines else str(exc)).rstrip(".")
            raise ModelLoadError(f"State dict '{path}' does not fit architecture '{arch}': {first}; "
                                 "check --arch or the file.") from exc
        return model.eval(), "pytorch"
    if _is_torchscript_archive(path):
        try:
            with warnings.catch_warnings():  # torch deprecates TorchScript on every load; the user cannot act on it
                warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:
            raise ModelLoadError(f"TorchScript file '{path}' is corrupt: {type(exc).__name__}: {exc}.") from exc
        require_finite(module.state_dict().items(), str(path))
        return module, "torchscript"
    _check_torch_file(path)
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not allow_pickle:
            raise UnsafeModelError(
                f"'{path}' is a pickled model and unpickling runs code; pass --allow-pickle if you trust it, "
                "or save a state dict and name its architecture with --arch."
            ) from None
        try:
            model = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelLoadError(f"Cannot unpickle '{path}': {type(exc).__name__}: {exc}.") from exc
        if not isinstance(model, nn.Module):
            raise ModelLoadError(f"'{path}' unpickles to {type(model).__name__}, not a torch.nn.Module.")
        return model.eval(), "pytorch"
    except Exception as exc:
        raise ModelLoadError(f"Cannot read '{path}' as a PyTorch file: {type(exc).__name__}: {exc}.") from exc
    raise ModelLoadError(f"'{path}' holds a state dict; name its architecture with --arch module:factory.")


def import_torch_module(module: nn.Module, source: str, source_hash: str | None = None) -> ImportedModel:
    graph = trace_module(module, source)
    return ImportedModel(graph=graph, source=source, source_format="pytorch",
                         source_hash=source_hash or state_dict_sha256(module))


def torchscript_to_onnx_bytes(module: torch.jit.ScriptModule, example: torch.Tensor, source: str) -> bytes:
    """TorchScript cannot be fx-traced; its exported ONNX graph goes through the ONNX importer instead."""
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():  # a ScriptMethod has no Python signature, so the exporter warns every time
            warnings.filterwarnings("ignore", "no signature found for", UserWarning)
            torch.onnx.export(module, (example,), buffer, dynamo=False, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              opset_version=17)
    except Exception as exc:
        raise ModelLoadError(f"TorchScript model '{source}' cannot be exported for import: {type(exc).__name__}: {exc}.") from exc
    return buffer.getvalue()
