import gzip
import pickle
import struct

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from pyro_sparsegen.data import DataError, ImageData, load_data

RNG = np.random.default_rng(0)


def _images(n=20, shape=(6, 5)):
    return RNG.integers(0, 256, size=(n,) + shape, dtype=np.uint8)


def _labels(n=20, k=4):
    return np.arange(n) % k


# ---------------------------------------------------------------------------------------------
# packaged sets
# ---------------------------------------------------------------------------------------------

def test_mnist5k_split_is_stratified_and_disjoint():
    train, test, every = (load_data("mnist5k", s) for s in ("train", "test", "all"))
    assert (len(train), len(test), len(every)) == (4000, 1000, 5000)
    assert train.image_shape == (1, 28, 28) and train.name == "mnist5k"
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert not set(train._rows) & set(test._rows)
    x = test.images()
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == 0 and x.max() == 1
    rows = test.spread_rows(5)
    assert torch.equal(load_data("mnist5k", "test").images(5), x[rows])  # deterministic


def test_digits():
    train, test = load_data("digits", "train"), load_data("digits", "test")
    assert len(train) + len(test) == 1797 and abs(len(test) - 360) <= 5
    assert train.image_shape == (1, 8, 8)
    x = train.images()
    assert x.min() >= 0 and x.max() == 1
    assert set(np.unique(test.labels)) == set(range(10))


def test_image_size_resizes_any_source():
    data = load_data("digits", "test", image_size=(16, 12))
    assert data.image_shape == (1, 16, 12)
    x = data.batch([0, 1])
    assert x.shape == (2, 1, 16, 12) and x.min() >= 0 and x.max() <= 1
    assert data.subset([0]).image_shape == (1, 16, 12)
    with pytest.raises(ValueError, match="image_size"):
        load_data("digits", image_size=(0, 4))


def test_bad_spec_and_split():
    with pytest.raises(DataError, match="valid forms"):
        load_data("cifar")
    with pytest.raises(DataError, match="did you mean npz:"):
        load_data("mine.npz")
    with pytest.raises(ValueError, match="split"):
        load_data("digits", "valid")


# ---------------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------------

def _idx_bytes(array, code=0x08):
    dtype = {0x08: ">u1", 0x0D: ">f4"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def _write_idx_dir(folder, gz, n_train=12, n_test=5, dot_names=False):
    folder.mkdir(exist_ok=True)
    sep = "." if dot_names else "-"
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = _images(n, (4, 3)), _labels(n).astype(np.uint8)
        arrays[prefix] = images, labels
        for kind, array in (("images" + sep + "idx3-ubyte", images),
                            ("labels" + sep + "idx1-ubyte", labels)):
            raw = _idx_bytes(array)
            name = f"{prefix}-{kind}" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_splits(tmp_path, gz):
    arrays = _write_idx_dir(tmp_path / "mnist", gz)
    spec = f"idx:{tmp_path / 'mnist'}"
    train, test, every = (load_data(spec, s) for s in ("train", "test", "all"))
    assert (len(train), len(test), len(every)) == (12, 5, 17)
    assert train.image_shape == (1, 4, 3)
    np.testing.assert_allclose(train.images().numpy()[:, 0], arrays["train"][0] / 255, atol=1e-6)
    np.testing.assert_array_equal(test.labels, arrays["t10k"][1])
    np.testing.assert_allclose(every.batch([13]).numpy()[0, 0], arrays["t10k"][0][1] / 255,
                               atol=1e-6)


def test_idx_dot_names_and_float_dtype(tmp_path):
    _write_idx_dir(tmp_path, gz=False, dot_names=True)
    assert len(load_data(f"idx:{tmp_path}", "test")) == 5
    floats = RNG.random((12, 4, 3)).astype(np.float32)
    (tmp_path / "train-images.idx3-ubyte").write_bytes(_idx_bytes(floats, 0x0D))
    x = load_data(f"idx:{tmp_path}").images().numpy()[:, 0]
    np.testing.assert_allclose(x, floats)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-7], "truncated"),
    (lambda raw: raw[:6], "truncated IDX header"),
    (lambda raw: b"\x01\x02" + raw[2:], "not an IDX file"),
    (lambda raw: raw + b"\x00", "too long"),
])
def test_idx_damaged_files(tmp_path, damage, message):
    _write_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=message) as e:
        load_data(f"idx:{tmp_path}")
    assert "train-images-idx3-ubyte" in str(e.value)


