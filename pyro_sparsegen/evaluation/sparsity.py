"""Reconstruction against sparsity, and which dimensions each class uses.

For the codes ``z*`` a model's code inference gives held-out images (:func:`dataset_codes`):

- ``test_mse``: per-pixel MSE of ``g(z*)`` against the image;
- ``zeroed_mse``: the same after setting every coordinate with ``|z_j| <= threshold``
  (:data:`~pyro_sparsegen.distributions.ACTIVE_THRESHOLD`, the authors' 0.2) to exactly 0 — a
  sparse code must really be sparse;
- ``inactive_fraction``: the fraction of coordinates with ``|z_j| <= threshold``;
- ``mean_active``: the mean number of active coordinates per image (``d`` times the active
  fraction), the "budget" a dense model of that size gets;
- ``class_jaccard``: :func:`pyro_sparsegen.diagnostics.class_jaccard` of the per-class active
  sets (a dimension is in a class's set when at least half of its images use it).
"""

import numpy as np

from .. import diagnostics
from ..distributions import ACTIVE_THRESHOLD, is_included
from ..encoding import infer_codes
from ..runtime import LazyModule
from .adapters import seeded

xr = LazyModule("xarray")  # imported when first used

THRESHOLD = ACTIVE_THRESHOLD  # its earlier name here, kept as an alias


def dataset_codes(model, encoder, data, *, threshold=ACTIVE_THRESHOLD, batch_size=100,
                  device="cpu", seed=0):
    """The codes of every image of ``data`` with their inclusion probabilities:
    :func:`pyro_sparsegen.infer_codes` under a seeded RNG. A dict with ``z`` ``[N, d]``,
    ``active`` (``|z| > threshold``), ``mse``, ``zeroed_mse`` ``[N]``, ``labels`` and, for
    spike-and-slab priors, ``inclusion_probability`` ``[N, d]``.

    :param encoder: the model's code inference (:func:`pyro_sparsegen.make_inference`) or an
        amortised encoder, ``images -> z``.
    """
    # The package's loop over a data set by its public name (the analysis layer knows the
    # public API, not the run layer's modules); looked up at call time because the package's
    # __init__ binds the name after importing this subpackage.

    with seeded(seed, device):
        return infer_codes(model, data, encoder, threshold=threshold, batch_size=batch_size,
                           device=device)


encode_codes = dataset_codes  # its earlier name, an alias for one release


def sparsity_summary(codes):
    """The reconstruction-vs-sparsity numbers of :func:`dataset_codes`' ``codes``: a dict with
    ``test_mse``, ``zeroed_mse``, ``inactive_fraction``, ``mean_active``, ``latent_dim`` and,
    where the prior has inclusion probabilities, ``inactive_fraction_inclusion`` (the fraction
    not :func:`~pyro_sparsegen.distributions.is_included`: below 0.5)."""
    active = np.asarray(codes["active"], dtype=bool)
    out = {"test_mse": float(np.mean(codes["mse"])),
           "zeroed_mse": float(np.mean(codes["zeroed_mse"])),
           "inactive_fraction": float(1.0 - active.mean()),
           "mean_active": float(active.sum(1).mean()),
           "latent_dim": int(active.shape[1])}
    if "inclusion_probability" in codes:
        included = is_included(np.asarray(codes["inclusion_probability"]))
        out["inactive_fraction_inclusion"] = float(1.0 - included.mean())
    return out


def reconstruction_sparsity(model, encoder, data, *, threshold=ACTIVE_THRESHOLD,
                            batch_size=100, device="cpu", seed=0):
    """:func:`sparsity_summary` of the codes of ``data``.

    Example::

        >>> reconstruction_sparsity(model, psg.make_inference(model, config), test)
        {'test_mse': 0.011, 'zeroed_mse': 0.012, 'inactive_fraction': 0.93, 'mean_active': 7.1,
         'latent_dim': 100, ...}
    """
    return sparsity_summary(dataset_codes(model, encoder, data, threshold=threshold,
                                          batch_size=batch_size, device=device, seed=seed))


def codes_posterior(codes):
    """The codes as a one-chain, one-draw posterior Dataset (``z`` ``[chain, draw, image,
    latent]``), so that :mod:`pyro_sparsegen.diagnostics`' metrics apply to them."""
    z = np.asarray(codes["z"])
    return xr.Dataset({"z": (("chain", "draw", "image", "latent"), z[None, None])},
                      coords={"image": np.arange(z.shape[0]), "latent": np.arange(z.shape[1])})


def class_usage(codes, *, threshold=ACTIVE_THRESHOLD):
    """``[class, latent]``: the fraction of each class's images with ``|z_j| > threshold``
    (:func:`pyro_sparsegen.diagnostics.class_usage`)."""
    return diagnostics.class_usage(codes_posterior(codes), labels=codes["labels"],
                                   threshold=threshold, by="magnitude")


def class_overlap(codes, *, threshold=ACTIVE_THRESHOLD, min_usage=diagnostics.MIN_USAGE):
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
