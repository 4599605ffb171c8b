"""snnconv.data: every spec layout written small in tmp_path and read back exactly, plus every refusal."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from snnconv.data import SCHEMES, DataConfig, LabeledData, load_data, read_idx
from snnconv.errors import ConfigError, DataError


# --- writers for each on-disk layout ------------------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write uint8 `array` as an IDX file, gzipped when the name ends in .gz."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    content = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as stream:
        stream.write(content)
    return path


def idx_dataset(folder: Path, gz: bool, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    """IDX train/test files of 28x28 images whose pixels are distinct per sample; returns the arrays."""
    rng = np.random.default_rng(1)
    arrays = {}
    suffix = ".gz" if gz else ""
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = images, labels
    return arrays


def cifar_batch(count: int, label_key: str, num_classes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "data": rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, num_classes, size=count)],
        "filenames": [f"img{i}.png" for i in range(count)],
    }


def dump(path: Path, obj, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        pickle.dump(obj, stream, protocol=protocol)


def save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def labeled(count: int = 10) -> LabeledData:
    """In-memory data whose first pixel equals the sample index, to track samples through permutations."""
    x = torch.zeros(count, 1, 2, 2)
    x[:, 0, 0, 0] = torch.arange(count, dtype=torch.float32)
    return LabeledData(x=x, y=torch.arange(count) % 3, description="test data", num_classes=3)


# --- IDX: fashion-mnist and mnist ---------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("scheme, subfolder", [
    ("fashion-mnist", ""), ("fashion-mnist", "raw"), ("fashion-mnist", "FashionMNIST/raw"),
    ("mnist", ""), ("mnist", "raw"), ("mnist", "MNIST/raw"),
])
def test_idx_layouts_load_exact_values(tmp_path, scheme, subfolder, gz):
    arrays = idx_dataset(tmp_path / subfolder, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        data = load_data(DataConfig(f"{scheme}:{tmp_path}", split=split))
        images, labels = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"]
        assert data.x.dtype == torch.float32 and data.x.shape == (len(images), 1, 28, 28)
        assert torch.equal(data.x, torch.from_numpy(images).float().div(255).unsqueeze(1))
        assert data.y.dtype == torch.int64 and data.y.tolist() == labels.tolist()
        assert data.num_classes == 10
        assert data.description == f"{scheme}:{tmp_path} ({split} split, {len(images)} samples)"


def test_idx_pixels_scale_to_unit_interval(tmp_path):
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([7], dtype=np.uint8))
    data = load_data(DataConfig(f"mnist:{tmp_path}"))
    assert data.x.flatten().tolist() == pytest.approx([0.0, 1.0, 0.2, 0.4])
    assert data.y.tolist() == [7]


def test_read_idx_returns_stated_shape(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", array)), array)


def test_idx_missing_files_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_data(DataConfig(f"fashion-mnist:{tmp_path}"))


def test_idx_truncated_file_is_refused(tmp_path):
    idx_dataset(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_data(DataConfig(f"mnist:{tmp_path}"))


def test_idx_corrupt_gzip_is_refused(tmp_path):
    idx_dataset(tmp_path, gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot be read"):
        load_data(DataConfig(f"mnist:{tmp_path}"))


def test_idx_image_label_count_mismatch_is_refused(tmp_path):
    idx_dataset(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match="do not match"):
        load_data(DataConfig(f"mnist:{tmp_path}"))


def test_idx_empty_dataset_is_refused(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((0, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(0, dtype=np.uint8))
    with pytest.raises(DataError, match="empty"):
        load_data(DataConfig(f"fashion-mnist:{tmp_path}"))


def test_missing_directory_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        load_data(DataConfig(f"fashion-mnist:{missing}"))


# --- CIFAR pickles --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("inside_named_folder", [True, False])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_batches_load_exact_values(tmp_path, inside_named_folder, protocol):
    folder = tmp_path / "cifar-10-batches-py" if inside_named_folder else tmp_path
    train_batches = [cifar_batch(3, "labels", 10, seed=i) for i in range(1, 6)]
    for i, batch in enumerate(train_batches, start=1):
        dump(folder / f"data_batch_{i}", batch, protocol)
    test_batch = cifar_batch(4, "labels", 10, seed=9)
    dump(folder / "test_batch", test_batch, protocol)

    train = load_data(DataConfig(f"cifar10:{tmp_path}", split="train"))
    expected = np.concatenate([b["data"] for b in train_batches]).reshape(-1, 3, 32, 32)
    assert train.x.shape == (15, 3, 32, 32) and train.num_classes == 10
    assert torch.equal(train.x, torch.from_numpy(expected).float() / 255)
    assert train.y.tolist() == sum((b["labels"] for b in train_batches), [])

    test = load_data(DataConfig(f"cifar10:{tmp_path}", split="test"))
    assert test.y.tolist() == test_batch["labels"]
    # channel-first layout of CIFAR rows: the first 1024 values are the red plane
    assert torch.equal(test.x[0, 0].flatten(), torch.from_numpy(test_batch["data"][0, :1024]).float() / 255)


def test_cifar_bytes_keys_as_in_python2_pickles(tmp_path):
    batch = cifar_batch(2, "labels", 10, seed=3)
    dump(tmp_path / "test_batch", {key.encode(): value for key, value in batch.items()})
    data = load_data(DataConfig(f"cifar10:{tmp_path}"))
    assert data.y.tolist() == batch["labels"]


def test_cifar_pickle_naming_numpy_1_modules(tmp_path):
    """The official batches were written by numpy 1, whose array globals live in numpy.core."""
    batch = cifar_batch(2, "labels", 10, seed=8)
    content = pickle.dumps(batch, protocol=2)  # protocol 2 names globals as plain text
    legacy = content.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert legacy != content
    (tmp_path / "test_batch").write_bytes(legacy)
    data = load_data(DataConfig(f"cifar10:{tmp_path}"))
    assert torch.equal(data.x, torch.from_numpy(batch["data"].reshape(2, 3, 32, 32)).float() / 255)


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    batch = cifar_batch(5, "fine_labels", 100, seed=4)
    batch["coarse_labels"] = [0] * 5
    batch["fine_labels"][0] = 99
    dump(folder / "test", batch)
    dump(folder / "train", cifar_batch(2, "fine_labels", 100, seed=5))
    data = load_data(DataConfig(f"cifar100:{tmp_path}"))
    assert data.num_classes == 100
    assert data.y.tolist() == batch["fine_labels"]
    assert torch.equal(data.x, torch.from_numpy(batch["data"].reshape(5, 3, 32, 32)).float() / 255)


def test_cifar_labels_as_numpy_array_are_accepted(tmp_path):
    batch = cifar_batch(3, "labels", 10, seed=6)
    batch["labels"] = np.array(batch["labels"], dtype=np.int64)
    dump(tmp_path / "test_batch", batch)
    assert load_data(DataConfig(f"cifar10:{tmp_path}")).y.tolist() == batch["labels"].tolist()


class _RunsShellCommand:
    """An object whose unpickling would call os.system: the classic pickle exploit."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_cifar_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "exploited"
    batch = cifar_batch(2, "labels", 10, seed=7)
    batch["filenames"] = _RunsShellCommand(marker)
    dump(tmp_path / "cifar-10-batches-py" / "test_batch", batch)
    with pytest.raises(DataError, match=r"refers to (posix|os|nt)\.system"):
        load_data(DataConfig(f"cifar10:{tmp_path}"))
    assert not marker.exists()


