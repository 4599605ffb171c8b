"""Artifacts: a directory holding ``weights.pt`` (a state dict) and ``manifest.json`` (plain data).

The manifest describes the spiking graph node by node (module types with their constructor
arguments, function and method names from the handler table, arguments as JSON), the per-layer
thresholds and time steps, the source model's hash, the input specification and the resolved
configuration. Loading rebuilds the graph through the handler table and loads the weights with
``torch.load(weights_only=True)``: nothing is unpickled. Writing goes to a temporary sibling
directory that is renamed into place, so an interrupted run never leaves a half artifact that looks
complete.

A directly trained spiking transformer (manifest ``"family": "spikformer"``) is stored as its model
configuration, its LIF layers with their T_l, and the module's state dict (:func:`save_direct`).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import torch
import torch.fx
from torch import nn

from . import __version__
from .config import SPIKE_TIMINGS, ConvertConfig
from .direct_network import FAMILY as DIRECT_FAMILY
from .direct_network import DirectNetwork
from .errors import ArtifactError, ConfigError, OutputError
from .handlers import HANDLERS
from .network import SpikingNetwork
from .neurons import IFNeuron
from .neurons.ttfs import TTFSCoding
from .spikformer import Spikformer, SpikformerConfig
from .stages.convert import CoverageRow

# Newest manifest schema this version reads. A manifest carries the oldest schema that describes it, so older
# snnconv versions keep reading plain artifacts and refuse, rather than misread, what they cannot run:
# 2 adds sub-step spike timing ("timing" other than linear) and directly trained transformers ("family");
# 3 adds the ANN's values of the weights that weight calibration or training through the SNN changed ("ann_weights", ANN_WEIGHTS).
SCHEMA_VERSION = 3
MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"
EXIT_POLICY_WEIGHTS = "exit_policy.pt"
ANN_WEIGHTS = "ann_weights.pt"
CONSTANT_PREFIX = "__graph_constant__."
CONVERTED_FAMILY = "converted"  # manifests without a "family" key hold converted networks


# ---------------------------------------------------------------- graph <-> plain data
def _encode(value):
    if isinstance(value, torch.fx.Node):
        return {"node": value.name}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, slice):
        return {"slice": [_encode(value.start), _encode(value.stop), _encode(value.step)]}
    if isinstance(value, dict):
        return {"dict": {k: _encode(v) for k, v in value.items()}}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).replace("torch.", "")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ArtifactError(f"Graph argument of type {type(value).__name__} cannot be stored in a manifest.")


def _decode(value, nodes: dict[str, torch.fx.Node]):
    if isinstance(value, list):
        return [_decode(v, nodes) for v in value]
    if isinstance(value, dict):
        if "node" in value:
            return nodes[value["node"]]
        if "tuple" in value:
            return tuple(_decode(v, nodes) for v in value["tuple"])
        if "slice" in value:
            return slice(*(_decode(v, nodes) for v in value["slice"]))
        if "dict" in value:
            return {k: _decode(v, nodes) for k, v in value["dict"].items()}
        if "ellipsis" in value:
            return Ellipsis
        if "dtype" in value:
            return getattr(torch, value["dtype"])
    return value


def graph_to_plain(gm: torch.fx.GraphModule) -> dict:
    nodes, modules = [], {}
    for node in gm.graph.nodes:
        entry = {"name": node.name, "op": node.op, "args": _encode(node.args), "kwargs": _encode(dict(node.kwargs))}
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            entry["target"] = node.target
            modules[node.target] = {"type": type(module).__name__, "config": HANDLERS.module_config(module)}
        elif node.op == "call_function":
            entry["target"] = HANDLERS.function_name(node.target)
        else:
            entry["target"] = node.target
        nodes.append(entry)
    return {"nodes": nodes, "modules": modules}


def _graph_constants(gm: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """Tensors reached by get_attr that are not parameters or buffers (fx's ``_tensor_constant``s)."""
    in_state = set(gm.state_dict())
    constants = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target not in in_state:
            value = gm
            for part in node.target.split("."):
                value = getattr(value, part)
            constants[CONSTANT_PREFIX + node.target] = value.detach().cpu()
    return constants


def plain_to_graph(plain: dict, state: dict[str, torch.Tensor]) -> torch.fx.GraphModule:
    root = nn.Module()
    for target, spec in plain["modules"].items():
        try:
            module = HANDLERS.build_module(spec["type"], _decode(spec["config"], {}))
        except KeyError:
            raise ArtifactError(f"Manifest names module type '{spec['type']}', which this snnconv version cannot build.") from None
        _set_path(root, target, module)
    graph = torch.fx.Graph()
    nodes: dict[str, torch.fx.Node] = {}
    for entry in plain["nodes"]:
        args = _decode(entry["args"], nodes)
        kwargs = _decode(entry["kwargs"], nodes)
        op, target = entry["op"], entry.get("target")
        if op == "placeholder":
            node = graph.placeholder(target)
        elif op == "get_attr":
            key = CONSTANT_PREFIX + target
            if key in state:
                _set_path(root, target, state[key], as_tensor=True)
            elif target in state and not _has_path(root, target):
                # a parameter or buffer of a module no node calls (onnx2torch's Constant holds its value
                # so): it is in the state dict, but no manifest module entry rebuilds its owner
                _set_path(root, target, state[target], as_tensor=True, persistent=True)
            node = graph.get_attr(target)
        elif op == "call_module":
            node = graph.call_module(target, tuple(args), kwargs)
        elif op == "call_function":
            try:
                node = graph.call_function(HANDLERS.function_by_name(target), tuple(args), kwargs)
            except KeyError:
                raise ArtifactError(f"Manifest names function '{target}', which this snnconv version does not know.") from None
        elif op == "call_method":
            node = graph.call_method(target, tuple(args), kwargs)
        elif op == "output":
            node = graph.output(args[0])
        else:
            raise ArtifactError(f"Manifest has a node of unknown kind '{op}'.")
        node.name = entry["name"]
        nodes[entry["name"]] = node
    gm = torch.fx.GraphModule(root, graph)
    _load_state(gm, {k: v for k, v in state.items() if not k.startswith(CONSTANT_PREFIX)})
    return gm.eval()


def _set_path(root: nn.Module, target: str, value, as_tensor: bool = False, persistent: bool = False) -> None:
    *parents, leaf = target.split(".")
    module = root
    for part in parents:
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    if as_tensor:
        module.register_buffer(leaf, value, persistent=persistent)
    else:
        module.add_module(leaf, value)


def _has_path(root: nn.Module, target: str) -> bool:
    value = root
    for part in target.split("."):
        if not hasattr(value, part):
            return False
        value = getattr(value, part)
    return True


def _load_state(gm: torch.fx.GraphModule, state: dict[str, torch.Tensor]) -> None:
    """Like load_state_dict, but buffers take the stored shape (calibration may have grown them)."""
    expected = gm.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    if missing or unexpected:
        raise ArtifactError(f"weights.pt does not match manifest.json (missing {sorted(missing)[:3]}, "
                            f"unexpected {sorted(unexpected)[:3]}); the artifact is corrupt.")
    for key, tensor in state.items():
        owner_path, _, name = key.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        if name in owner._buffers:
            owner._buffers[name] = tensor.clone()
        elif tensor.shape != owner._parameters[name].shape:
            raise ArtifactError(f"Parameter '{key}' in weights.pt has shape {tuple(tensor.shape)}, the manifest "
                                f"expects {tuple(owner._parameters[name].shape)}; the artifact is corrupt.")
        else:
            with torch.no_grad():
                owner._parameters[name].copy_(tensor)


# ---------------------------------------------------------------- save / load
def environment() -> dict:
    return {"snnconv": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def _config_for_manifest(config: ConvertConfig) -> dict:
    """The conversion config, without the weight-calibration options unless they were used, so that older
    snnconv versions, which refuse unknown options, keep reading plain artifacts."""
    plain = config.to_dict()
    if config.calibrate != "weights":
        plain.pop("weight_calibration_steps", None)
        plain.pop("weight_calibration_lr", None)
    return plain


def build_manifest(network: SpikingNetwork, extra: dict | None = None) -> dict:
    layers = []
    for name, neuron in network.neuron_layers():
        threshold = neuron.threshold.detach().cpu()
        if network.ttfs is not None:
            layers.append({"name": name, "neuron": "ttfs", "reset": "refractory", "threshold": threshold.tolist(),
                           "time_steps": network.ttfs.window, **network.ttfs.kernels[name].__dict__})
            continue
        window = int(network.layer_time_steps.get(name, network.time_steps))
        layers.append({"name": name, "neuron": neuron.kind, "reset": "subtract", "half_init": neuron.half_init,
                       "threshold": threshold.tolist(), "time_steps": window,
                       # steps the layer really runs: its first T_l under a DTS mask ("prefix"), else the window
                       "active_steps": int(network.layer_prefix_steps.get(name, window)),
                       "crossing": "prefix" if name in network.layer_prefix_steps else "retime"})
    return {
        "schema_version": 3 if network.ann_weights else 1 if network.timing == "linear" else 2,
        "snnconv_version": __version__,
        "source": network.source,
        "input": {"shape": list(network.input_shape), "num_classes": network.num_classes,
                  **network.input_normalization},
        "time_steps": network.time_steps,
        # how IF spikes are re-timed where per-layer windows differ; absent in older manifests: linear
        "timing": network.timing,
        "layers": layers,
        "coverage": [row.__dict__ for row in network.coverage],
        "calibration": network.calibration_log,
        "config": _config_for_manifest(network.config),
        "notes": {k: v for k, v in network.notes.items() if isinstance(v, (int, float, str, bool, list, dict))},
        "graph": graph_to_plain(network.graph),
        # weight calibration: the weights whose ANN values are kept in ANN_WEIGHTS
        "ann_weights": sorted(network.ann_weights),
        "exit_policy": network.exit_policy.describe() if network.exit_policy is not None else None,
        "ttfs": network.ttfs.to_dict() if network.ttfs is not None else None,
        "time_masks": ({"mode": "prefix", "parameters": network.time_mask_parameters}
                       if network.layer_prefix_steps or network.time_mask_parameters else None),
        "environment": environment(),
        **(extra or {}),
    }


def save(network: SpikingNetwork, directory: str | Path, extra_files: dict[str, Path] | None = None,
         extra_manifest: dict | None = None) -> Path:
    """Write the artifact atomically; ``extra_files`` (e.g. reports) are moved in with it."""
    if not isinstance(network, SpikingNetwork):
        raise ConfigError(f"Argument 'network' must be a snnconv.SpikingNetwork (from snnconv.convert or "
                          f"snnconv.load), got {type(network).__name__}.")

    def write(staging: Path) -> None:
        manifest = build_manifest(network, extra_manifest)
        state = {k: v.detach().cpu() for k, v in network.graph.state_dict().items()}
        state.update(_graph_constants(network.graph))
        torch.save(state, staging / WEIGHTS)
        policy_state = network.exit_policy.state_dict() if network.exit_policy is not None else {}
        if policy_state:
            torch.save(policy_state, staging / EXIT_POLICY_WEIGHTS)
        if network.ann_weights:
            torch.save({k: v.detach().cpu() for k, v in network.ann_weights.items()}, staging / ANN_WEIGHTS)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))

    return _write_atomically(Path(directory), write, extra_files)


