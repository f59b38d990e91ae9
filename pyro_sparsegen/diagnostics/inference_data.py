"""Building :class:`arviz.InferenceData`: replica chains sampled per image
(:func:`sample_posterior`), or the pieces that complete ``az.from_pyro``'s object
(:func:`pyro_dims`, :func:`add_inclusion_probability`, :func:`add_kernel_stats`).

Named dims everywhere: ``chain, draw, image, latent`` for the codes, ``image, channel, height,
width`` for the images.
"""

import numpy as np
import torch
from pyro import poutine

from ..distributions import base_distribution
from ..infer import ShortRunLangevin
from ..runtime import LazyModule, forked_rng

az, xr = LazyModule("arviz"), LazyModule("xarray")  # imported when first used

IMAGE_DIMS = ("channel", "height", "width")
# sample_posterior's defaults: a setting measured to converge (docs/inference.md)
DEFAULT_LEVELS = 12  #: tempering levels of sample_posterior's default ladder
DEFAULT_CHAINS = 12  #: independent ladders (chains) per image
DEFAULT_WARMUP = 800  #: warm-up transitions (ladder and step sizes adapted)
DEFAULT_THIN = 10  #: transitions per kept draw


def _numpy(t):
    return t.detach().cpu().numpy()


def _site_inclusion_probability(model, x, name="z"):
    """``value -> P(slab | value)`` of the code site ``name`` from the model's own trace (its
    distribution under the ``Independent`` / ``Expanded`` wrappers,
    :func:`~pyro_sparsegen.distributions.base_distribution`), or ``None`` when that
    distribution has no ``inclusion_probability``: what a plain Pyro function gets."""
    with forked_rng(model, x), torch.no_grad():
        trace = poutine.trace(model).get_trace(x)
    site = trace.nodes.get(name)
    if site is None or site["type"] != "sample":
        return None
    base = base_distribution(site["fn"])
    return getattr(base, "inclusion_probability", None)


def _inclusion_probability(model, z, chunk=1, x=None):
    """``model.inclusion_probability(z)`` (or, for a model without one, the code site's own,
    :func:`_site_inclusion_probability` at ``x``) chunked over the leading (chain) dim to
    bound the temporaries; ``None`` when neither has one."""
    fn = getattr(model, "inclusion_probability", None)
    if fn is None and x is not None:
        fn = _site_inclusion_probability(model, x)
    if fn is None:
        return None
    out = np.empty(tuple(z.shape), dtype=np.float32)
    try:
        with torch.no_grad():
            for start in range(0, z.shape[0], chunk):
                part = torch.as_tensor(z[start:start + chunk])
                out[start:start + chunk] = _numpy(fn(part))
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
    if hasattr(params, "_asdict"):  # a NamedTuple (PriorParams); _asdict is its public API
        attrs.update({k: float(v) for k, v in params._asdict().items()})
    for name in ("iteration", "latent_dim", "noise_scale", "likelihood_kind"):
        value = getattr(model, name, None)
        if value is not None:
            attrs["likelihood" if name == "likelihood_kind" else name] = value
    return attrs


