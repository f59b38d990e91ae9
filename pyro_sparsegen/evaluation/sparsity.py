"""Reconstruction against sparsity, and which dimensions each class uses.

For the codes ``z*`` a model's encoder infers on held-out images (:func:`encode_codes`):

- ``test_mse``: per-pixel MSE of ``g(z*)`` against the image;
- ``zeroed_mse``: the same after setting every coordinate with ``|z_j| <= threshold`` (0.2, the
  authors' threshold) to exactly 0 — a sparse code must really be sparse;
- ``inactive_fraction``: the fraction of coordinates with ``|z_j| <= threshold``;
- ``mean_active``: the mean number of active coordinates per image (``d`` times the active
  fraction), the "budget" a dense model of that size gets;
- ``class_jaccard``: :func:`pyro_sparsegen.diagnostics.class_jaccard` of the per-class active
  sets (a dimension is in a class's set when at least half of its images use it).
"""

import numpy as np
import xarray as xr

from .. import diagnostics
from ..encoding import encode_dataset
from .adapters import seeded

THRESHOLD = 0.2


def encode_codes(model, encoder, data, *, threshold=THRESHOLD, batch_size=100, device="cpu",
                 seed=0):
    """:func:`pyro_sparsegen.encode_dataset` of every image of ``data`` with a seeded RNG:
    ``z`` ``[N, d]``, ``active`` (``|z| > threshold``), ``mse``, ``zeroed_mse`` ``[N]``,
    ``labels`` and, for spike-and-slab priors, ``inclusion_probability``."""
    with seeded(seed, device):
        return encode_dataset(model, data, encoder, threshold=threshold, batch_size=batch_size,
                              device=device)


def sparsity_summary(codes):
    """The reconstruction-vs-sparsity numbers of :func:`encode_codes`'s ``codes``: a dict with
    ``test_mse``, ``zeroed_mse``, ``inactive_fraction``, ``mean_active``, ``latent_dim`` and,
    where the prior has inclusion probabilities, ``inactive_fraction_inclusion`` (< 0.5)."""
    active = np.asarray(codes["active"], dtype=bool)
    out = {"test_mse": float(np.mean(codes["mse"])),
           "zeroed_mse": float(np.mean(codes["zeroed_mse"])),
           "inactive_fraction": float(1.0 - active.mean()),
           "mean_active": float(active.sum(1).mean()),
           "latent_dim": int(active.shape[1])}
    if "inclusion_probability" in codes:
        out["inactive_fraction_inclusion"] = float((codes["inclusion_probability"] < 0.5).mean())
    return out


def reconstruction_sparsity(model, encoder, data, *, threshold=THRESHOLD, batch_size=100,
                            device="cpu", seed=0):
    """:func:`sparsity_summary` of the codes of ``data``.

    Example::

        >>> reconstruction_sparsity(model, psg.make_encoder(model, config), test)
        {'test_mse': 0.011, 'zeroed_mse': 0.012, 'inactive_fraction': 0.93, 'mean_active': 7.1,
         'latent_dim': 100, ...}
    """
    return sparsity_summary(encode_codes(model, encoder, data, threshold=threshold,
                                         batch_size=batch_size, device=device, seed=seed))


def codes_posterior(codes):
    """The codes as a one-chain, one-draw posterior Dataset (``z`` ``[chain, draw, image,
    latent]``), so that :mod:`pyro_sparsegen.diagnostics`' metrics apply to them."""
    z = np.asarray(codes["z"])
    return xr.Dataset({"z": (("chain", "draw", "image", "latent"), z[None, None])},
                      coords={"image": np.arange(z.shape[0]), "latent": np.arange(z.shape[1])})


def class_usage(codes, *, threshold=THRESHOLD):
    """``[class, latent]``: the fraction of each class's images with ``|z_j| > threshold``
    (:func:`pyro_sparsegen.diagnostics.class_usage`)."""
    return diagnostics.class_usage(codes_posterior(codes), labels=codes["labels"],
                                   threshold=threshold, by="magnitude")


def class_overlap(codes, *, threshold=THRESHOLD, min_usage=0.5):
    """Per-class active sets and their overlap, :func:`pyro_sparsegen.diagnostics.class_jaccard`
    on the codes: a dict with ``class_jaccard`` (mean over pairs of classes, ``nan`` when every
    set is empty), ``empty_class_sets``, ``dimensions_used`` (by at least 1 % of the images),
    ``usage`` (``[class, latent]``) and ``active_sets`` (boolean ``[class, latent]``)."""
    usage = class_usage(codes, threshold=threshold)
    jac = diagnostics.class_jaccard(usage, min_usage=min_usage)
    sets = jac["active"]
    return {"class_jaccard": float(jac["mean_off_diagonal"]),
            "empty_class_sets": int((~sets.any("latent")).sum()),
            "dimensions_used": int((np.asarray(codes["active"]).mean(0) >= 0.01).sum()),
            "usage": usage, "active_sets": sets}