def test_pickle_naming_eval_is_refused(tmp_path):
    class CallsEval:
        def __reduce__(self):
            return eval, ("1 + 1",)

    dump(tmp_path / "test_batch", {"data": CallsEval(), "labels": []})
    with pytest.raises(DataError, match=r"builtins\.eval"):
        load_data(DataConfig(f"cifar10:{tmp_path}"))


def test_cifar_missing_batch_is_named(tmp_path):
    dump(tmp_path / "data_batch_1", cifar_batch(2, "labels", 10, seed=1))
    with pytest.raises(DataError, match="data_batch_2"):
        load_data(DataConfig(f"cifar10:{tmp_path}", split="train"))


def test_cifar_batch_without_labels_is_refused(tmp_path):
    dump(tmp_path / "test", {"data": np.zeros((1, 3072), dtype=np.uint8), "labels": [0]})
    with pytest.raises(DataError, match="fine_labels"):
        load_data(DataConfig(f"cifar100:{tmp_path}"))


def test_cifar_garbage_file_is_refused(tmp_path):
    (tmp_path / "test_batch").write_bytes(b"\x00garbage")
    with pytest.raises(DataError, match="cannot be unpickled"):
        load_data(DataConfig(f"cifar10:{tmp_path}"))


def test_cifar_empty_batch_is_refused(tmp_path):
    dump(tmp_path / "test_batch", {"data": np.zeros((0, 3072), dtype=np.uint8), "labels": []})
    with pytest.raises(DataError, match="empty"):
        load_data(DataConfig(f"cifar10:{tmp_path}"))


