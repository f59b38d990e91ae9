"""Codes: the inference wrapper that turns images into codes as training infers them
(:class:`CodeInference`), the one loop over a data set's batches of codes
(:func:`code_batches`, which :func:`infer_codes` and
:func:`~pyro_sparsegen.monitor.evaluate` are built on), and the codes' HDF5 file."""

import contextlib
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from . import builders
from .abp import infer_latents
from .distributions import ACTIVE_THRESHOLD
from .files import open_verified, write_sealed_h5
from .metrics import active_mask, per_image_mse


class CodeInference:
    """Codes for images ``x: [images, C, H, W]`` -> ``z: [images, latent_dim]`` (detached),
    exactly as training infers them.

    Uses the model's own ``encode`` when it has one (amortised baselines; ``kernel`` may be
    ``None`` then), else a fresh short run of the kernel
    (:func:`~pyro_sparsegen.abp.infer_latents`); with ``sparsify`` every coordinate whose
    inclusion probability is below 0.5 is then set to exactly 0
    (:func:`~pyro_sparsegen.abp.sparsified`). All the inferred latents of the last call are in
    :attr:`last_latents`, the kernel's :class:`~pyro_sparsegen.infer.RunStats` in
    :attr:`last_run` (``None`` for an amortised encoder).
    """

    def __init__(self, model, kernel, sparsify=False):
        self.model, self.kernel, self.sparsify = model, kernel, sparsify
        #: the kernel's statistics of the last call (``None`` for an amortised encoder)
        self.last_run = None
        #: ``{site: value}`` of the last call
        self.last_latents = None

    def __call__(self, x):
        if hasattr(self.model, "encode"):
            with torch.no_grad():
                z = self.model.encode(x)
            self.last_run, self.last_latents = None, {"z": z}
            return z
        self.last_latents, _ = infer_latents(self.model, self.kernel, (x,), {},
                                             sparsify=self.sparsify)
        self.last_run = self.kernel.last_run
        return self.last_latents[getattr(self.model, "code_site", "z")]


def make_inference(model, config):
    """The :class:`CodeInference` of a run's config (its kernel and ``langevin.sparsify``)."""
    return CodeInference(model, builders.make_kernel(model, config), config.langevin.sparsify)


class CodeBatch(NamedTuple):
    """One batch of :func:`code_batches`: the clean images ``x: [batch, C, H, W]``, their codes
    ``z: [batch, latent]`` and every inferred latent (``{site: value}``)."""

    x: torch.Tensor
    z: torch.Tensor
    latents: dict


def code_batches(data, encoder, *, batch_size=100, device="cpu", limit=None, noise=0.0,
                 clip=False, progress=False):
    """The codes ``encoder`` infers for the images of ``data``, batch after batch
    (:class:`CodeBatch`).

    :param limit: only this many images, a class-spread subset
        (:meth:`~pyro_sparsegen.data.ImageData.spread_subset`), never the first ones.
    :param noise: std of Gaussian noise added to the images before inference (not clipped,
        as in the authors' protocol, unless ``clip``); the batch's ``x`` stays clean.
    """
    if limit is not None:
        data = data.spread_subset(limit)
    n = len(data)
    for start in tqdm(range(0, n, batch_size), disable=not progress, desc="encode",
                      unit="batch"):
        x = data.batch(range(start, min(start + batch_size, n))).to(device)
        observed = x + noise * torch.randn_like(x) if noise else x
        if clip:
            observed = observed.clamp(0, 1)
        z = encoder(observed)
        yield CodeBatch(x, z, getattr(encoder, "last_latents", None) or {"z": z})


def infer_codes(model, data, encoder, *, threshold=ACTIVE_THRESHOLD, batch_size=100,
                device="cpu", limit=None, noise=0.0, clip=False, progress=False):
    """Infer codes for every image of ``data`` (an :class:`~pyro_sparsegen.data.ImageData`)
    with ``encoder`` (``images -> z``, e.g. :func:`make_inference`).

    ``limit``, ``noise``, ``clip``: see :func:`code_batches`; MSEs are measured against the
    clean images.

    :return: dict of numpy arrays: ``z`` ``[N, d]``, ``inclusion_probability`` ``[N, d]``
        (when the prior has one), ``active`` ``[N, d]`` (``|z| > threshold``), ``mse``,
        ``zeroed_mse`` ``[N]`` and ``labels`` ``[N]`` (of the encoded images) when the data
        has labels.
    """
    if limit is not None:
        data = data.spread_subset(limit)
    # Every batch is copied into arrays of all N rows made at the first batch: keeping the
    # batches' small tensors for one concatenation at the end pinned the freed temporaries
    # around them in the heap, so the process grew by about 7 KB an image for 0.9 KB of codes
    # (benchmarks/load.py), and the concatenation doubled the codes at the end.
    out, n, start = {}, len(data), 0
    model.eval()
    for x, z, _ in code_batches(data, encoder, batch_size=batch_size, device=device,
                                noise=noise, clip=clip, progress=progress):
        active, _ = active_mask(model, z, threshold)
        with torch.no_grad():
            mse = per_image_mse(model.decode(z), x)
            zeroed = per_image_mse(model.decode(z * active), x)
        batch = {"z": z}  # in the order of the file's datasets
        with contextlib.suppress(NotImplementedError, AttributeError):  # priors without one
            batch["inclusion_probability"] = model.inclusion_probability(z).detach()
        batch.update(active=active, mse=mse, zeroed_mse=zeroed)
        batch = {k: v.cpu().numpy() for k, v in batch.items()}
        if start == 0:
            out = {k: np.empty((n,) + v.shape[1:], dtype=v.dtype) for k, v in batch.items()}
        for key, rows in out.items():
            rows[start:start + len(z)] = batch[key]
        start += len(z)
    if data.labels is not None:
        out["labels"] = np.asarray(data.labels)
    return out


def save_codes(path, codes, **attrs):
    """Write ``codes`` (from :func:`infer_codes`) to HDF5 atomically, with the file's SHA-256
    in its user block (:func:`~pyro_sparsegen.files.write_sealed_h5`); ``attrs`` are stored as file
    attributes (e.g. the checkpoint it came from)."""
    def fill(f):
        for key, value in codes.items():
            f.create_dataset(key, data=value, compression="gzip")
        for key, value in attrs.items():
            f.attrs[key] = value

    return write_sealed_h5(path, fill)


def load_codes(path):
    """Read a codes file back: ``(arrays, attrs)``. Its checksum is checked first
    (:func:`~pyro_sparsegen.files.open_verified`): a damaged file raises
    :class:`~pyro_sparsegen.files.DamagedFileError` in one line; one written before codes
    files carried a checksum loads with one :class:`~pyro_sparsegen.files.UnverifiedWarning`."""
    handle, _ = open_verified(path, "codes file")
    with handle as f:
        return {k: f[k][()] for k in f}, dict(f.attrs)


# the names of the previous layout: deprecated aliases for one release
_MOVED = {"Encoder": (__name__, "CodeInference"), "make_encoder": (__name__, "make_inference"),
          "encode_dataset": (__name__, "infer_codes")}


def __getattr__(name):
    from .errors import moved

    return moved(__name__, name, _MOVED)