def refuse_foreign_directory(directory: Path) -> None:
    """An artifact replaces an earlier artifact as a whole, so a directory of other files is never taken."""
    if directory.is_dir() and not is_artifact(directory) and any(directory.iterdir()):
        raise OutputError(f"'{directory}' exists and is not an snnconv artifact; choose another -o directory.")


def _write_atomically(directory: Path, write, extra_files: dict[str, Path] | None) -> Path:
    """Fill a temporary sibling with ``write(staging)`` and the extra files, then swap it into ``directory``."""
    parent = directory.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # as mkdir would make it: mkdtemp's private 0700 is for the staging only
    except OSError as exc:
        raise OutputError(f"Cannot write the artifact directory '{directory}': {exc.strerror}.") from None
    try:
        write(staging)
        for name, path in (extra_files or {}).items():
            shutil.copy2(path, staging / name) if Path(path).is_file() else shutil.copytree(path, staging / name)
        if directory.exists():
            refuse_foreign_directory(directory)
            backup = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=parent))
            os.replace(directory, backup / "old")
            os.replace(staging, directory)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, directory)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"Cannot write the artifact directory '{directory}': {exc.strerror or exc}.") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


# ---------------------------------------------------------------- directly trained transformers
def build_direct_manifest(network: DirectNetwork, extra: dict | None = None) -> dict:
    steps = network.layer_steps
    layers = [{"name": name, "neuron": "lif", "reset": "hard", "tau": lif.tau, "threshold": lif.threshold,
               "group": group, "time_steps": network.time_steps, "active_steps": steps[name]}
              for name, (lif, group) in network.model.lif_layers().items()]
    return {
        "schema_version": 2,
        "snnconv_version": __version__,
        "family": DIRECT_FAMILY,
        "source": network.source,
        "input": {"shape": list(network.input_shape), "num_classes": network.num_classes,
                  **network.input_normalization},
        "time_steps": network.time_steps,
        "spikformer": network.model.config.to_dict(),
        "layers": layers,
        "training": network.training,
        "time_masks": ({"mode": "prefix", "parameters": network.time_mask_parameters}
                       if network.time_mask_parameters else None),
        "environment": environment(),
        **(extra or {}),
    }