# --- image folders --------------------------------------------------------------------------------------------

def test_imagefolder_flat_layout_grey(tmp_path):
    # class folders deliberately created out of order: indices follow sorted names
    save_png(tmp_path / "zebra" / "a.png", np.full((4, 5), 255, dtype=np.uint8))
    save_png(tmp_path / "ant" / "b.png", np.full((4, 5), 51, dtype=np.uint8))
    save_png(tmp_path / "ant" / "a.png", np.zeros((4, 5), dtype=np.uint8))
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    for split in ("train", "test"):
        data = load_data(DataConfig(f"imagefolder:{tmp_path}", split=split))
        assert data.x.shape == (3, 1, 4, 5)
        assert data.y.tolist() == [0, 0, 1] and data.num_classes == 2
        assert data.x[:, 0, 0, 0].tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_imagefolder_rgb_channels_first(tmp_path):
    pixels = np.zeros((3, 2, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 255, 102, 0
    save_png(tmp_path / "c" / "rgb.png", pixels)
    save_png(tmp_path / "c" / "grey.png", np.full((3, 2), 51, dtype=np.uint8))
    data = load_data(DataConfig(f"imagefolder:{tmp_path}"))
    assert data.x.shape == (2, 3, 3, 2)
    grey, rgb = data.x  # files sorted by name
    assert grey.flatten().tolist() == pytest.approx([0.2] * 18)
    assert rgb[:, 0, 0].tolist() == pytest.approx([1.0, 0.4, 0.0])


def test_imagefolder_split_folders_share_class_indices(tmp_path):
    save_png(tmp_path / "train" / "cat" / "1.png", np.zeros((2, 2), dtype=np.uint8))
    save_png(tmp_path / "train" / "dog" / "1.png", np.zeros((2, 2), dtype=np.uint8))
    save_png(tmp_path / "val" / "dog" / "1.png", np.full((2, 2), 255, dtype=np.uint8))
    train = load_data(DataConfig(f"imagefolder:{tmp_path}", split="train"))
    test = load_data(DataConfig(f"imagefolder:{tmp_path}", split="test"))
    assert train.y.tolist() == [0, 1] and train.num_classes == 2
    assert test.y.tolist() == [1] and test.num_classes == 2  # "dog" keeps index 1 without a val "cat"
    assert test.x.flatten().tolist() == [1.0, 1.0, 1.0, 1.0]


def test_imagefolder_missing_split_folder_is_refused(tmp_path):
    save_png(tmp_path / "train" / "cat" / "1.png", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(DataError, match="test or val"):
        load_data(DataConfig(f"imagefolder:{tmp_path}", split="test"))


def test_imagefolder_resize_to_size(tmp_path):
    save_png(tmp_path / "a" / "big.png", np.full((8, 6), 255, dtype=np.uint8))
    save_png(tmp_path / "a" / "small.png", np.full((3, 4), 255, dtype=np.uint8))
    data = load_data(DataConfig(f"imagefolder:{tmp_path}", size=(5, 7)))
    assert data.x.shape == (2, 1, 5, 7)
    assert torch.allclose(data.x, torch.ones_like(data.x))


def test_imagefolder_mixed_sizes_without_size_are_refused(tmp_path):
    save_png(tmp_path / "a" / "1.png", np.zeros((8, 6), dtype=np.uint8))
    save_png(tmp_path / "a" / "2.png", np.zeros((3, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="size"):
        load_data(DataConfig(f"imagefolder:{tmp_path}"))


def test_imagefolder_limit_is_seeded(tmp_path):
    for i in range(6):
        save_png(tmp_path / f"class{i % 2}" / f"{i}.png", np.full((2, 2), i * 40, dtype=np.uint8))
    first = load_data(DataConfig(f"imagefolder:{tmp_path}", limit=3, seed=5))
    again = load_data(DataConfig(f"imagefolder:{tmp_path}", limit=3, seed=5))
    assert len(first) == 3 and torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    full = load_data(DataConfig(f"imagefolder:{tmp_path}"))
    for x, y in zip(first.x, first.y):  # every chosen image keeps its own label
        match = [i for i in range(len(full)) if torch.equal(full.x[i], x)]
        assert len(match) == 1 and full.y[match[0]] == y


def test_imagefolder_without_classes_or_images_is_refused(tmp_path):
    with pytest.raises(DataError, match="no class subfolders"):
        load_data(DataConfig(f"imagefolder:{tmp_path}"))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_data(DataConfig(f"imagefolder:{tmp_path}"))


def test_imagefolder_corrupt_image_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_data(DataConfig(f"imagefolder:{tmp_path}"))


def test_imagefolder_spec_on_a_file_is_refused(tmp_path):
    path = tmp_path / "file.png"
    save_png(path, np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(DataError, match="not a directory"):
        load_data(DataConfig(f"imagefolder:{path}"))


# --- npz ------------------------------------------------------------------------------------------------------

def test_npz_uint8_hwc_is_transposed_and_scaled(tmp_path):
    x = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([1, 0]))
    data = load_data(DataConfig(f"npz:{tmp_path / 'd.npz'}"))
    assert data.x.shape == (2, 3, 3, 4)
    assert torch.equal(data.x, torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    assert data.y.tolist() == [1, 0] and data.num_classes == 2


def test_npz_uint8_grey_nhw_gets_one_channel(tmp_path):
    x = np.array([[[0, 255]], [[51, 0]]], dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 4], dtype=np.int32))
    data = load_data(DataConfig(f"npz:{tmp_path / 'd.npz'}"))
    assert data.x.shape == (2, 1, 1, 2)
    assert data.x.flatten().tolist() == pytest.approx([0.0, 1.0, 0.2, 0.0])
    assert data.y.dtype == torch.int64 and data.num_classes == 5


def test_npz_float_nchw_is_used_as_is(tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 2, 4, 4)).astype(np.float64) * 7
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2]))
    data = load_data(DataConfig(f"npz:{tmp_path / 'd.npz'}"))
    assert data.x.dtype == torch.float32
    assert torch.equal(data.x, torch.from_numpy(x.astype(np.float32)))