def test_idx_bad_gzip_missing_file_and_count_mismatch(tmp_path):
    _write_idx_dir(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: cannot read"):
        load_data(f"idx:{tmp_path}")
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros(11, np.uint8))))
    with pytest.raises(DataError, match=r"labels-idx1-ubyte.gz: labels have shape \[11\] for 12"):
        load_data(f"idx:{tmp_path}")
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: missing"):
        load_data(f"idx:{tmp_path}", "test")
    with pytest.raises(DataError, match="no such directory"):
        load_data(f"idx:{tmp_path / 'nope'}")


# ---------------------------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------------------------

def test_npz_uint8_with_labels_stratified_split(tmp_path):
    images, labels = _images(40), _labels(40)
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    spec = f"npz:{tmp_path / 'd.npz'}"
    train, test = load_data(spec, "train"), load_data(spec, "test")
    assert (len(train), len(test)) == (32, 8)
    assert np.bincount(test.labels).tolist() == [2, 2, 2, 2]
    assert sorted(np.concatenate([train._rows, test._rows]).tolist()) == list(range(40))
    np.testing.assert_allclose(test.images().numpy()[:, 0], images[test._rows] / 255, atol=1e-6)
    assert test.image_shape == (1, 6, 5)


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_npz_float_nchw_and_test_arrays(tmp_path, scale):
    images = RNG.random((10, 3, 4, 4)) * scale
    test_images = RNG.random((3, 3, 4, 4)) * scale
    np.savez(tmp_path / "f.npz", images=images, test_images=test_images)
    spec = f"npz:{tmp_path / 'f.npz'}"
    train, test, every = (load_data(spec, s) for s in ("train", "test", "all"))
    assert (len(train), len(test), len(every)) == (10, 3, 13)
    assert train.labels is None and train.image_shape == (3, 4, 4)
    np.testing.assert_allclose(test.images().numpy(), test_images / scale, rtol=1e-6)
    np.testing.assert_allclose(every.batch([12, 0]).numpy(),
                               np.stack([test_images[2], images[0]]) / scale, rtol=1e-6)


def _bad_npz_cases():
    ok = _images(10)
    return {
        "nan": ({"images": np.where(ok > 100, np.nan, ok / 255)}, "NaN or inf"),
        "inf": ({"images": np.full((3, 4, 4), np.inf)}, "NaN or inf"),
        "rank2": ({"images": np.zeros((10, 30), np.uint8)}, "2 dimensions"),
        "rank5": ({"images": np.zeros((2, 1, 1, 4, 4), np.uint8)}, "5 dimensions"),
        "channels": ({"images": np.zeros((2, 2, 4, 4), np.uint8)}, "2 channels"),
        "channels_last": ({"images": np.zeros((2, 4, 4, 3), np.uint8)}, "moveaxis"),
        "int_range": ({"images": np.full((2, 4, 4), 300, np.int16)}, r"outside \[0, 255\]"),
        "negative": ({"images": -RNG.random((2, 4, 4))}, "outside"),
        "float_range": ({"images": RNG.random((2, 4, 4)) * 1000}, "outside"),
        "empty": ({"images": np.zeros((0, 4, 4), np.uint8)}, "empty"),
        "zero_width": ({"images": np.zeros((3, 4, 0), np.uint8)}, "zero height or width"),
        "string_dtype": ({"images": np.full((3, 4, 4), "ab")}, "dtype <U2"),
        "labels_length": ({"images": ok, "labels": np.arange(9)}, "labels have shape"),
        "labels_float": ({"images": ok, "labels": np.arange(10) + 0.5}, "not integers"),
        "labels_negative": ({"images": ok, "labels": np.arange(10) - 1}, "negative"),
        "no_images": ({"pixels": ok}, "no 'images'"),
        "test_labels_only": ({"images": ok, "test_labels": np.arange(3)}, "no test_images"),
        "test_shape": ({"images": ok, "test_images": _images(3, (5, 5))}, "differ in shape"),
        "test_labels_missing": ({"images": ok, "labels": np.arange(10),
                                 "test_images": _images(3)}, "only one of"),
        "test_nan": ({"images": ok, "test_images": np.full((2, 6, 5), np.nan)},
                     "test_images contain NaN"),
    }


