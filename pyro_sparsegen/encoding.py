"""Codes for a whole data set, and their HDF5 file."""

import contextlib

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import atomic_file
from .training import active_mask


def encode_dataset(model, data, encoder, *, threshold=0.2, batch_size=100, device="cpu",
                   limit=None, noise=0.0, clip=False, progress=False):
    """Infer codes for every image of ``data`` (an :class:`~pyro_sparsegen.data.ImageData`)
    with ``encoder`` (``images -> z``, e.g. :func:`~pyro_sparsegen.training.make_encoder`).

    :param limit: encode only this many images, a class-spread subset
        (:meth:`~pyro_sparsegen.data.ImageData.spread_subset`), never the first ones.
    :param noise: std of Gaussian noise added to the images before inference (not clipped,
        as in the authors' protocol, unless ``clip``); MSEs are measured against the clean
        images.
    :return: dict of numpy arrays: ``z`` ``[N, d]``, ``inclusion_probability`` ``[N, d]``
        (when the prior has one), ``active`` ``[N, d]`` (``|z| > threshold``), ``mse``,
        ``zeroed_mse`` ``[N]`` and ``labels`` ``[N]`` (of the encoded images) when the data
        has labels.
    """
    if limit is not None:
        data = data.spread_subset(limit)
    n = len(data)
    parts = {k: [] for k in ("z", "inclusion_probability", "active", "mse", "zeroed_mse")}
    model.eval()
    for start in tqdm(range(0, n, batch_size), disable=not progress, desc="encode",
                      unit="batch"):
        x = data.batch(range(start, min(start + batch_size, n))).to(device)
        observed = x + noise * torch.randn_like(x) if noise else x
        if clip:
            observed = observed.clamp(0, 1)
        z = encoder(observed)
        active, _ = active_mask(model, z, threshold)
        with torch.no_grad():
            mse = ((model.decode(z) - x) ** 2).flatten(1).mean(1)
            zeroed = ((model.decode(z * active) - x) ** 2).flatten(1).mean(1)
        parts["z"].append(z.cpu())
        parts["active"].append(active.cpu())
        parts["mse"].append(mse.cpu())
        parts["zeroed_mse"].append(zeroed.cpu())
        with contextlib.suppress(NotImplementedError, AttributeError):  # priors without one
            parts["inclusion_probability"].append(model.inclusion_probability(z).detach().cpu())
    out = {k: torch.cat(v).numpy() for k, v in parts.items() if v}
    if data.labels is not None:
        out["labels"] = np.asarray(data.labels)
    return out


def save_codes(path, codes, **attrs):
    """Write ``codes`` (from :func:`encode_dataset`) to HDF5 atomically; ``attrs`` are stored
    as file attributes (e.g. the checkpoint it came from)."""
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in codes.items():
            f.create_dataset(key, data=value, compression="gzip")
        for key, value in attrs.items():
            f.attrs[key] = value
    return path


def load_codes(path):
    """Read a codes file back: ``(arrays, attrs)``."""
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}, dict(f.attrs)