def test_npz_split_specific_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((2, 3, 3), np.uint8), y_train=np.array([0, 1]),
             x_test=np.full((1, 3, 3), 255, np.uint8), y_test=np.array([1]))
    assert len(load_data(DataConfig(f"npz:{tmp_path / 'd.npz'}", split="train"))) == 2
    test = load_data(DataConfig(f"npz:{tmp_path / 'd.npz'}", split="test"))
    assert test.y.tolist() == [1] and float(test.x.min()) == 1.0


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((2, 3, 3), np.uint8), "y": np.array([0, 1])}, "needs 'x' and 'y'"),
    ({"x": np.zeros((2, 3, 3), np.uint8), "y": np.array([0, 1, 1])}, "one label per image"),
    ({"x": np.zeros((2, 3, 3), np.uint8), "y": np.array([0.0, 1.0])}, "integer class indices"),
    ({"x": np.zeros((2, 3, 3), np.uint8), "y": np.array([0, -1])}, "negative labels"),
    ({"x": np.zeros((0, 3, 3), np.uint8), "y": np.zeros(0, np.int64)}, "empty"),
    ({"x": np.zeros((2, 3, 3), np.int32), "y": np.array([0, 1])}, "dtype int32"),
    ({"x": np.zeros((2, 3, 3, 8), np.uint8), "y": np.array([0, 1])}, r"C <= 4"),
    ({"x": np.array([[[[np.nan]]]], np.float32), "y": np.array([0])}, "NaN or Inf"),
    ({"x": np.array([[[[np.inf]]]], np.float32), "y": np.array([0])}, "NaN or Inf"),
])
def test_npz_bad_content_is_refused(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_data(DataConfig(f"npz:{tmp_path / 'bad.npz'}"))


def test_npz_object_array_is_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(DataError, match="obj.npz"):
        load_data(DataConfig(f"npz:{tmp_path / 'obj.npz'}"))


def test_npz_not_a_zip_is_refused(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable npz"):
        load_data(DataConfig(f"npz:{tmp_path / 'junk.npz'}"))


def test_missing_npz_file_is_named(tmp_path):
    with pytest.raises(DataError, match="absent.npz"):
        load_data(DataConfig(f"npz:{tmp_path / 'absent.npz'}"))


# --- normalization, size, limit, seed -------------------------------------------------------------------------

def test_mean_std_normalize_per_channel(tmp_path):
    x = np.zeros((1, 1, 1, 2), dtype=np.uint8)
    x[0, 0, 0] = [255, 51]
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0]))
    data = load_data(DataConfig(f"npz:{tmp_path / 'd.npz'}", mean=(0.5, 0.1), std=(0.25, 0.5)))
    assert data.x.flatten().tolist() == pytest.approx([(1.0 - 0.5) / 0.25, (0.2 - 0.1) / 0.5])