@pytest.mark.parametrize("case", list(_bad_npz_cases()))
def test_npz_bad_data(tmp_path, case):
    arrays, message = _bad_npz_cases()[case]
    path = tmp_path / f"{case}.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as e:
        load_data(f"npz:{path}", "all")
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_npz_unreadable_files(tmp_path):
    np.savez(tmp_path / "good.npz", images=_images(30))
    raw = (tmp_path / "good.npz").read_bytes()
    cases = {"truncated.npz": raw[: len(raw) // 2], "garbage.npz": b"not a zip at all" * 10}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "single.npy", _images(3))
    np.savez(tmp_path / "objects.npz", images=np.array([_images(2), None], dtype=object))
    messages = {"truncated.npz": "not a readable", "garbage.npz": "no zip header",
                "single.npy": "single .npy", "objects.npz": "Object arrays",
                "missing.npz": "no such file"}
    for name, message in messages.items():
        with pytest.raises(DataError, match=message) as e:
            load_data(f"npz:{tmp_path / name}")
        assert name in str(e.value), str(e.value)
    with pytest.raises(DataError, match="is a directory"):
        load_data(f"npz:{tmp_path}")


def test_tiny_set_with_empty_test_split(tmp_path):
    np.savez(tmp_path / "two.npz", images=_images(2))
    assert len(load_data(f"npz:{tmp_path / 'two.npz'}", "train")) == 2
    with pytest.raises(DataError, match="two.npz: the test split is empty"):
        load_data(f"npz:{tmp_path / 'two.npz'}", "test")


# ---------------------------------------------------------------------------------------------
# HDF5
# ---------------------------------------------------------------------------------------------

def _write_h5(path, images, labels=None, **extra):
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, chunks=(4,) + images.shape[1:])
        if labels is not None:
            f.create_dataset("labels", data=labels)
        for key, value in extra.items():
            f.create_dataset(key, data=value)
    return path


@pytest.mark.parametrize("with_labels", [False, True])
def test_h5_splits_and_unsorted_batches(tmp_path, with_labels):
    images = _images(50, (1, 5, 4))
    labels = _labels(50) if with_labels else None
    path = _write_h5(tmp_path / "d.h5", images, labels)
    train, test = load_data(f"h5:{path}", "train"), load_data(f"h5:{path}", "test")
    assert (len(train), len(test)) == (40, 10)  # the last 20 % by index
    assert test.image_shape == (1, 5, 4)
    if with_labels:
        np.testing.assert_array_equal(test.labels, labels[40:])
    else:
        assert test.labels is None
    idx = [7, 2, 9, 2, 0]  # unsorted, repeated
    np.testing.assert_allclose(test.batch(idx).numpy(), images[40:][idx] / 255, atol=1e-6)
    np.testing.assert_allclose(train.batch([39, 0]).numpy(), images[[39, 0]] / 255, atol=1e-6)
    rows = train.spread_rows(3)
    np.testing.assert_allclose(train.images(3).numpy(), images[rows] / 255, atol=1e-6)
    train.close()
    test.close()


def test_h5_reads_lazily(tmp_path, monkeypatch):
    images = _images(200, (8, 8))
    path = _write_h5(tmp_path / "big.h5", images, _labels(200))
    reads = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        out = original(self, key)
        if self.name == "/images":
            reads.append(np.shape(out)[0])
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    data = load_data(f"h5:{path}", "all")
    assert reads == []  # opening reads shapes and labels, no pixels
    held = [v for v in vars(data._source).values() if isinstance(v, np.ndarray)]
    assert not held  # no in-memory copy of the pixels
    x = data.batch([150, 3, 77])
    np.testing.assert_allclose(x.numpy()[:, 0], images[[150, 3, 77]] / 255, atol=1e-6)
    assert sum(reads) == 3
    reads.clear()
    for _, batch in data.batches(16, shuffle=True, seed=1):
        assert batch.shape[0] <= 16
    assert max(reads) <= 32 and sum(reads) <= 2 * 200  # bounded by the batch, never the file
    data.close()
    clone = pickle.loads(pickle.dumps(data))  # handle dropped, reopened on demand
    assert torch.equal(clone.batch([5]), data.batch([5]))
    clone.close()
    data.close()


def test_h5_test_datasets_group_and_dataset_specs(tmp_path):
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("fashion")
        g["images"], g["labels"] = _images(10), _labels(10)
        g["test_images"], g["test_labels"] = _images(4), _labels(4)
        f["raw"] = RNG.random((5, 6, 5)) * 255
        f["raw"].attrs["max_value"] = 255.0
    test = load_data(f"h5:{path}:fashion", "test")
    assert len(test) == 4 and test.labels.tolist() == [0, 1, 2, 3]
    assert len(load_data(f"h5:{path}:fashion", "all")) == 14
    raw = load_data(f"h5:{path}:raw", "all")
    assert raw.labels is None and raw.images().min() >= 0 and raw.images().max() <= 1
    with pytest.raises(DataError, match="no dataset or group 'nope'"):
        load_data(f"h5:{path}:nope")
    with pytest.raises(DataError, match="no 'images' dataset"):
        load_data(f"h5:{path}")


def test_h5_bad_values_are_caught_per_batch(tmp_path):
    images = RNG.random((20, 4, 4))
    images[13, 1, 1] = np.nan
    images[2, 0, 0] = 7.0
    path = _write_h5(tmp_path / "vals.h5", images)
    data = load_data(f"h5:{path}", "all")  # opening does not read pixels
    assert data.batch([0, 1]).shape == (2, 1, 4, 4)
    with pytest.raises(DataError, match=r"vals.h5: images\[13:14\] contain NaN or inf"):
        data.batch([13])
    with pytest.raises(DataError, match=r"vals.h5: images.*outside \[0, 1\].*max_value"):
        data.batch([2])
    with pytest.raises(DataError, match="vals.h5"):
        list(data.batches(8))
    data.close()


@pytest.mark.parametrize("case", ["rank", "channels", "empty", "labels", "label_type",
                                  "max_value", "strings"])
def test_h5_bad_layout(tmp_path, case):
    path = tmp_path / f"{case}.h5"
    ok = _images(6)
    arrays = {"rank": dict(images=np.zeros((6, 4), np.uint8)),
              "channels": dict(images=np.zeros((6, 5, 4, 4), np.uint8)),
              "empty": dict(images=np.zeros((0, 4, 4), np.uint8)),
              "labels": dict(images=ok, labels=np.arange(5)),
              "label_type": dict(images=ok, labels=RNG.random(6)),
              "max_value": dict(images=ok),
              "strings": dict(images=np.array([b"abc"] * 6))}[case]
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
        if case == "max_value":
            f["images"].attrs["max_value"] = -1.0
    with pytest.raises(DataError) as e:
        load_data(f"h5:{path}", "all")
    assert str(path) in str(e.value)


def test_h5_corrupt_and_truncated(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 50)
    path = _write_h5(tmp_path / "cut.h5", _images(400, (16, 16)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    for name in ("junk.h5", "cut.h5", "missing.h5"):
        with pytest.raises(DataError, match=name):
            data = load_data(f"h5:{tmp_path / name}", "all")
            data.images()


# ---------------------------------------------------------------------------------------------
# folder
# ---------------------------------------------------------------------------------------------

def _save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_class_subfolders(tmp_path):
    for c, name in enumerate(["zebra", "ant", "cat"]):
        for i in range(5):
            _save_png(tmp_path / name / f"{i}.png", np.full((10, 12), 40 * c + i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    spec = f"folder:{tmp_path}"
    every = load_data(spec, "all")
    assert every.class_names == ["ant", "cat", "zebra"]
    assert every.image_shape == (1, 28, 28) and len(every) == 15
    assert np.bincount(every.labels).tolist() == [5, 5, 5]
    x = every.images()
    assert torch.allclose(x[every.labels == 2].amax(), torch.tensor(4 / 255))  # ant: 0..4
    train, test = load_data(spec, "train"), load_data(spec, "test")
    assert (len(train), len(test)) == (12, 3) and sorted(test.labels) == [0, 1, 2]
    small = load_data(spec, "all", image_size=(5, 6))
    assert small.image_shape == (1, 5, 6) and small.images().shape == (15, 1, 5, 6)


def test_folder_colour_and_flat(tmp_path):
    for i in range(4):
        _save_png(tmp_path / f"{i}.png", np.zeros((8, 8), np.uint8))
    Image.fromarray(np.full((9, 7, 3), [255, 0, 0], np.uint8)).save(tmp_path / "red.jpg")
    data = load_data(f"folder:{tmp_path}", "all", image_size=8)
    assert data.labels is None and data.class_names is None
    assert data.image_shape == (3, 8, 8)
    red = data.images()[4]  # sorted names: 0..3.png, red.jpg
    assert red[0].min() > 0.9 and red[1].max() < 0.1


def test_folder_problems(tmp_path):
    with pytest.raises(DataError, match="no images"):
        load_data(f"folder:{tmp_path}")
    _save_png(tmp_path / "a" / "0.png", np.zeros((4, 4), np.uint8))
    _save_png(tmp_path / "loose.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="top level and class sub-folders"):
        load_data(f"folder:{tmp_path}")
    (tmp_path / "loose.png").unlink()
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        load_data(f"folder:{tmp_path}", "all")
    with pytest.raises(DataError, match="no such directory"):
        load_data(f"folder:{tmp_path / 'missing'}")


# ---------------------------------------------------------------------------------------------
# ImageData: batches, shards, subsets
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def small():
    return ImageData.from_arrays(_images(23, (3, 3)), _labels(23), name="small")


def test_batches_deterministic_given_seed_and_epoch(small):
    def order(**kw):
        return np.concatenate([idx for idx, _ in small.batches(5, shuffle=True, **kw)])

    a = order(seed=3, epoch=1)
    assert np.array_equal(a, order(seed=3, epoch=1))
    assert not np.array_equal(a, order(seed=3, epoch=2))
    assert not np.array_equal(a, order(seed=4, epoch=1))
    assert sorted(a) == list(range(23))
    plain = list(small.batches(5))
    assert [len(i) for i, _ in plain] == [5, 5, 5, 5, 3]
    assert np.array_equal(np.concatenate([i for i, _ in plain]), np.arange(23))
    for idx, x in plain:
        assert torch.equal(x, small.batch(idx))
    assert [len(i) for i, _ in small.batches(5, drop_last=True)] == [5] * 4


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_rank_shards_disjoint_equal_length(small, world_size):
    shards = [np.concatenate([i for i, _ in small.batches(4, shuffle=True, seed=7, epoch=2,
                                                          rank=r, world_size=world_size)])
              for r in range(world_size)]
    per_rank = -(-23 // world_size)
    assert all(len(s) == per_rank for s in shards)
    counts = [len(list(small.batches(4, rank=r, world_size=world_size)))
              for r in range(world_size)]
    assert len(set(counts)) == 1
    everything = np.concatenate(shards)
    assert set(everything) == set(range(23))
    assert len(everything) - len(set(everything)) == per_rank * world_size - 23  # only padding


def test_batches_argument_checks(small):
    for kw in ({"batch_size": 0}, {"batch_size": 2.5}, {"batch_size": True},
               {"batch_size": 2, "rank": 2, "world_size": 2},
               {"batch_size": 2, "world_size": 0}, {"batch_size": 2, "seed": -1}):
        with pytest.raises(ValueError):
            small.batches(**kw)  # checked at the call, before iterating
    with pytest.raises(ValueError, match="limit"):
        small.images(-1)


def test_subset_images_and_from_arrays(small):
    sub = small.subset([20, 1, 5])
    assert len(sub) == 3 and sub.labels.tolist() == [0, 1, 1]
    assert torch.equal(sub.images(), small.batch([20, 1, 5]))
    assert torch.equal(sub.subset([2]).images(), small.batch([5]))
    assert small.images(4).shape == (4, 1, 3, 3) and small.images(100).shape[0] == 23
    assert small.batch([]).shape == (0, 1, 3, 3)
    assert torch.equal(small.batch(torch.tensor([2, 0])), small.batch(range(2, -1, -2)))
    with pytest.raises(IndexError):
        small.batch([23])
    with pytest.raises(IndexError):
        small.subset([-1])
    with pytest.raises(DataError, match="mine: images contain NaN"):
        ImageData.from_arrays(np.full((2, 3, 3), np.nan), name="mine")
    booleans = ImageData.from_arrays(np.eye(3, dtype=bool)[None])
    assert booleans.images().sum() == 3


# ---------------------------------------------------------------------------------------------
# Limits: class-spread subsets, never a prefix
# ---------------------------------------------------------------------------------------------

def _class_sorted(classes=10, per_class=100):
    labels = np.repeat(np.arange(classes), per_class)
    return ImageData.from_arrays(_images(len(labels), (2, 2)), labels, name="sorted")


@pytest.mark.parametrize("n", [10, 37, 100, 999])
def test_spread_subset_of_a_class_sorted_set_covers_every_class(n):
    data = _class_sorted()
    rows = data.spread_rows(n)
    counts = np.bincount(data.labels[rows], minlength=10)
    assert len(rows) == n and len(set(rows.tolist())) == n and (np.diff(rows) > 0).all()
    assert counts.min() >= 1 and counts.max() - counts.min() <= 1  # in proportion
    sub = data.spread_subset(n)
    np.testing.assert_array_equal(sub.labels, data.labels[rows])  # labels follow their rows
    assert torch.equal(sub.images(), data.batch(rows))
    assert torch.equal(data.images(n), data.batch(rows))
    np.testing.assert_array_equal(rows, data.spread_rows(n))  # deterministic
    assert set(data.spread_rows(n // 2).tolist()) <= set(rows.tolist())  # nested


def test_spread_subset_covers_small_classes_then_keeps_proportions():
    labels = np.array([0] * 90 + [1] * 9 + [2])
    data = ImageData.from_arrays(_images(100, (2, 2)), labels)
    assert np.bincount(labels[data.spread_rows(3)]).tolist() == [1, 1, 1]
    assert np.bincount(labels[data.spread_rows(20)]).tolist() == [17, 2, 1]


def test_spread_subset_without_labels_is_a_seeded_permutation():
    data = ImageData.from_arrays(_images(50, (2, 2)))
    rows = data.spread_rows(10)
    assert not np.array_equal(rows, np.arange(10))
    np.testing.assert_array_equal(rows, data.spread_rows(10, seed=0))
    assert not np.array_equal(rows, data.spread_rows(10, seed=1))
    np.testing.assert_array_equal(data.spread_rows(80), np.arange(50))  # all of a small set
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="limit"):
            data.spread_rows(bad)
