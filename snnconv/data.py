"""Dataset specs -> labeled image tensors in memory. Nothing is ever downloaded.

A spec is a string `SCHEME` or `SCHEME:PATH`:

- `builtin`: the Fashion-MNIST subset shipped in `calibration_data/` (1,000 train, 2,000 test images).
- `fashion-mnist:DIR`, `mnist:DIR`: torchvision's IDX files (`train-images-idx3-ubyte`,
  `train-labels-idx1-ubyte`, `t10k-...`, each optionally `.gz`) in DIR, DIR/raw or DIR/FashionMNIST/raw
  (DIR/MNIST/raw for mnist).
- `cifar10:DIR`, `cifar100:DIR`: torchvision's pickled batches in DIR/cifar-10-batches-py
  (DIR/cifar-100-python), or DIR being that folder. They are read with a restricted unpickler that only
  rebuilds numpy arrays and plain containers, so a crafted file cannot run code.
- `imagefolder:DIR`: one subfolder per class, either in DIR/train and DIR/test (or DIR/val) or directly in
  DIR (then both splits read the same images).
- `npz:FILE`: arrays `x` and `y` (or `x_train`/`y_train` and `x_test`/`y_test` per split), read without
  pickle. See `_images_from_npz` for the accepted layouts of `x`.

Images become float32 [N, C, H, W] tensors: integer pixels are divided by 255 into [0, 1], then the optional
per-channel `mean`/`std` normalization is applied. Labels become int64 [N].
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from snnconv.errors import ConfigError, DataError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

SCHEMES = ("builtin", "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "npz")
SPLITS = ("train", "test")

BUILTIN_FILE = "fashion_mnist_subset.npz"
"""The shipped subset inside the `snnconv._calibration_data` package (top-level `calibration_data/`)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_GREY_MODES = ("1", "L", "LA")


@dataclass(frozen=True)
class DataConfig:
    """Which data to load and how to preprocess it; plain data so it can be recorded in a manifest.

    spec:  `builtin` or `SCHEME:PATH`, SCHEME one of `SCHEMES` (see the module docstring).
    split: `train` (for calibration) or `test` (for evaluation).
    limit: keep at most this many samples: the first `limit` of a permutation seeded by `seed`.
    mean, std: per-channel normalization, applied after pixels are scaled to [0, 1].
    size: (height, width) in pixels to resize to; only `imagefolder` can resize, other schemes accept
        only their native size.
    """

    spec: str
    split: str = "test"
    limit: int | None = None
    seed: int = 0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        scheme, path = _parse_spec(self.spec)
        if self.split not in SPLITS:
            raise ConfigError(f"Data split {self.split!r} is unknown; use 'train' or 'test'.")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit <= 0):
            raise ConfigError(f"Data limit {self.limit!r} must be a positive integer (or None for all samples).")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"Data seed {self.seed!r} must be an integer.")
        # Lists (from JSON or a CLI) become tuples so the frozen config stays hashable.
        for name in ("mean", "std", "size"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if (self.mean is None) != (self.std is None):
            raise ConfigError("Data normalization needs both mean and std (one per channel), or neither.")
        if self.mean is not None:
            if len(self.mean) == 0 or len(self.mean) != len(self.std):
                raise ConfigError(
                    f"Data mean has {len(self.mean)} values and std has {len(self.std)}; "
                    "give one value per channel in each."
                )
            try:
                mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
            except (TypeError, ValueError):
                raise ConfigError(f"Data mean {self.mean} and std {self.std} must be numbers.") from None
            if not all(np.isfinite(mean + std)) or any(s <= 0 for s in std):
                raise ConfigError(f"Data std {self.std} must be positive and mean {self.mean} finite.")
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)
        if self.size is not None:
            if len(self.size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                              for v in self.size):
                raise ConfigError(f"Data size {self.size!r} must be two positive integers (height, width).")

    @property
    def scheme(self) -> str:
        return _parse_spec(self.spec)[0]

    @property
    def path(self) -> Path | None:
        """The DIR or FILE part of the spec (None for `builtin`)."""
        return _parse_spec(self.spec)[1]

    def to_dict(self) -> dict:
        """Plain JSON-able data (tuples become lists); the path made absolute, so that a recorded spec still
        finds its data from another working directory."""
        plain = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        scheme, path = _parse_spec(self.spec)
        if path is not None:
            plain["spec"] = f"{scheme}:{path.resolve()}"
        return plain

    @classmethod
    def from_dict(cls, data: dict) -> DataConfig:
        unknown = sorted(set(data) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise ConfigError(f"Data config has unknown keys {unknown}; remove them.")
        if "spec" not in data:
            raise ConfigError("Data config has no 'spec'; give a data spec such as 'builtin'.")
        return cls(**data)


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"Batch size {batch_size!r} must be a positive integer.")