def save_direct(network: DirectNetwork, directory: str | Path, extra_files: dict[str, Path] | None = None,
                extra_manifest: dict | None = None) -> Path:
    """Write a directly trained spiking transformer as an artifact (same layout and atomicity as :func:`save`)."""
    def write(staging: Path) -> None:
        manifest = build_direct_manifest(network, extra_manifest)
        torch.save({k: v.detach().cpu() for k, v in network.model.state_dict().items()}, staging / WEIGHTS)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))

    return _write_atomically(Path(directory), write, extra_files)


def family(directory: str | Path) -> str:
    """``converted`` (a :class:`SpikingNetwork`) or ``spikformer`` (a :class:`DirectNetwork`)."""
    return read_manifest(directory).get("family", CONVERTED_FAMILY)


def load_direct(directory: str | Path) -> DirectNetwork:
    """Rebuild a directly trained spiking transformer from an artifact directory."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest.get("family") != DIRECT_FAMILY:
        raise ArtifactError(f"'{directory}' holds a converted network, not a directly trained spiking transformer.")
    state = _read_weights(directory)
    try:
        model = Spikformer(SpikformerConfig.from_dict(manifest["spikformer"]))
        model.load_state_dict(state)
        inputs = manifest["input"]
        network = DirectNetwork(
            model=model.eval(), time_steps=int(manifest["time_steps"]), input_shape=tuple(inputs["shape"]),
            num_classes=int(inputs["num_classes"]), source=manifest["source"],
            input_normalization={k: inputs.get(k) for k in ("mean", "std") if k in inputs},
            training=manifest.get("training", {}),
            time_mask_parameters={k: [float(v) for v in tp]
                                  for k, tp in (manifest.get("time_masks") or {}).get("parameters", {}).items()})
        network.set_layer_steps({entry["name"]: int(entry["active_steps"]) for entry in manifest["layers"]})
    except (KeyError, TypeError, ValueError, RuntimeError, ConfigError) as exc:
        raise ArtifactError(f"'{directory / MANIFEST}' and {WEIGHTS} do not describe a loadable spiking transformer "
                            f"({type(exc).__name__}: {exc}); the artifact is corrupt.") from None
    return network


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def is_artifact(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"'{directory}' is not an snnconv artifact (no {MANIFEST}).") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"'{path}' is corrupt ({exc}); re-create the artifact with snnconv convert.") from None
    version = manifest.get("schema_version")
    if not isinstance(version, int):
        raise ArtifactError(f"'{path}' has no schema_version; it was not written by snnconv.")
    if version > SCHEMA_VERSION:
        raise ArtifactError(f"Artifact '{directory}' uses manifest schema {version}, newer than this snnconv's "
                            f"{SCHEMA_VERSION}; upgrade snnconv to load it.")
    return manifest


def load(directory: str | Path) -> SpikingNetwork:
    """Rebuild a SpikingNetwork from an artifact directory."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest.get("family", CONVERTED_FAMILY) != CONVERTED_FAMILY:
        raise ArtifactError(f"'{directory}' holds a directly trained spiking transformer ({manifest['family']}); "
                            "only snnconv evaluate and snnconv compress --method dts take it.")
    state = _read_weights(directory)
    try:
        graph = plain_to_graph(manifest["graph"], state)
        config = ConvertConfig.from_dict(manifest["config"])
        inputs = manifest["input"]
        coverage = [CoverageRow(**row) for row in manifest["coverage"]]
        layer_entries = {entry["name"]: entry for entry in manifest["layers"]}
        time_steps, source = int(manifest["time_steps"]), manifest["source"]
        input_shape, num_classes = tuple(inputs["shape"]), int(inputs["num_classes"])
    except KeyError as exc:
        raise ArtifactError(f"'{directory / MANIFEST}' lacks field {exc}; the artifact is corrupt.") from None
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"'{directory / MANIFEST}' has a malformed field ({exc}); the artifact is "
                            "corrupt.") from None
    try:
        ttfs = TTFSCoding.from_dict(manifest["ttfs"]) if manifest.get("ttfs") else None
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"'{directory / MANIFEST}' has a malformed ttfs entry ({exc}); the artifact is corrupt.") from None
    layer_time_steps, layer_prefix_steps = {}, {}
    for name, neuron in ((n.name, graph.get_submodule(n.target)) for n in graph.graph.nodes if n.op == "call_module"):
        if isinstance(neuron, IFNeuron):
            entry = layer_entries.get(name)
            if entry is None:
                raise ArtifactError(f"'{directory / MANIFEST}' has no entry for neuron layer '{name}' in its layers; "
                                    "the artifact is corrupt.")
            neuron.half_init = bool(entry.get("half_init", False))
            if ttfs is None and int(entry.get("time_steps", time_steps)) != time_steps:
                layer_time_steps[name] = int(entry["time_steps"])
            if entry.get("crossing") == "prefix":
                layer_prefix_steps[name] = int(entry["active_steps"])
    timing = manifest.get("timing", "linear")
    if timing not in SPIKE_TIMINGS:
        raise ArtifactError(f"'{directory / MANIFEST}' has spike timing '{timing}', which this snnconv version cannot "
                            f"run (it knows {', '.join(SPIKE_TIMINGS)}); upgrade snnconv.")
    masks = manifest.get("time_masks") or {}
    if masks and masks.get("mode") != "prefix":
        raise ArtifactError(f"'{directory / MANIFEST}' has time masks in mode '{masks.get('mode')}', which this "
                            "snnconv version cannot run; upgrade snnconv.")
    exit_policy = _load_exit_policy(directory, manifest.get("exit_policy"))
    ann_weights = _load_ann_weights(directory, manifest.get("ann_weights") or [], graph)
    return SpikingNetwork(
        graph=graph, input_shape=input_shape, time_steps=time_steps, config=config, coverage=coverage, source=source,
        input_normalization={k: inputs.get(k) for k in ("mean", "std") if k in inputs},
        num_classes=num_classes, calibration_log=manifest.get("calibration", []),
        notes=manifest.get("notes", {}), layer_time_steps=layer_time_steps, exit_policy=exit_policy,
        ttfs=ttfs, layer_prefix_steps=layer_prefix_steps, timing=timing, ann_weights=ann_weights,
        time_mask_parameters={k: [float(v) for v in tp] for k, tp in masks.get("parameters", {}).items()})