def pyro_dims(model, x=None, *, num_images=None):
    """``coords`` and ``dims`` giving ``az.from_pyro`` this package's names::

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


def sample_posterior(model, x, *, labels=None, chains=DEFAULT_CHAINS, draws=200,
                     warmup=DEFAULT_WARMUP, thin=DEFAULT_THIN, step_size=0.05, noise=True,
                     metropolis=True, prior_step="semi-implicit", init=None, crossing=None,
                     adapt_step_size=None, source=None, log_likelihood=True,
                     tempering="auto", adapt_ladder=True, prior_refresh=True, pair_move=None,
                     warm_start=0):
    """Replica Langevin chains for every image, as ``arviz.InferenceData``.

    All ``chains x images`` chains advance together in one tensor on ``x``'s device
    (:meth:`~pyro_sparsegen.ShortRunLangevin.sample_chains`): ``warmup`` transitions from
    ``init`` (default: prior draws, so that the chains start dispersed and R-hat means
    something) that adapt every chain's step size, then ``draws`` kept draws every ``thin``
    transitions.

    The default sampler is exact: MALA (``metropolis=True``) with the spike/slab crossing
    move. ``metropolis=False`` with ``noise=True`` is ULA (biased by the step size: stated in
    the README); ``noise=False`` is an optimiser, not a sampler.

    :param model: a :class:`~pyro_sparsegen.SparseGenerator` (or any Pyro model with one
        latent site ``z: [images, latent]`` in its image plate and an observed site ``x``).
    :param x: images ``[images, C, H, W]``.
    :param labels: optional class labels ``[images]`` (``constant_data.label``).
    :param source: where the model came from (e.g. the checkpoint path), recorded in attrs.
    :param step_size: with ``noise``, ``metropolis``, ``prior_step``, ``init``,
        ``crossing``, ``adapt_step_size``, ``adapt_ladder``, ``prior_refresh`` and
        ``pair_move``: the :class:`~pyro_sparsegen.ShortRunLangevin` options (recorded in the
        posterior's attrs).
    :param tempering: the kernel's ``tempering`` (``None``, a number of levels or a ladder);
        ``"auto"`` (default): :data:`DEFAULT_LEVELS` levels when the model can be tempered per
        image (every site in the image plate), none otherwise (e.g. a hierarchical prior's
        global block). Tempered, ``sample_stats`` also has the ladder's diagnostics:
        ``swap_accept_prob`` (``[level_pair, image]``), ``round_trips`` (``[chain, image]``),
        ``beta`` (``[level, image]``, the adapted ladder), ``level_log_likelihood``
        (``[chain, draw, level, image]``), ``log_marginal_likelihood`` and its
        ``log_marginal_likelihood_mcse`` (``[image]``, the stepping-stone evidence).
    :param int warm_start: if positive, every chain first takes that many noise-free steps
        (the training's own inference, :meth:`~pyro_sparsegen.ShortRunLangevin.infer` with
        ``noise=False`` at ``step_size``) from its own start (``init``, default a prior draw),
        and the chains (every level of a ladder) start there: the starts stay over-dispersed
        (one prior draw each), the warm-up begins near a mode. 0 (default): off.
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
    if labels is not None:
        labels = np.asarray(_numpy(labels) if isinstance(labels, torch.Tensor) else labels)
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape [{x.shape[0]}], got {list(labels.shape)}")
    # The kernel's options, in this one dict: they build the kernel and are recorded.
    options = {"step_size": step_size, "noise": noise, "metropolis": metropolis,
               "prior_step": prior_step, "crossing": crossing,
               "adapt_step_size": adapt_step_size, "init": init, "pair_move": pair_move,
               "tempering": tempering, "adapt_ladder": adapt_ladder,
               "prior_refresh": prior_refresh}
    if isinstance(tempering, str):
        if tempering != "auto":
            raise ValueError(f"tempering must be None, a number of levels, a ladder or "
                             f"'auto', got {tempering!r}")
        options["tempering"] = _auto_levels(model, x, options)
    kernel = ShortRunLangevin(model, **options)
    initial = None
    if warm_start:
        descent = ShortRunLangevin(model, step_size=step_size, num_steps=int(warm_start),
                                   noise=False, prior_step=prior_step, init=init or "prior")
        initial = {k: v.detach() for k, v in descent.infer(x, num_chains=chains).items()}
    samples, stats = kernel.sample_chains(x, num_chains=chains, num_draws=draws,
                                          warmup_steps=warmup, thin=thin, initial=initial)
    idata = _chains_inference_data(model, x, labels, samples, stats, metropolis=metropolis,
                                   log_likelihood=log_likelihood)
    # the options as the kernel resolved them (None: its own default), in the files' order
    resolved = {**options, "crossing": stats["options"].crossing,
                "pair_move": stats["options"].pairs,
                "adapt_step_size": kernel.adapt_step_size, "init": init or "prior",
                "tempering": 0 if options["tempering"] is None else
                int(stats["beta"].shape[0])}
    attrs = {**model_attrs(model), "step_size": step_size, "warmup_steps": warmup,
             "warm_start": int(warm_start),
             "thin": thin, **{k: v for k, v in resolved.items() if k != "step_size"},
             "sampler": sampler_name(noise, metropolis),
             "source": None if source is None else str(source),
             "inference_library": "pyro_sparsegen.ShortRunLangevin"}
    idata.posterior.attrs.update(_netcdf_attrs(attrs))
    return idata


def _auto_levels(model, x, options):
    """``DEFAULT_LEVELS`` when ``model`` can be tempered per image with these kernel options
    (MALA, every site in the image plate), else ``None``."""
    if not options["metropolis"]:
        return None
    target = ShortRunLangevin(model, **{**options, "tempering": None}).target((x,))
    try:
        target.check_temperable()
    except ValueError:
        return None
    return DEFAULT_LEVELS


LADDER_STATS = {"swap_accept_prob": ("level_pair", "image"), "round_trips": ("chain", "image"),
                "beta": ("level", "image"), "log_marginal_likelihood": ("image",),
                "log_marginal_likelihood_mcse": ("image",)}


def _add_ladder_stats(idata, stats):
    """The ladder's diagnostics (see :func:`sample_posterior`) into ``idata.sample_stats``."""
    ss = idata.sample_stats
    for name, dims in LADDER_STATS.items():
        coords = {d: ss[d].values for d in dims if d in ss.coords}
        ss[name] = xr.DataArray(_numpy(stats[name]), dims=dims, coords=coords)
    ss["level_log_likelihood"] = xr.DataArray(
        _numpy(stats["level_log_likelihood"]), dims=("chain", "draw", "level", "image"),
        coords={d: ss[d].values for d in ("chain", "draw", "image")})


def _chains_inference_data(model, x, labels, samples, stats, *, metropolis, log_likelihood):
    """The groups of :func:`sample_posterior` from ``sample_chains``' ``(samples, stats)``."""
    per_draw = {"lp": _numpy(stats["log_density"]),
                "diverging": _numpy(stats["diverging"]).astype(bool),
                "step_size": _numpy(stats["step_size"])}
    if metropolis:
        per_draw["acceptance_rate"] = _numpy(stats["accept_prob"])
    z = samples.pop("z")
    posterior = {"z": _numpy(z)}
    prob = _inclusion_probability(model, z, x=x)
    del z
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
    coords = {"image": np.arange(x.shape[0]), "latent": np.arange(posterior["z"].shape[-1])}
    # The observed x and its per-image log-likelihood share a name; ArviZ gives each group
    # the leading dims it has (as az.from_pyro does).
    idata = az.from_dict(**groups, coords=coords, dims={**dims, "x": ["image", *IMAGE_DIMS]})
    if "swap_accept_prob" in stats:
        _add_ladder_stats(idata, stats)
    return idata


def sampler_name(noise, metropolis):
    """What a kernel setting does: ``"MALA (exact)"``, ``"ULA (biased by the step size)"`` or
    ``"MAP optimiser (not a sampler)"``."""
    if not noise:
        return "MAP optimiser (not a sampler)"
    return "MALA (exact)" if metropolis else "ULA (biased by the step size)"


def mcmc_chain_statistics(mcmc):
    """The kernel's statistics of every chain ``pyro.infer.MCMC`` ran: a list (one dict per
    chain) of what :meth:`~pyro_sparsegen.ShortRunLangevin.diagnostics` returned.

    The analysis layer's one read of a Pyro private name, ``MCMC._diagnostics``, kept here on
    purpose. Pyro's public route, ``MCMC.diagnostics()``, returns the same per-chain dicts but
    first computes split R-hat and ESS of every scalar of every sample site
    (``pyro.infer.mcmc.util.diagnostics``), to be thrown away here: on one CPU core that took
    0.03 s for 2 chains x 20 draws of 3 x 4 codes, 0.9 s for 4 x 200 draws of 64 x 100 and
    6.8 s for 4 x 200 draws of 256 x 100, where reading the list is free. The kernel's own
    ``ShortRunLangevin.chain_stats`` cannot replace it: chains that Pyro
    runs in worker processes fill the workers' copies of the kernel, never the caller's.
    ``[]`` when ``mcmc`` has not run.
    """
    return [c for c in getattr(mcmc, "_diagnostics", None) or [] if c is not None]


def add_kernel_stats(idata, source, *, dim="image"):
    """Add the kernel's per-draw ``acceptance_rate`` and ``step_size`` (``[chain, draw,
    dim]``) to ``idata.sample_stats`` in place (``az.from_pyro`` carries only ``diverging``).

    :param source: the :class:`~pyro_sparsegen.ShortRunLangevin` the ``pyro.infer.MCMC``
        ran (its ``chain_stats``; chains run in this process only), or that ``MCMC``
        object (:func:`mcmc_chain_statistics`).
    :param dim: the name of the chain plate's dim (``"image"`` with :func:`pyro_dims`).
    :return: ``idata``
    """
    chains, draws = idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]
    if hasattr(source, "chain_stats"):
        per_chain = source.chain_stats[-chains:]
    else:
        per_chain = mcmc_chain_statistics(source)
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
