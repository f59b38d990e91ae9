"""Metrics of a posterior: xarray in, xarray out.

Every function takes an :class:`arviz.InferenceData` (or its posterior Dataset) with ``z``
``[chain, draw, image, latent]`` and, where the prior has them, ``inclusion_probability``, and
returns xarray objects with named dims. They reduce first (to one number per image, per
dimension or per class) and only then summarise, so nothing loops over the scalars of a large
posterior.

A coordinate ``z_j`` is *active* ``by="magnitude"`` when ``|z_j| > threshold``
(:data:`~pyro_sparsegen.distributions.ACTIVE_THRESHOLD`, the authors' 0.2) and
``by="inclusion"`` when its posterior slab probability is included
(:func:`~pyro_sparsegen.distributions.is_included`: at least 0.5, as training decides).
"""

import numpy as np

from ..distributions import ACTIVE_THRESHOLD, is_included
from ..runtime import LazyModule

az, xr = LazyModule("arviz"), LazyModule("xarray")  # imported when first used

BY = ("inclusion", "magnitude")
MIN_USAGE = 0.5
"""A dimension is in a class's *active set* when at least this fraction of the class's images
use it (every default ``min_usage=`` is this constant)."""


def _posterior(data):
    if isinstance(data, az.InferenceData):
        return data.posterior
    if isinstance(data, xr.Dataset):
        return data
    raise ValueError(f"expected InferenceData or a posterior Dataset, got {type(data).__name__}")


def active(data, *, threshold=ACTIVE_THRESHOLD, by="inclusion"):
    """Active indicator of every coordinate of every draw: boolean
    ``[chain, draw, image, latent]``."""
    post = _posterior(data)
    if by == "magnitude":
        return abs(post["z"]) > threshold
    if by == "inclusion":
        if "inclusion_probability" not in post:
            raise ValueError("the posterior has no inclusion_probability: call "
                             "add_inclusion_probability(idata, model) or use by='magnitude'")
        # the same decision as training's masks and sparsification (``>= 0.5``) everywhere
        return is_included(post["inclusion_probability"])
    raise ValueError(f"by must be one of {BY}, got {by!r}")


def inactive_fraction(data, *, threshold=ACTIVE_THRESHOLD, by="inclusion"):
    """Fraction of inactive coordinates per image and draw: ``[chain, draw, image]``."""
    act = active(data, threshold=threshold, by=by)
    # Counting the booleans avoids a float64 copy of the whole posterior.
    return (1.0 - act.sum("latent") / act.sizes["latent"]).rename(f"inactive_{by}")


def activation_probability(data, *, threshold=ACTIVE_THRESHOLD, by="inclusion"):
    """Posterior probability that each coordinate is active: ``[image, latent]``."""
    act = active(data, threshold=threshold, by=by)
    return (act.sum(("chain", "draw")) / (act.sizes["chain"] * act.sizes["draw"])).rename(
        "active")


def image_sparsity(data, *, threshold=ACTIVE_THRESHOLD, hdi_prob=0.94):
    """Per-image posterior sparsity: for ``by`` in (``magnitude``, ``inclusion``) the variables
    ``inactive_<by>`` (posterior mean of the inactive fraction, ``[image]``) and
    ``inactive_<by>_hdi`` (its HDI, ``[image, hdi]``); ``inclusion`` only when the posterior
    has inclusion probabilities."""
    post = _posterior(data)
    out = {}
    for by in BY:
        if by == "inclusion" and "inclusion_probability" not in post:
            continue
        frac = inactive_fraction(post, threshold=threshold, by=by)
        out[f"inactive_{by}"] = frac.mean(("chain", "draw"))
        out[f"inactive_{by}_hdi"] = az.hdi(frac, hdi_prob=hdi_prob)[frac.name]
    ds = xr.Dataset(out)
    ds.attrs.update(threshold=threshold, hdi_prob=hdi_prob)
    return ds


def code_usage(data, *, threshold=ACTIVE_THRESHOLD, by="inclusion"):
    """Per latent dimension, the fraction of images that use it (the posterior mean of the
    active indicator, averaged over images): ``[latent]``."""
    return activation_probability(data, threshold=threshold, by=by).mean("image").rename("usage")


def _labels(data, labels):
    if labels is None:
        if not isinstance(data, az.InferenceData) or "constant_data" not in data.groups() \
                or "label" not in data.constant_data:
            raise ValueError("class metrics need labels: give labels=... or an InferenceData "
                             "with constant_data.label")
        return data.constant_data["label"].values
    return np.asarray(labels)


