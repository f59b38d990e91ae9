"""Posterior sparsity and code usage, analysed with ArviZ.

:func:`sample_posterior` draws replica chains per image with
:class:`~pyro_sparsegen.ShortRunLangevin` (all chains of all images in one tensor) and returns
an :class:`arviz.InferenceData` with named dims ``chain, draw, image, latent``. The metrics
below take that object (or one made by ``az.from_pyro`` with :func:`pyro_dims`) and return
xarray objects with named dims. They reduce first (to one number per image, per dimension
or per class) and only then summarise, so nothing loops over the scalars of a large posterior.

A coordinate ``z_j`` is *active* ``by="magnitude"`` when ``|z_j| > threshold`` (0.2, the
authors' choice) and ``by="inclusion"`` when its posterior slab probability exceeds 0.5.

Example::

    >>> idata = sample_posterior(model, x, labels=y, chains=4, draws=200)
    >>> image_sparsity(idata).inactive_inclusion.mean().item()
    >>> class_jaccard(idata).mean_off_diagonal.item()
"""

import os
import time

import arviz as az
import numpy as np
import torch
import xarray as xr

from . import plots
from .infer import ShortRunLangevin

BY = ("inclusion", "magnitude")
IMAGE_DIMS = ("channel", "height", "width")


# ------------------------------------------------------------------------------------------
# Building InferenceData


def _numpy(t):
    return t.detach().cpu().numpy()


def _inclusion_probability(model, z, chunk=1):
    """``model.inclusion_probability(z)`` chunked over the leading (chain) dim to bound the
    temporaries; ``None`` when the model or its prior has none."""
    if not hasattr(model, "inclusion_probability"):
        return None
    out = np.empty(tuple(z.shape), dtype=np.float32)
    try:
        with torch.no_grad():
            for start in range(0, z.shape[0], chunk):
                part = torch.as_tensor(z[start:start + chunk])
                out[start:start + chunk] = _numpy(model.inclusion_probability(part))
    except NotImplementedError:
        return None
    return out


def _netcdf_attrs(attrs):
    """NetCDF attributes are numbers or strings: booleans become 0/1, ``None`` is dropped."""
    out = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, (bool, np.bool_)):
            value = int(value)
        elif not isinstance(value, (int, float, str, np.number)):
            value = str(value)
        out[key] = value
    return out


def model_attrs(model):
    """The prior's parameters, the schedule position and the likelihood, as flat attrs."""
    attrs = {}
    params = model.prior_params() if hasattr(model, "prior_params") else None
    if hasattr(params, "_asdict"):
        attrs.update({k: float(v) for k, v in params._asdict().items()})
    for name in ("iteration", "latent_dim", "noise_scale", "likelihood_kind"):
        value = getattr(model, name, None)
        if value is not None:
            attrs["likelihood" if name == "likelihood_kind" else name] = value
    return attrs


def pyro_dims(model, x=None, *, num_images=None):
    """``coords`` and ``dims`` giving ``az.from_pyro`` this module's names::

        idata = az.from_pyro(mcmc, **pyro_dims(model, x))

    ``z`` gets dims ``(image, latent)``, ``x`` ``(image, channel, height, width)`` (its
    per-image log-likelihood keeps ``image``). Coordinates for ``image`` need ``x`` or
    ``num_images``.
    """
    coords = {"latent": np.arange(model.latent_dim)}
    if x is not None:
        num_images = x.shape[0]
    if num_images is not None:
        coords["image"] = np.arange(num_images)
    dims = {"z": ["image", "latent"], "x": ["image", *IMAGE_DIMS],
            "inclusion_probability": ["image", "latent"]}
    return {"coords": coords, "dims": dims}