def test_mean_with_wrong_channel_count_is_a_config_error(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 2, 2), np.uint8), y=np.array([0]))
    with pytest.raises(ConfigError, match="1 channel"):
        load_data(DataConfig(f"npz:{tmp_path / 'd.npz'}", mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0)))


def test_size_on_fixed_size_data(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 2, 3), np.uint8), y=np.array([0]))
    assert load_data(DataConfig(f"npz:{tmp_path / 'd.npz'}", size=(2, 3))).x.shape == (1, 1, 2, 3)
    with pytest.raises(ConfigError, match="only imagefolder"):
        load_data(DataConfig(f"npz:{tmp_path / 'd.npz'}", size=(4, 4)))


def test_limit_takes_a_seeded_permutation(tmp_path):
    x = np.arange(20, dtype=np.uint8).reshape(20, 1, 1)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 10)
    spec = f"npz:{tmp_path / 'd.npz'}"
    first = load_data(DataConfig(spec, limit=5, seed=3))
    assert len(first) == 5 and first.description.endswith("(test split, 5 samples)")
    assert torch.equal(first.x, load_data(DataConfig(spec, limit=5, seed=3)).x)
    other = load_data(DataConfig(spec, limit=5, seed=4))
    assert not torch.equal(first.x, other.x)
    indices = (first.x.flatten() * 255).round().long()
    assert torch.equal(first.y, indices % 10)  # labels travel with their images
    assert torch.equal(indices, torch.randperm(20, generator=torch.Generator().manual_seed(3))[:5])
    # a larger limit is a prefix-extension of the same permutation
    assert torch.equal(load_data(DataConfig(spec, limit=8, seed=3)).x[:5], first.x)
    assert len(load_data(DataConfig(spec, limit=1000))) == 20


# --- builtin --------------------------------------------------------------------------------------------------

def test_builtin_subset_sizes_and_balance():
    train = load_data(DataConfig("builtin", split="train"))
    test = load_data(DataConfig("builtin", split="test"))
    assert train.x.shape == (1000, 1, 28, 28) and test.x.shape == (2000, 1, 28, 28)
    assert torch.bincount(train.y).tolist() == [100] * 10
    assert torch.bincount(test.y).tolist() == [200] * 10
    assert train.num_classes == test.num_classes == 10
    assert 0.0 <= float(test.x.min()) and float(test.x.max()) <= 1.0
    assert float(test.x.max()) == 1.0  # real images reach white
    assert load_data(DataConfig("builtin", split="train", limit=64)).x.shape == (64, 1, 28, 28)


# --- DataConfig validation and round trip ---------------------------------------------------------------------

def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(ConfigError) as raised:
        DataConfig("imagenet:/data")
    message = str(raised.value)
    assert "imagenet:/data" in message
    for scheme in SCHEMES:
        assert scheme in message


@pytest.mark.parametrize("kwargs, message", [
    ({"spec": "npz"}, "not recognized"),
    ({"spec": "npz:"}, "empty path"),
    ({"spec": "builtin:/x"}, "takes no path"),
    ({"spec": "builtin", "split": "validation"}, "split"),
    ({"spec": "builtin", "limit": 0}, "limit"),
    ({"spec": "builtin", "limit": -3}, "limit"),
    ({"spec": "builtin", "limit": 2.5}, "limit"),
    ({"spec": "builtin", "mean": (0.5,), "std": (0.2, 0.2)}, "1 values and std has 2"),
    ({"spec": "builtin", "mean": (0.5,)}, "both mean and std"),
    ({"spec": "builtin", "mean": (0.5,), "std": (0.0,)}, "positive"),
    ({"spec": "builtin", "mean": ("a",), "std": (1.0,)}, "must be numbers"),
    ({"spec": "builtin", "mean": (float("nan"),), "std": (1.0,)}, "finite"),
    ({"spec": "builtin", "seed": "1"}, "seed"),
    ({"spec": 3}, "must be a string"),
    ({"spec": "builtin", "size": (28,)}, "two positive integers"),
    ({"spec": "builtin", "size": (0, 28)}, "two positive integers"),
])
def test_bad_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**kwargs)