def _parse_spec(spec: str) -> tuple[str, Path | None]:
    valid = "'builtin' or one of " + ", ".join(f"'{s}:PATH'" for s in SCHEMES[1:])
    if not isinstance(spec, str):
        raise ConfigError(f"Data spec {spec!r} must be a string: {valid}.")
    scheme, sep, path = spec.partition(":")
    if scheme == "builtin":
        if sep:
            raise ConfigError(f"Data spec {spec!r} is invalid: 'builtin' takes no path.")
        return scheme, None
    if scheme not in SCHEMES or not sep:
        raise ConfigError(f"Data spec {spec!r} is not recognized; use {valid}.")
    if not path:
        raise ConfigError(f"Data spec {spec!r} has an empty path; write it as '{scheme}:PATH'.")
    return scheme, Path(path).expanduser()


@dataclass
class LabeledData:
    """A labeled image set held in memory.

    x: float32 [N, C, H, W], already scaled and normalized; y: int64 [N] class indices in
    [0, num_classes); description: where it came from, e.g. "fashion-mnist:/d (test split, 10000 samples)".
    """

    x: torch.Tensor
    y: torch.Tensor
    description: str
    num_classes: int

    def __post_init__(self) -> None:
        if self.x.dtype != torch.float32 or self.x.dim() != 4:
            raise DataError(
                f"Data {self.description} must hold float32 images of shape [N, C, H, W], "
                f"got {self.x.dtype} {tuple(self.x.shape)}."
            )
        if self.y.dtype != torch.int64 or self.y.dim() != 1 or len(self.y) != len(self.x):
            raise DataError(
                f"Data {self.description} must hold {len(self.x)} int64 labels, "
                f"got {self.y.dtype} {tuple(self.y.shape)}."
            )
        if len(self.x) == 0:
            raise DataError(f"Data {self.description} is empty; point the spec at a dataset with samples.")
        if int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes:
            raise DataError(
                f"Data {self.description} has labels outside [0, {self.num_classes}); fix the labels."
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x.shape[1:])

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) views of consecutive slices, in order; the last batch may be smaller."""
        check_batch_size(batch_size)
        for start in range(0, len(self), batch_size):
            yield self.x[start:start + batch_size], self.y[start:start + batch_size]

    def split(self, fraction: float, seed: int) -> tuple[LabeledData, LabeledData]:
        """Split into two disjoint random parts; the first has round(fraction * N) samples.

        The permutation is seeded, so the same (fraction, seed) always gives the same parts, e.g. a
        held-out calibration split that never overlaps the samples used for evaluation.
        """
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"Split fraction {fraction!r} must lie strictly between 0 and 1.")
        first_count = round(fraction * len(self))
        if first_count == 0 or first_count == len(self):
            raise DataError(
                f"Data {self.description} has {len(self)} samples, too few to split at fraction "
                f"{fraction:g}; use more samples or another fraction."
            )
        order = _permutation(len(self), seed)
        parts = []
        for index, chosen in enumerate((order[:first_count], order[first_count:]), start=1):
            parts.append(LabeledData(
                x=self.x[chosen],
                y=self.y[chosen],
                description=f"{self.description} [part {index} of a {fraction:g} split, seed {seed}]",
                num_classes=self.num_classes,
            ))
        return parts[0], parts[1]

    def take(self, count: int | None, seed: int) -> LabeledData:
        """The first ``count`` samples of a seeded permutation (all of them, in order, when ``count`` is None or
        not smaller than the data)."""
        if count is None or count >= len(self):
            return self
        chosen = _permutation(len(self), seed)[:count]
        return LabeledData(x=self.x[chosen], y=self.y[chosen], num_classes=self.num_classes,
                           description=f"{self.description} [{count} samples, seed {seed}]")

    def without(self, other: LabeledData, name: str | None = None) -> tuple[LabeledData, int]:
        """This data without the samples whose image also occurs in ``other`` (compared by their values after
        scaling and normalization, so the same image read through two specs still matches when both are normalized
        alike), and how many were left out. ``name``: how descriptions and messages call ``other`` (default: its
        description)."""
        name = name or other.description
        known = set(_image_keys(other.x))
        keep = [i for i, key in enumerate(_image_keys(self.x)) if key not in known]
        dropped = len(self) - len(keep)
        if not keep:
            raise DataError(f"Every sample of {self.description} also occurs in {name}; "
                            "name images that are not in it.")
        if dropped == 0:
            return self, 0
        index = torch.tensor(keep, dtype=torch.long)
        kept = LabeledData(x=self.x[index], y=self.y[index], num_classes=self.num_classes,
                           description=f"{self.description} [without {dropped} shared with {name}]")
        return kept, dropped


def _image_keys(x: torch.Tensor) -> list[bytes]:
    """One digest per image of its exact float values."""
    rows = x.reshape(len(x), -1).contiguous().numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


@dataclass
class _RawImages:
    """Images before scaling: uint8 pixels (scaled by 1/255 later) or float values used as they are."""

    pixels: np.ndarray  # [N, C, H, W], uint8 or float32
    labels: np.ndarray  # [N] int64
    num_classes: int
    source: str  # the spec with the path resolved, for messages and descriptions
    notes: list[str] = field(default_factory=list)


def load_data(cfg: DataConfig) -> LabeledData:
    """Read the data described by `cfg` into memory, scaled, normalized and checked.

    Raises DataError when files are missing, malformed or empty or hold NaN/Inf, and ConfigError when an
    option does not fit the data (normalization with the wrong channel count, `size` on a fixed-size set).
    """
    scheme, path = _parse_spec(cfg.spec)
    if path is not None and not path.exists():
        raise DataError(f"Data path {path} for spec {cfg.spec!r} does not exist; check the path.")
    if scheme == "imagefolder":
        raw = _load_imagefolder(path, cfg)
    else:
        raw = _LOADERS[scheme](path, cfg.split)
        if len(raw.labels) == 0:
            raise DataError(
                f"Data {raw.source} ({cfg.split} split) is empty; point the spec at a dataset with samples."
            )
        chosen = _choose(len(raw.labels), cfg.limit, cfg.seed)
        if chosen is not None:
            raw.pixels, raw.labels = raw.pixels[chosen], raw.labels[chosen]
        native = tuple(raw.pixels.shape[2:])
        if cfg.size is not None and tuple(cfg.size) != native:
            raise ConfigError(
                f"Data size {tuple(cfg.size)} differs from the native {native} of {raw.source}; "
                "only imagefolder data can be resized, so drop the size option."
            )
    return _finish(raw, cfg)


def _choose(count: int, limit: int | None, seed: int) -> np.ndarray | None:
    """Indices of the first `limit` samples of a seeded permutation, or None to keep all in order."""
    if limit is None:
        return None
    return _permutation(count, seed)[:limit].numpy()


def _permutation(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)


def _finish(raw: _RawImages, cfg: DataConfig) -> LabeledData:
    """Scale to [0, 1], check finiteness, normalize per channel, wrap."""
    if raw.pixels.dtype == np.uint8:
        x = torch.from_numpy(raw.pixels).to(torch.float32).div_(255.0)
    else:
        x = torch.from_numpy(np.ascontiguousarray(raw.pixels, dtype=np.float32))
        if not torch.isfinite(x).all():
            raise DataError(f"Data {raw.source} ({cfg.split} split) holds NaN or Inf values; clean the data.")
    if cfg.mean is not None:
        channels = x.shape[1]
        if len(cfg.mean) != channels:
            raise ConfigError(
                f"Data mean/std give {len(cfg.mean)} values but {raw.source} has {channels} channel(s); "
                "give one value per channel."
            )
        mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(cfg.std, dtype=torch.float32).view(1, -1, 1, 1)
        x = (x - mean) / std
        if not torch.isfinite(x).all():
            raise DataError(
                f"Data {raw.source} overflows to Inf after normalization by std {cfg.std}; use a larger std."
            )
    labels = torch.from_numpy(np.ascontiguousarray(raw.labels, dtype=np.int64))
    notes = "".join(f", {note}" for note in raw.notes)
    description = f"{raw.source} ({cfg.split} split, {len(labels)} samples{notes})"
    return LabeledData(x=x, y=labels, description=description, num_classes=raw.num_classes)


def _check_labels(labels: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"Labels in {source} fall outside [0, {num_classes}); the file is corrupt.")
    return labels.astype(np.int64)


# --- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------------------

_IDX_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into a numpy array of its stated shape.

    IDX header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then each
    dimension as a big-endian uint32; the data follows in C order.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as stream:
            content = stream.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"IDX file {path} cannot be read ({exc}); replace it with an intact copy.") from exc
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise DataError(f"IDX file {path} has no IDX header; replace it with an intact copy.")
    if content[2] != _IDX_UBYTE:
        raise DataError(
            f"IDX file {path} holds type code {content[2]:#04x}; only unsigned bytes (0x08) are supported."
        )
    ndim = content[3]
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataError(f"IDX file {path} is truncated inside its header; replace it with an intact copy.")
    shape = struct.unpack(f">{ndim}I", content[4:header_size])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(content) - header_size != expected:
        raise DataError(
            f"IDX file {path} holds {len(content) - header_size} data bytes but its header {shape} "
            f"says {expected}; replace it with an intact copy."
        )
    # Copy so the array owns writable memory rather than viewing the immutable bytes object.
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def _find_idx(root: Path, subfolder: str, name: str, source: str) -> Path:
    for folder in (root, root / "raw", root / subfolder / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(
        f"Data {source} has no {name}[.gz] in {root}, {root / 'raw'} or {root / subfolder / 'raw'}; "
        "put the IDX files there."
    )


def _idx_loader(scheme: str, subfolder: str):
    def load(root: Path, split: str) -> _RawImages:
        source = f"{scheme}:{root}"
        prefix = "train" if split == "train" else "t10k"
        images = read_idx(_find_idx(root, subfolder, f"{prefix}-images-idx3-ubyte", source))
        labels = read_idx(_find_idx(root, subfolder, f"{prefix}-labels-idx1-ubyte", source))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"Data {source} ({split} split) has images {images.shape} and labels {labels.shape}, "
                "which do not match; replace the IDX files."
            )
        return _RawImages(images[:, None], _check_labels(labels, 10, source), 10, source)

    return load


# --- CIFAR pickles ------------------------------------------------------------------------------------------

def _allowed_pickle_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR pickle may name: numpy array / scalar reconstruction and plain containers.

    numpy 2 moved `numpy.core` to `numpy._core`; pickles written by either name resolve to the same
    functions. `_codecs.encode` is how Python 3 stores bytes at pickle protocol 2.
    """
    import _codecs

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric

    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    for module in ("builtins", "__builtin__"):
        for container in (dict, list, tuple, set, frozenset, bytearray):
            allowed[(module, container.__name__)] = container
    return allowed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside `_allowed_pickle_globals`, so loading cannot run code."""

    def __init__(self, stream, source: Path):
        super().__init__(stream, encoding="latin1")  # CIFAR batches are Python 2 pickles
        self._source = source
        self._allowed = _allowed_pickle_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"Pickle {self._source} refers to {module}.{name}, which a dataset never needs; "
                "it was refused without running, so use an untampered copy of the dataset."
            ) from None


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as stream:
            batch = _ArrayOnlyUnpickler(stream, path).load()
    except DataError:
        raise
    except Exception as exc:  # any malformed pickle: truncated, wrong opcodes, bad array state
        raise DataError(
            f"CIFAR batch {path} cannot be unpickled ({exc}); replace it with an intact copy."
        ) from exc
    if not isinstance(batch, dict):
        raise DataError(f"CIFAR batch {path} holds a {type(batch).__name__}, not a dict; replace it.")
    batch = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DataError(f"CIFAR batch {path} lacks 'data' or '{label_key}'; replace it with an intact copy.")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"CIFAR batch {path} has data {data.dtype} {data.shape}, expected uint8 [N, 3072].")
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(data),):
        raise DataError(f"CIFAR batch {path} has {labels.shape} labels for {len(data)} images; replace it.")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_loader(scheme: str, folder_name: str, files: dict[str, tuple[str, ...]], label_key: str,
                  num_classes: int):
    def load(root: Path, split: str) -> _RawImages:
        source = f"{scheme}:{root}"
        folder = root / folder_name if (root / folder_name).is_dir() else root
        paths = [folder / name for name in files[split]]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise DataError(
                f"Data {source} lacks {', '.join(missing)} in {folder}; "
                f"point the spec at the folder holding {folder_name}."
            )
        batches = [_read_cifar_batch(p, label_key) for p in paths]
        pixels = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        return _RawImages(pixels, _check_labels(labels, num_classes, source), num_classes, source)

    return load


# --- npz ------------------------------------------------------------------------------------------------------

def _images_from_npz(x: np.ndarray, source: str) -> np.ndarray:
    """Bring an npz `x` array to [N, C, H, W].

    Rule: uint8 arrays are pixels (scaled by 1/255 later) laid out [N, H, W] (grey) or [N, H, W, C] with
    C <= 4 channels last; floating-point arrays are used as they are, laid out [N, C, H, W] (or [N, H, W],
    given one channel). Other dtypes are refused rather than guessed.
    """
    if x.dtype == np.uint8:
        if x.ndim == 3:
            return x[:, None]
        if x.ndim == 4 and x.shape[3] <= 4:
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        raise DataError(
            f"Data {source} has uint8 x of shape {x.shape}; store [N, H, W] or [N, H, W, C] with C <= 4."
        )
    if np.issubdtype(x.dtype, np.floating):
        if x.ndim == 3:
            return x[:, None].astype(np.float32)
        if x.ndim == 4:
            return x.astype(np.float32)
        raise DataError(f"Data {source} has float x of shape {x.shape}; store [N, C, H, W] or [N, H, W].")
    raise DataError(f"Data {source} has x of dtype {x.dtype}; store uint8 pixels or floating-point values.")


def _load_npz(path: Path | Traversable, split: str, source: str | None = None) -> _RawImages:
    source = source or f"npz:{path}"
    try:
        with path.open("rb") as stream, np.load(stream, allow_pickle=False) as archive:
            keys = set(archive.files)
            x_key, y_key = (f"x_{split}", f"y_{split}") if {f"x_{split}", f"y_{split}"} <= keys else ("x", "y")
            if not {x_key, y_key} <= keys:
                raise DataError(
                    f"Data {source} has arrays {sorted(keys)}; it needs 'x' and 'y' "
                    f"(or 'x_{split}' and 'y_{split}')."
                )
            x, y = archive[x_key], archive[y_key]
    except DataError:
        raise
    except Exception as exc:  # not a zip, object arrays refused by allow_pickle=False, truncated member
        raise DataError(f"Data {source} is not a readable npz file ({exc}); save it with numpy.savez.") from exc
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"Data {source} has labels {y_key} of dtype {y.dtype}; store integer class indices.")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"Data {source} has {x_key} of shape {x.shape} and {y_key} of shape {y.shape}; "
            "give one label per image."
        )
    if len(y) == 0:
        raise DataError(f"Data {source} ({split} split) is empty; point the spec at a dataset with samples.")
    if y.min() < 0:
        raise DataError(f"Data {source} has negative labels in {y_key}; store class indices from 0.")
    pixels = _images_from_npz(x, source)
    return _RawImages(pixels, y.astype(np.int64), int(y.max()) + 1, source)


def _builtin_file() -> Path | Traversable:
    """Locate the shipped subset: the installed package first, else the source checkout's folder."""
    try:
        candidate = resources.files("snnconv._calibration_data") / BUILTIN_FILE
        if candidate.is_file():
            return candidate  # opened, not turned into a path, so a zipped install works too
    except ModuleNotFoundError:
        pass  # running from a source checkout that was not pip-installed
    checkout = Path(__file__).resolve().parent.parent / "calibration_data" / BUILTIN_FILE
    if checkout.is_file():
        return checkout
    raise DataError(f"The builtin dataset {BUILTIN_FILE} is missing from snnconv; reinstall snnconv.")