def add_inclusion_probability(idata, model, *, var_name="z"):
    """Add ``inclusion_probability`` (same dims as ``z``) to ``idata.posterior`` in place,
    computed by ``model.inclusion_probability`` under the model's current prior; works on
    the result of :func:`sample_posterior` and of ``az.from_pyro``. Returns ``idata``.

    :raises ValueError: if the model's prior has no inclusion probability.
    """
    z = idata.posterior[var_name]
    like = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    values = torch.as_tensor(z.values)
    if like is not None:
        values = values.to(dtype=like.dtype, device=like.device)
    prob = _inclusion_probability(model, values)
    if prob is None:
        raise ValueError(f"{type(model).__name__}'s prior has no inclusion probability")
    idata.posterior["inclusion_probability"] = z.copy(data=prob.astype(z.dtype, copy=False))
    return idata


def sample_posterior(model, x, *, labels=None, chains=4, draws=200, warmup=500, thin=5,
                     step_size=0.05, noise=True, metropolis=True, prior_step="explicit",
                     init=None, crossing=None, adapt_step_size=None, source=None,
                     log_likelihood=True):
    """Replica Langevin chains for every image, as ``arviz.InferenceData``.

    All ``chains x images`` chains advance together in one tensor on ``x``'s device
    (:meth:`ShortRunLangevin.sample_chains`): ``warmup`` transitions from ``init`` (default:
    prior draws, so that the chains start dispersed and R-hat means something) that adapt
    every chain's step size, then ``draws`` kept draws every ``thin`` transitions.

    The default sampler is exact: MALA (``metropolis=True``) with the spike/slab crossing
    move. ``metropolis=False`` with ``noise=True`` is ULA (biased by the step size: stated in
    the README); ``noise=False`` is an optimiser, not a sampler.

    :param model: a :class:`~pyro_sparsegen.SparseGenerator` (or any Pyro model with one
        latent site ``z: [images, latent]`` in its image plate and an observed site ``x``).
    :param x: images ``[images, C, H, W]``.
    :param labels: optional class labels ``[images]`` (``constant_data.label``).
    :param source: where the model came from (e.g. the checkpoint path), recorded in attrs.
    :return: ``InferenceData`` with groups ``posterior`` (``z`` and, when the prior has one,
        ``inclusion_probability``: ``[chain, draw, image, latent]``), ``sample_stats``
        (``lp``, ``diverging``, ``step_size`` and, with ``metropolis``, ``acceptance_rate``:
        ``[chain, draw, image]``), ``log_likelihood`` (``x``: ``[chain, draw, image]``),
        ``observed_data`` (``x``: ``[image, channel, height, width]``) and, with labels,
        ``constant_data`` (``label``: ``[image]``).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a tensor [images, C, H, W], got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    num_images = x.shape[0]
    if labels is not None:
        labels = np.asarray(_numpy(labels) if isinstance(labels, torch.Tensor) else labels)
        if labels.shape != (num_images,):
            raise ValueError(f"labels must have shape [{num_images}], got {list(labels.shape)}")
    kernel = ShortRunLangevin(model, step_size=step_size, noise=noise, init=init,
                              metropolis=metropolis, prior_step=prior_step, crossing=crossing,
                              adapt_step_size=adapt_step_size)
    samples, stats = kernel.sample_chains(x, num_chains=chains, num_draws=draws,
                                          warmup_steps=warmup, thin=thin)
    z = samples["z"]
    per_draw = {"lp": _numpy(stats["log_density"]),
                "diverging": _numpy(stats["diverging"]).astype(bool),
                "step_size": _numpy(stats["step_size"])}
    if metropolis:
        per_draw["acceptance_rate"] = _numpy(stats["accept_prob"])
    posterior = {"z": _numpy(z)}
    prob = _inclusion_probability(model, z)
    del z, samples
    if prob is not None:
        posterior["inclusion_probability"] = prob
    groups = {"posterior": posterior, "sample_stats": per_draw,
              "observed_data": {"x": _numpy(x)}}
    if log_likelihood:
        groups["log_likelihood"] = {"x": _numpy(stats["log_likelihood"])}
    if labels is not None:
        groups["constant_data"] = {"label": labels}
    dims = {"z": ["image", "latent"], "inclusion_probability": ["image", "latent"],
            "lp": ["image"], "diverging": ["image"], "acceptance_rate": ["image"],
            "step_size": ["image"], "label": ["image"]}
    coords = {"image": np.arange(num_images), "latent": np.arange(posterior["z"].shape[-1])}
    # The observed x and its per-image log-likelihood share a name; ArviZ gives each group
    # the leading dims it has (as az.from_pyro does).
    idata = az.from_dict(**groups, coords=coords, dims={**dims, "x": ["image", *IMAGE_DIMS]})
    attrs = {**model_attrs(model), "step_size": step_size, "warmup_steps": warmup,
             "thin": thin, "noise": noise, "metropolis": metropolis, "prior_step": prior_step,
             "crossing": stats["options"].crossing,
             "adapt_step_size": kernel.adapt_step_size, "init": init or "prior",
             "sampler": sampler_name(noise, metropolis),
             "source": None if source is None else str(source),
             "inference_library": "pyro_sparsegen.ShortRunLangevin"}
    idata.posterior.attrs.update(_netcdf_attrs(attrs))
    return idata


def sampler_name(noise, metropolis):
    """What a kernel setting does: ``"MALA (exact)"``, ``"ULA (biased by the step size)"`` or
    ``"MAP optimiser (not a sampler)"``."""
    if not noise:
        return "MAP optimiser (not a sampler)"
    return "MALA (exact)" if metropolis else "ULA (biased by the step size)"


def add_kernel_stats(idata, source, *, dim="image"):
    """Add the kernel's per-draw ``acceptance_rate`` and ``step_size`` (``[chain, draw,
    dim]``) to ``idata.sample_stats`` in place (``az.from_pyro`` carries only ``diverging``).

    :param source: the :class:`ShortRunLangevin` the ``pyro.infer.MCMC`` ran, or that
        ``MCMC`` object (its chains' diagnostics).
    :param dim: the name of the chain plate's dim (``"image"`` with :func:`pyro_dims`).
    :return: ``idata``
    """
    chains, draws = idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]
    per_chain = getattr(source, "_diagnostics", None)
    if per_chain is None:
        per_chain = getattr(source, "chain_stats", [])[-chains:]
    if len(per_chain) != chains or any("accept_prob" not in c for c in per_chain):
        raise ValueError(f"no ShortRunLangevin statistics for {chains} chains in "
                         f"{type(source).__name__}")
    for name, key in (("acceptance_rate", "accept_prob"), ("step_size", "step_size")):
        values = np.stack([np.asarray(c[key]) for c in per_chain])  # [chain, draw, N]
        if values.shape[1] != draws:
            raise ValueError(f"the kernel kept {values.shape[1]} draws per chain; the "
                             f"InferenceData has {draws}")
        idata.sample_stats[name] = xr.DataArray(
            values, dims=("chain", "draw", dim),
            coords={"chain": idata.posterior["chain"].values,
                    "draw": idata.posterior["draw"].values})
    return idata


# ------------------------------------------------------------------------------------------
# Metrics: xarray in, xarray out


def _posterior(data):
    if isinstance(data, az.InferenceData):
        return data.posterior
    if isinstance(data, xr.Dataset):
        return data
    raise ValueError(f"expected InferenceData or a posterior Dataset, got {type(data).__name__}")


def active(data, *, threshold=0.2, by="inclusion"):
    """Active indicator of every coordinate of every draw: boolean
    ``[chain, draw, image, latent]``."""
    post = _posterior(data)
    if by == "magnitude":
        return abs(post["z"]) > threshold
    if by == "inclusion":
        if "inclusion_probability" not in post:
            raise ValueError("the posterior has no inclusion_probability: call "
                             "add_inclusion_probability(idata, model) or use by='magnitude'")
        return post["inclusion_probability"] > 0.5
    raise ValueError(f"by must be one of {BY}, got {by!r}")


def inactive_fraction(data, *, threshold=0.2, by="inclusion"):
    """Fraction of inactive coordinates per image and draw: ``[chain, draw, image]``."""
    act = active(data, threshold=threshold, by=by)
    # Counting the booleans avoids a float64 copy of the whole posterior.
    return (1.0 - act.sum("latent") / act.sizes["latent"]).rename(f"inactive_{by}")


def activation_probability(data, *, threshold=0.2, by="inclusion"):
    """Posterior probability that each coordinate is active: ``[image, latent]``."""
    act = active(data, threshold=threshold, by=by)
    return (act.sum(("chain", "draw")) / (act.sizes["chain"] * act.sizes["draw"])).rename(
        "active")


def image_sparsity(data, *, threshold=0.2, hdi_prob=0.94):
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


def code_usage(data, *, threshold=0.2, by="inclusion"):
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


def class_usage(data, *, labels=None, threshold=0.2, by="inclusion"):
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


def dead_dimensions(data, *, threshold=0.2, by="inclusion", tol=0.01):
    """Boolean ``[latent]``: dimensions used by at most a fraction ``tol`` of the images.
    ``mask.latent[mask].values`` lists them."""
    usage = data if isinstance(data, xr.DataArray) else \
        code_usage(data, threshold=threshold, by=by)
    return (usage <= tol).rename("dead")


def class_active_sets(data, *, labels=None, min_usage=0.5, threshold=0.2, by="inclusion"):
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


def class_jaccard(data, *, labels=None, min_usage=0.5, threshold=0.2, by="inclusion"):
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


def top_dimensions(data, top, *, threshold=0.2, by="inclusion"):
    """Latent coordinates of the ``top`` most-used dimensions, most used first."""
    usage = data if isinstance(data, xr.DataArray) else \
        code_usage(data, threshold=threshold, by=by)
    order = np.argsort(-usage.values, kind="stable")[:top]
    return usage["latent"].values[order]


def convergence(data, *, var_names=("z", "inclusion_probability"), top=None, threshold=0.2,
                by="inclusion", reduced=True):
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
REDUCTIONS = ("inactive_magnitude", "inactive_inclusion", "lp")


def convergence_verdict(conv, limit=RHAT_LIMIT):
    """``(converged, max R-hat, line)`` over the reported per-image reductions (inactive
    fractions, ``lp``) of a :func:`convergence` Dataset: converged when every finite R-hat is
    below ``limit``."""
    values = [conv[f"{name}_rhat"].values.ravel() for name in REDUCTIONS
              if f"{name}_rhat" in conv]
    values = np.concatenate(values) if values else np.zeros(0)
    finite = values[np.isfinite(values)]
    worst = float(finite.max()) if finite.size else float("nan")
    converged = bool(finite.size) and worst < limit
    if converged:
        line = (f"**Converged**: split R-hat < {limit} on every reported reduction (per-image "
                f"inactive fractions and lp; max {worst:.3f}).")
    elif finite.size:
        line = (f"**Not converged**: split R-hat reaches {worst:.3f} (>= {limit}) on the "
                "per-image reductions; the figures below are not yet the posterior's: run "
                "longer chains (more --warmup, --draws or --thin).")
    else:
        line = "**Convergence unknown**: no finite R-hat (constant chains, e.g. noise off)."
    return converged, worst, line


# ------------------------------------------------------------------------------------------
# Reports


def _fmt(value, digits=3):
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |"
              for row in rows]
    return "\n".join(lines)


QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def summary_tables(idata, *, threshold=0.2, top=10, min_usage=0.5, tol=0.01,
                   convergence_ds=None, sparsity=None):
    """The analysis as Markdown text: run settings, overall sparsity, per-image sparsity
    distribution, top-used and dead dimensions, per-class usage and Jaccard overlap,
    convergence quantiles and divergences. Pass ``convergence_ds`` / ``sparsity`` when
    already computed (convergence is the slow part; by default it covers the ``top`` dims)."""
    post = idata.posterior
    has_incl = "inclusion_probability" in post
    by = "inclusion" if has_incl else "magnitude"
    criteria = [b for b in BY if b == "magnitude" or has_incl]
    sizes = post.sizes
    conv = convergence(idata, top=top, threshold=threshold, by=by) \
        if convergence_ds is None else convergence_ds
    out = [convergence_verdict(conv)[2], "", "# Posterior sparsity diagnostics", ""]
    settings = [(k, str(v)) for k, v in post.attrs.items()
                if k not in ("created_at", "arviz_version", "inference_library_version")]
    settings = [("chains x draws", f"{sizes['chain']} x {sizes['draw']}"),
                ("images x latent", f"{sizes['image']} x {sizes['latent']}")] + settings
    out += ["## Run", "", _md_table(["setting", "value"], settings), ""]

    sparsity = image_sparsity(idata, threshold=threshold) if sparsity is None else sparsity
    rows = []
    for b in criteria:
        mean = sparsity[f"inactive_{b}"]
        hdi = sparsity[f"inactive_{b}_hdi"]
        width = (hdi.sel(hdi="higher") - hdi.sel(hdi="lower")).mean()
        rule = f"abs(z) <= {threshold}" if b == "magnitude" else "inclusion prob. < 0.5"
        rows.append([rule, mean.mean(), (1 - mean.mean()) * sizes["latent"], width])
    out += ["## Overall sparsity", "",
            _md_table(["inactive when", "mean inactive fraction", "mean active coords",
                       "mean 94% HDI width"], rows), ""]

    qs = {b: sparsity[f"inactive_{b}"].quantile(QUANTILES).values for b in criteria}
    rows = [[f"{int(q * 100)}%"] + [qs[b][i] for b in criteria] for i, q in enumerate(QUANTILES)]
    out += ["## Per-image inactive fraction (posterior mean), quantiles over images", "",
            _md_table(["quantile"] + criteria, rows), ""]

    usage = {b: code_usage(idata, threshold=threshold, by=b) for b in criteria}
    dims = top_dimensions(usage[by], top)
    rows = [[str(d)] + [usage[b].sel(latent=d) for b in criteria] for d in dims]
    out += [f"## Top {len(dims)} dimensions by usage (fraction of images, by {by})", "",
            _md_table(["latent"] + [f"usage ({b})" for b in criteria], rows), ""]

    rows = []
    for b in criteria:
        dead = dead_dimensions(usage[b], tol=tol)
        listed = ", ".join(map(str, dead.latent[dead].values.tolist())) or "none"
        rows.append([b, int(dead.sum()), listed if len(listed) < 200 else listed[:197] + "..."])
    out += [f"## Dead dimensions (usage <= {tol})", "",
            _md_table(["criterion", "count", "dimensions"], rows), ""]

    if "constant_data" in idata.groups() and "label" in idata.constant_data:
        cu = class_usage(idata, threshold=threshold, by=by)
        cj = class_jaccard(cu >= min_usage)
        rows = []
        for c in cu["class"].values:
            row = cu.sel({"class": c})
            best = top_dimensions(row, 5)
            rows.append([str(c), int(row["count"]), int(cj.active.sel({"class": c}).sum()),
                         float(row.sum()),
                         ", ".join(f"{d} ({row.sel(latent=d).item():.2f})" for d in best)])
        out += [f"## Per-class usage (by {by})", "",
                _md_table(["class", "images", f"active set (usage >= {min_usage})",
                           "mean active coords", "top dimensions (usage)"], rows), ""]
        classes = [str(c) for c in cj["class"].values]
        rows = [[c] + list(cj.jaccard.values[i]) for i, c in enumerate(classes)]
        out += ["### Jaccard overlap of per-class active sets", "",
                _md_table(["class"] + classes, rows), "",
                f"Mean off-diagonal Jaccard: {_fmt(cj.mean_off_diagonal)}", ""]

    rows = []
    for name in conv.data_vars:
        if not name.endswith("_rhat"):
            continue
        base = name[:-len("_rhat")]
        r = conv[name].values.ravel()
        e = conv[f"{base}_ess"].values.ravel()
        finite = np.isfinite(r)
        rows.append([base, int(r.size), np.median(r[finite]) if finite.any() else np.nan,
                     np.quantile(r[finite], 0.9) if finite.any() else np.nan,
                     r[finite].max() if finite.any() else np.nan,
                     float((r[finite] > 1.01).mean()) if finite.any() else np.nan,
                     np.nanmin(e) if np.isfinite(e).any() else np.nan,
                     np.nanmedian(e) if np.isfinite(e).any() else np.nan])
    scope = conv.attrs.get("top", "all")
    scope = "all dimensions" if scope == "all" else f"top {scope} dimensions"
    out += [f"## Convergence of the short runs (z and inclusion prob. on the {scope})", "",
            _md_table(["quantity", "scalars", "median R-hat", "90% R-hat", "max R-hat",
                       "frac R-hat > 1.01", "min ESS", "median ESS"], rows), ""]

    stats = idata.sample_stats if "sample_stats" in idata.groups() else xr.Dataset()
    rows = []
    if "diverging" in stats:
        div = stats["diverging"]
        rows.append(["divergent transitions", int(div.sum()), float(div.mean())])
    if "acceptance_rate" in stats:
        rows.append(["mean acceptance rate", "", float(stats["acceptance_rate"].mean())])
    out += ["## Divergences", "", _md_table(["", "count", "fraction"], rows), ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------
# The whole analysis


def _spike_slab_coordinate(idata, threshold, latents, candidates=20):
    """(image, latent) among ``latents`` whose posterior shows spike and slab: the coordinate
    with activation probability closest to 0.5 whose multimodal HDI splits into separate
    intervals (else, of the ``candidates`` closest to 0.5, the one with the most)."""
    prob = activation_probability(idata.posterior.sel(latent=latents), threshold=threshold,
                                  by="magnitude").transpose("image", "latent")
    order = np.argsort(np.abs(prob.values - 0.5), axis=None, kind="stable")[:candidates]
    best, best_modes = None, -1
    for flat in order:
        i, j = np.unravel_index(flat, prob.shape)
        image, latent = int(prob["image"].values[i]), int(prob["latent"].values[j])
        draws = idata.posterior["z"].sel(image=image, latent=latent).values
        modes = len(plots.multimodal_hdi(draws))
        if modes >= 2:
            return image, latent
        if modes > best_modes:
            best, best_modes = (image, latent), modes
    return best


def analyze(model, x, out_dir, *, labels=None, chains=4, draws=200, warmup=500, source=None,
            threshold=0.2, top=10, progress=True, **kernel_options):
    """Sample the posterior of every image, write ``idata.nc``, ``summary.md`` and the
    figures into ``out_dir``, and return headline numbers and the paths.

    :param kernel_options: passed to :func:`sample_posterior` (``step_size``, ``noise``,
        ``metropolis``, ``prior_step``, ``init``, ``thin``).
    :param top: R-hat/ESS of ``z`` and the inclusion probabilities, and the choice of the
        coordinates plotted, cover the ``top`` most-used dimensions (``None``: all dimensions;
        ``az.rhat`` and ``az.ess`` then take about 35 s per 25,600 scalars on this CPU).
    :param progress: a tqdm bar over the stages (sampling, metrics, convergence, files).
    :return: dict with ``converged`` and ``max_rhat_reductions`` (:func:`convergence_verdict`),
        ``inactive_fraction_magnitude``, ``inactive_fraction_inclusion``
        (``None`` without inclusion probabilities), ``dead_dimensions``, ``class_jaccard``
        (``None`` without labels), ``max_rhat``, ``divergences``, ``seconds``,
        ``stage_seconds`` and the paths ``idata``, ``summary`` and ``figures`` (name -> path).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    timings = {}
    bar = tqdm(total=6, desc="analyze", disable=not progress, leave=False)

    def stage(name):
        now = time.perf_counter()
        if timings:
            bar.update()
        timings[name] = now
        bar.set_postfix_str(name)

    stage(f"sampling {chains} chains x {draws} draws x {x.shape[0]} images")
    idata = sample_posterior(model, x, labels=labels, chains=chains, draws=draws,
                             warmup=warmup, source=source, **kernel_options)
    stage("metrics")
    has_incl = "inclusion_probability" in idata.posterior
    by = "inclusion" if has_incl else "magnitude"
    has_labels = labels is not None
    sparsity = image_sparsity(idata, threshold=threshold)
    usage = code_usage(idata, threshold=threshold, by=by)
    dead = dead_dimensions(usage)
    cu = class_usage(idata, threshold=threshold, by=by) if has_labels else None
    cj = class_jaccard(cu >= 0.5) if has_labels else None

    stage("convergence")
    conv = convergence(idata, top=top, threshold=threshold, by=by)
    rhat = np.concatenate([conv[v].values.ravel() for v in conv.data_vars
                           if v.endswith("_rhat")])

    stage("netcdf")
    idata_path = os.path.join(out_dir, "idata.nc")
    idata.to_netcdf(idata_path)

    stage("summary")
    summary_path = os.path.join(out_dir, "summary.md")
    text = summary_tables(idata, threshold=threshold, top=top, convergence_ds=conv,
                          sparsity=sparsity)
    with open(summary_path, "w") as f:
        f.write(text)

    stage("figures")
    figures = _analysis_figures(idata, out_dir, usage=usage, class_usage_=cu,
                                sparsity=sparsity, rhat=rhat, threshold=threshold, top=top,
                                by=by)
    stage("done")
    bar.close()
    names = list(timings)
    stage_seconds = {name.split(" ")[0]: timings[names[i + 1]] - timings[name]
                     for i, name in enumerate(names[:-1])}

    finite = rhat[np.isfinite(rhat)]
    converged, worst, _ = convergence_verdict(conv)
    return {
        "converged": converged,
        "max_rhat_reductions": worst,
        "inactive_fraction_magnitude": float(sparsity["inactive_magnitude"].mean()),
        "inactive_fraction_inclusion": float(sparsity["inactive_inclusion"].mean())
        if has_incl else None,
        "dead_dimensions": int(dead.sum()),
        "class_jaccard": float(cj.mean_off_diagonal) if has_labels else None,
        "max_rhat": float(finite.max()) if finite.size else float("nan"),
        "divergences": int(idata.sample_stats["diverging"].sum()),
        "seconds": time.perf_counter() - start,
        "stage_seconds": stage_seconds,
        "idata": idata_path,
        "summary": summary_path,
        "figures": figures,
    }


def _analysis_figures(idata, out_dir, *, usage, class_usage_, sparsity, rhat, threshold, top,
                      by):
    def path(name):
        return os.path.join(out_dir, name)

    figures = {"code_usage": plots.plot_code_usage(usage, path("code_usage.png"),
                                                   title=f"Code usage (by {by})")}
    if class_usage_ is not None:
        figures["class_usage"] = plots.plot_class_usage(class_usage_, path("class_usage.png"))
    figures["sparsity_histogram"] = plots.plot_sparsity_histogram(
        sparsity, path("sparsity_histogram.png"))
    latents = top_dimensions(usage, min(3, usage.sizes["latent"]))
    images = idata.posterior["image"].values[:2]
    figures["rank"] = plots.plot_rank(idata, path("rank.png"), latents=latents, images=images)
    figures["trace"] = plots.plot_trace(idata, path("trace.png"), latents=latents,
                                        images=images)
    candidates = top_dimensions(usage, top or usage.sizes["latent"])
    image, latent = _spike_slab_coordinate(idata, threshold, candidates)
    figures["spike_slab"] = plots.plot_spike_slab(idata, path("spike_slab.png"), image=image,
                                                  latent=latent, threshold=threshold)
    figures["rhat"] = plots.plot_rhat(rhat, path("rhat.png"))
    return figures