def class_usage(data, *, labels=None, threshold=ACTIVE_THRESHOLD, by="inclusion"):
    """Per class and latent dimension, the fraction of the class's images that use it:
    ``[class, latent]``, with the image count per class as coordinate ``count``."""
    prob = activation_probability(data, threshold=threshold, by=by)
    labels = _labels(data, labels)
    if labels.shape != (prob.sizes["image"],):
        raise ValueError(f"labels must have shape [{prob.sizes['image']}], "
                         f"got {list(labels.shape)}")
    classes, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    onehot = np.zeros((len(classes), len(labels)))
    onehot[index, np.arange(len(labels))] = 1.0 / counts[index]
    usage = onehot @ prob.transpose("image", "latent").values
    return xr.DataArray(usage, dims=("class", "latent"), name="usage",
                        coords={"class": classes, "latent": prob["latent"].values,
                                "count": ("class", counts)})


def dead_dimensions(data, *, threshold=ACTIVE_THRESHOLD, by="inclusion", tol=0.01):
    """Boolean ``[latent]``: dimensions used by at most a fraction ``tol`` of the images.
    ``mask.latent[mask].values`` lists them."""
    usage = data if isinstance(data, xr.DataArray) else \
        code_usage(data, threshold=threshold, by=by)
    return (usage <= tol).rename("dead")


def class_active_sets(data, *, labels=None, min_usage=MIN_USAGE, threshold=ACTIVE_THRESHOLD,
                      by="inclusion"):
    """Boolean ``[class, latent]``: the dimensions used by at least ``min_usage`` of a
    class's images. ``data`` may also be a ``[class, latent]`` usage array."""
    usage = data if isinstance(data, xr.DataArray) else \
        class_usage(data, labels=labels, threshold=threshold, by=by)
    return (usage >= min_usage).rename("active")


def jaccard(sets):
    """Jaccard overlap between the rows of a boolean ``[class, latent]`` array:
    ``[class, class_other]``; ``nan`` where both sets are empty."""
    a = sets.transpose("class", "latent").values.astype(float)
    inter = a @ a.T
    size = a.sum(1)
    union = size[:, None] + size[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)
    classes = sets["class"].values
    return xr.DataArray(values, dims=("class", "class_other"), name="jaccard",
                        coords={"class": classes, "class_other": classes})


def class_jaccard(data, *, labels=None, min_usage=MIN_USAGE, threshold=ACTIVE_THRESHOLD,
                  by="inclusion"):
    """Jaccard overlap of per-class active sets: a Dataset with ``active`` (``[class,
    latent]``), ``jaccard`` (``[class, class_other]``) and ``mean_off_diagonal`` (scalar,
    ignoring pairs of empty sets). ``data`` may be a boolean ``[class, latent]`` array."""
    if isinstance(data, xr.DataArray) and data.dtype == bool:
        sets = data.rename("active")
    else:
        sets = class_active_sets(data, labels=labels, min_usage=min_usage,
                                 threshold=threshold, by=by)
    jac = jaccard(sets)
    off = jac.values[~np.eye(jac.shape[0], dtype=bool)]
    off = off[np.isfinite(off)]
    mean = float(off.mean()) if off.size else float("nan")
    ds = xr.Dataset({"active": sets, "jaccard": jac, "mean_off_diagonal": mean})
    ds.attrs.update(min_usage=min_usage)
    return ds


def top_dimensions(data, top, *, threshold=ACTIVE_THRESHOLD, by="inclusion"):
    """Latent coordinates of the ``top`` most-used dimensions, most used first."""
    usage = data if isinstance(data, xr.DataArray) else \
        code_usage(data, threshold=threshold, by=by)
    order = np.argsort(-usage.values, kind="stable")[:top]
    return usage["latent"].values[order]