def _load_ann_weights(directory: Path, keys: list[str], graph: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """The ANN weights of a weight-calibrated network, checked against the manifest and the graph."""
    if not keys:
        return {}
    try:
        state = torch.load(directory / ANN_WEIGHTS, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"Artifact '{directory}' records the ANN's weights (weight calibration or training "
                            f"through the SNN) but has no {ANN_WEIGHTS}.") from None
    except Exception as exc:  # torch.load raises several types on a damaged file
        raise ArtifactError(f"'{directory / ANN_WEIGHTS}' is corrupt ({type(exc).__name__}); "
                            "re-create the artifact with snnconv convert.") from None
    expected = graph.state_dict()
    if set(state) != set(keys) or any(k not in expected or state[k].shape != expected[k].shape for k in keys):
        raise ArtifactError(f"'{directory / ANN_WEIGHTS}' does not match manifest.json; the artifact is corrupt.")
    return state


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True)
        _check_finite(state, directory / WEIGHTS)
        return state
    except FileNotFoundError:
        raise ArtifactError(f"Artifact '{directory}' has no {WEIGHTS}; it is incomplete, re-create it with "
                            "snnconv convert.") from None
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"'{directory / WEIGHTS}' is corrupt ({type(exc).__name__}); re-create the artifact.") from None