def test_config_round_trips_through_plain_data():
    cfg = DataConfig("cifar10:/data", split="train", limit=100, seed=2, mean=[0.5, 0.4, 0.3],
                     std=(0.2, 0.2, 0.2), size=[32, 32])
    assert cfg.mean == (0.5, 0.4, 0.3) and cfg.size == (32, 32)  # lists normalized to tuples
    plain = cfg.to_dict()
    assert plain["mean"] == [0.5, 0.4, 0.3] and plain["size"] == [32, 32]
    assert DataConfig.from_dict(plain) == cfg
    assert hash(cfg) == hash(DataConfig.from_dict(plain))
    assert cfg.scheme == "cifar10" and cfg.path == Path("/data")
    with pytest.raises(ConfigError, match="unknown keys"):
        DataConfig.from_dict({"spec": "builtin", "batch": 3})


# --- LabeledData ----------------------------------------------------------------------------------------------

def test_batches_yield_ordered_slices():
    data = labeled(10)
    batches = list(data.batches(4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in batches]), data.x)
    with pytest.raises(ConfigError, match="Batch size"):
        list(data.batches(0))


def test_split_is_disjoint_complete_and_seeded():
    data = labeled(10)
    first, second = data.split(0.3, seed=1)
    first_ids = set(first.x[:, 0, 0, 0].tolist())
    second_ids = set(second.x[:, 0, 0, 0].tolist())
    assert len(first) == 3 and len(second) == 7
    assert first_ids.isdisjoint(second_ids) and first_ids | second_ids == set(range(10))
    assert torch.equal(first.y, first.x[:, 0, 0, 0].long() % 3)  # labels travel with their images
    again, _ = data.split(0.3, seed=1)
    assert torch.equal(again.x, first.x)
    assert first.num_classes == 3 and "split" in first.description


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 2.0])
def test_split_fraction_out_of_range_is_a_config_error(fraction):
    with pytest.raises(ConfigError, match="fraction"):
        labeled().split(fraction, seed=0)


def test_split_of_too_small_data_is_a_data_error():
    with pytest.raises(DataError, match="too few"):
        labeled(2).split(0.1, seed=0)


def test_labeled_data_checks_its_tensors():
    with pytest.raises(DataError, match="float32"):
        LabeledData(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64), "d", 2)
    with pytest.raises(DataError, match="labels"):
        LabeledData(torch.zeros(2, 1, 2, 2), torch.zeros(3, dtype=torch.int64), "d", 2)
    with pytest.raises(DataError, match="empty"):
        LabeledData(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.int64), "d", 2)
    with pytest.raises(DataError, match="outside"):
        LabeledData(torch.zeros(1, 1, 2, 2), torch.tensor([5]), "d", 2)


def _numbered(values: list[int]) -> LabeledData:
    """One 1x2x2 image per value, all pixels equal to it, labelled value % 3."""
    x = torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return LabeledData(x=x, y=torch.tensor([v % 3 for v in values]), description="numbered", num_classes=3)


def test_without_leaves_out_exactly_the_images_that_also_occur_elsewhere():
    data, other = _numbered([0, 1, 2, 3, 4, 5, 6, 2]), _numbered([9, 2, 5])
    kept, dropped = data.without(other, "the evaluation data")
    assert dropped == 3  # 2 twice and 5; compared by content, not by position
    assert kept.x[:, 0, 0, 0].tolist() == [0, 1, 3, 4, 6] and kept.y.tolist() == [0, 1, 0, 1, 0]
    assert kept.description == "numbered [without 3 shared with the evaluation data]"
    assert data.without(_numbered([7, 8])) == (data, 0)
    with pytest.raises(DataError, match="Every sample of numbered also occurs in the evaluation data"):
        _numbered([1, 2]).without(_numbered([2, 1, 0]), "the evaluation data")


def test_take_is_a_seeded_subset_and_keeps_everything_when_it_asks_for_as_many():
    data = _numbered(list(range(50)))
    first, again, other = data.take(10, seed=0), data.take(10, seed=0), data.take(10, seed=1)
    values = first.x[:, 0, 0, 0].tolist()
    assert len(set(values)) == 10 and values == again.x[:, 0, 0, 0].tolist()
    assert values != other.x[:, 0, 0, 0].tolist()
    assert first.y.tolist() == [int(v) % 3 for v in values]
    assert data.take(None, 0) is data and data.take(50, 0) is data and data.take(80, 0) is data