def convergence(data, *, var_names=("z", "inclusion_probability"), top=None,
                threshold=ACTIVE_THRESHOLD, by="inclusion", reduced=True):
    """Split R-hat and bulk ESS of the short runs, through ``az.rhat`` / ``az.ess``.

    :param top: if given, only the ``top`` most-used latent dimensions (``az.rhat`` costs
        about 1 ms per scalar: 22 s for 256 images x 100 dims).
    :param reduced: also diagnose the per-image inactive fraction(s) and ``lp`` (cheap, one
        scalar per image).
    :return: Dataset with ``<var>_rhat`` and ``<var>_ess`` (``[image, latent]`` for ``z`` and
        ``inclusion_probability``; ``[image]`` for reduced quantities).
    """
    post = _posterior(data)
    var_names = [v for v in var_names if v in post]
    if top is not None and var_names:
        by_ok = by if by == "magnitude" or "inclusion_probability" in post else "magnitude"
        post = post.sel(latent=top_dimensions(post, top, threshold=threshold, by=by_ok))
    inputs = {name: post[name] for name in var_names}
    if reduced:
        full = _posterior(data)
        for b in BY:
            if b == "magnitude" or "inclusion_probability" in full:
                frac = inactive_fraction(full, threshold=threshold, by=b)
                inputs[frac.name] = frac
        if isinstance(data, az.InferenceData) and "sample_stats" in data.groups() \
                and "lp" in data.sample_stats and "image" in data.sample_stats["lp"].dims:
            inputs["lp"] = data.sample_stats["lp"]
    ds = xr.Dataset(inputs)
    with np.errstate(all="ignore"):  # constant chains (e.g. noise=False) give nan, not noise
        rhat, ess = az.rhat(ds), az.ess(ds)
    out = {}
    for name in inputs:
        out[f"{name}_rhat"] = rhat[name]
        out[f"{name}_ess"] = ess[name]
    ds = xr.Dataset(out)
    ds.attrs["top"] = "all" if top is None else int(top)
    return ds


RHAT_LIMIT = 1.05
RHAT_STRICT = 1.01  #: the verdict: split R-hat at most this on RHAT_STRICT_SHARE of the reductions
RHAT_STRICT_SHARE = 0.99  #: the share of per-image reductions held to RHAT_STRICT
MIN_ESS = 400  #: the verdict: the smallest bulk ESS of a converged analysis
REDUCTIONS = ("inactive_magnitude", "inactive_inclusion", "lp")


def convergence_verdict(conv, limit=RHAT_LIMIT, *, swap_accept_prob=None):
    """``(converged, max R-hat, line)`` over the reported per-image reductions (inactive
    fractions, ``lp``) of a :func:`convergence` Dataset.

    Converged when split R-hat is at most :data:`RHAT_STRICT` (1.01) on at least
    :data:`RHAT_STRICT_SHARE` (99 %) of the reductions and at most ``limit`` (1.05) on all,
    their bulk ESS is at least :data:`MIN_ESS` (400) and, tempered (``swap_accept_prob``:
    ``[level_pair, image]``, e.g. ``idata.sample_stats["swap_accept_prob"]``), every adjacent
    pair of levels swapped (acceptance > 0) for every image: a ladder cut in two
    communicates nothing from the hot levels to the posterior."""
    def gather(suffix):
        values = [np.asarray(conv[f"{name}_{suffix}"]).ravel() for name in REDUCTIONS
                  if f"{name}_{suffix}" in conv]
        return np.concatenate(values) if values else np.zeros(0)

    values, ess = gather("rhat"), gather("ess")
    finite = values[np.isfinite(values)]
    worst = float(finite.max()) if finite.size else float("nan")
    if not finite.size:
        return False, worst, ("**Convergence unknown**: no finite R-hat (constant chains, "
                              "e.g. noise off).")
    share = float((finite <= RHAT_STRICT).mean())
    min_ess = float(np.nanmin(ess)) if ess.size and np.isfinite(ess).any() else float("nan")
    swaps = None if swap_accept_prob is None else np.asarray(swap_accept_prob)
    min_swap = None if swaps is None else float(swaps.min())
    failed = []
    if worst > limit:
        failed.append(f"max split R-hat {worst:.3f} > {limit}")
    if share < RHAT_STRICT_SHARE:
        failed.append(f"R-hat <= {RHAT_STRICT} on {share:.1%} of them (< "
                      f"{RHAT_STRICT_SHARE:.0%})")
    if not min_ess >= MIN_ESS:
        failed.append(f"min bulk ESS {min_ess:.0f} < {MIN_ESS}")
    if min_swap is not None and not min_swap > 0:
        failed.append("an adjacent pair of levels never swapped")
    ladder = "" if min_swap is None else f"; min swap acceptance {min_swap:.2f}"
    figures = (f"max split R-hat {worst:.3f}, R-hat <= {RHAT_STRICT} on {share:.1%}, min bulk "
               f"ESS {min_ess:.0f}{ladder}")
    if not failed:
        return True, worst, (f"**Converged** on every reported reduction (per-image inactive "
                             f"fractions and lp): {figures}.")
    return False, worst, (f"**Not converged**: {'; '.join(failed)} on the per-image "
                          "reductions; the figures below are not yet the posterior's: run "
                          "longer chains (more --warmup, --draws or --thin) or more levels.")