def _check_finite(state: dict, path: Path) -> None:
    """NaN anywhere, or Inf in a tensor of more than one value (a single infinite bound, as of a clamp, is
    legitimate), means a damaged file: every spike count computed from it would be meaningless."""
    for name, tensor in state.items():
        if not (isinstance(tensor, torch.Tensor) and tensor.is_floating_point()):
            continue
        if torch.isnan(tensor).any() or (tensor.numel() > 1 and torch.isinf(tensor).any()):
            raise ArtifactError(f"'{path}' has NaN or Inf values in '{name}'; the artifact is corrupt, re-create it "
                                "with snnconv convert.")


def _load_exit_policy(directory: Path, description: dict | None):
    if not description:
        return None
    from .stages.seenn import exit_policy_from
    state = {}
    if description.get("kind") == "policy":
        try:
            state = torch.load(directory / EXIT_POLICY_WEIGHTS, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ArtifactError(f"Artifact '{directory}' records a SEENN-II policy but has no {EXIT_POLICY_WEIGHTS}.") from None
        except Exception as exc:
            raise ArtifactError(f"'{directory / EXIT_POLICY_WEIGHTS}' is corrupt ({type(exc).__name__}); "
                                "re-create the artifact.") from None
    try:
        return exit_policy_from(description, state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"'{directory / MANIFEST}' has an unreadable exit_policy ({type(exc).__name__}: {exc}); "
                            "the artifact is corrupt.") from None