def _load_builtin(_path: None, split: str) -> _RawImages:
    raw = _load_npz(_builtin_file(), split, source="builtin")
    raw.num_classes = 10  # Fashion-MNIST, even if a subset were to miss the last class
    raw.notes.append("Fashion-MNIST subset")
    return raw


# --- image folders --------------------------------------------------------------------------------------------

def _imagefolder_roots(root: Path, split: str) -> tuple[Path, list[Path]]:
    """(folder of the requested split, all split folders that define the classes)."""
    if not root.is_dir():
        raise DataError(f"Data path {root} for imagefolder is not a directory; give a folder of class folders.")
    train, test = root / "train", next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if not train.is_dir() and test is None:
        return root, [root]
    wanted = train if split == "train" else test
    if wanted is None or not wanted.is_dir():
        expected = "train" if split == "train" else "test or val"
        raise DataError(f"Data imagefolder:{root} has no {expected} folder for the {split} split; add it.")
    return wanted, [p for p in (train, test) if p is not None and p.is_dir()]


def _class_folders(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _load_imagefolder(root: Path, cfg: DataConfig) -> _RawImages:
    """Decode the class-folder images of one split.

    Classes are the sorted union of the class-folder names of all split folders, so train and test share
    one index mapping. Images are read as grey (one channel) when every image of every split is grey,
    else as RGB, so both splits and every `limit` give the same channel count. Without `size` all images
    must share one size.
    """
    from PIL import Image, UnidentifiedImageError

    source = f"imagefolder:{root}"
    split_folder, class_roots = _imagefolder_roots(root, cfg.split)
    classes = sorted(set().union(*(_class_folders(f) for f in class_roots)))
    if not classes:
        raise DataError(f"Data {source} has no class subfolders; put images in one folder per class.")
    files, labels = [], []
    for index, name in enumerate(classes):
        if (split_folder / name).is_dir():
            found = _image_files(split_folder / name)
            files += found
            labels += [index] * len(found)
    if not files:
        raise DataError(f"Data {source} ({cfg.split} split) holds no images in {split_folder}; add images.")

    def open_image(path: Path):
        try:
            return Image.open(path)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"Image {path} cannot be read ({exc}); remove or replace it.") from exc

    all_files = [f for folder in class_roots for name in classes if (folder / name).is_dir()
                 for f in _image_files(folder / name)]
    grey = True
    for path in all_files:
        with open_image(path) as image:  # opening reads only the header
            if image.mode not in _GREY_MODES:
                grey = False
                break
    mode = "L" if grey else "RGB"

    chosen = _choose(len(files), cfg.limit, cfg.seed)
    order = range(len(files)) if chosen is None else chosen
    arrays = []
    for i in order:
        with open_image(files[i]) as image:
            try:
                image = image.convert(mode)
                if cfg.size is not None:
                    height, width = cfg.size
                    image = image.resize((width, height), Image.BILINEAR)
                pixels = np.asarray(image, dtype=np.uint8)
            except OSError as exc:
                raise DataError(f"Image {files[i]} cannot be decoded ({exc}); remove or replace it.") from exc
        if arrays and pixels.shape != arrays[0].shape:
            raise DataError(
                f"Image {files[i]} is {pixels.shape[1]}x{pixels.shape[0]} but earlier images are "
                f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; set the data size option to resize them."
            )
        arrays.append(pixels)
    stacked = np.stack(arrays)
    stacked = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
    chosen_labels = np.asarray(labels, dtype=np.int64)[list(order)]
    return _RawImages(np.ascontiguousarray(stacked), chosen_labels, len(classes), source)


_CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_CIFAR100_FILES = {"train": ("train",), "test": ("test",)}

_LOADERS = {
    "builtin": _load_builtin,
    "fashion-mnist": _idx_loader("fashion-mnist", "FashionMNIST"),
    "mnist": _idx_loader("mnist", "MNIST"),
    "cifar10": _cifar_loader("cifar10", "cifar-10-batches-py", _CIFAR10_FILES, "labels", 10),
    "cifar100": _cifar_loader("cifar100", "cifar-100-python", _CIFAR100_FILES, "fine_labels", 100),
    "npz": _load_npz,
}
