"""The report: the numbers of an analysis computed once (:func:`report_metrics`), laid out as
Markdown tables (:func:`summary_tables`), and the whole pipeline (:func:`analyze`: sample,
measure, write ``idata.nc``, ``summary.md`` and the figures).

Every file is written atomically (:func:`pyro_sparsegen.files.atomic_file`): an interrupted
analysis never leaves half a file behind. :func:`format_number` and :func:`markdown_table` are
the package's one table formatter (the scripts in ``analyses/`` use them too).
"""

import dataclasses
import math
import os
import time

import numpy as np

from .. import files, plots
from ..distributions import ACTIVE_THRESHOLD, INCLUSION_CUTOFF
from ..runtime import LazyModule
from .inference_data import DEFAULT_CHAINS, DEFAULT_WARMUP, sample_posterior
from .metrics import (BY, MIN_USAGE, activation_probability, class_jaccard, class_usage,
                      code_usage, convergence, convergence_verdict, dead_dimensions,
                      image_sparsity, top_dimensions)

xr = LazyModule("xarray")  # imported when first used

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
DEAD_USAGE = 0.01
"""A dimension is *dead* when at most this fraction of the images use it."""


# ------------------------------------------------------------------------------------------
# Tables


def format_number(value, digits=3, missing="n/a"):
    """A number as table text: an integer as it is, anything else with ``digits`` decimals;
    ``None`` and non-finite values as ``missing``."""
    if value is None:
        return missing
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return missing
    return f"{value:.{digits}f}"


def markdown_table(header, rows, *, digits=3, missing="n/a"):
    """A Markdown table: text cells as they are, any other cell (a number, a NumPy or 0-d
    xarray value, ``None``) through :func:`format_number`; a ``|`` inside a cell (``|z|``) is
    escaped."""
    def cell(value):
        text = value if isinstance(value, str) else format_number(value, digits, missing)
        return text.replace("|", "\\|")

    def line(cells):
        return "| " + " | ".join(cell(c) for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows])


# ------------------------------------------------------------------------------------------
# The numbers of a report, computed once


@dataclasses.dataclass(frozen=True)
class ReportMetrics:
    """What :func:`summary_tables`, the figures and :func:`analyze`'s headline numbers are
    made of (:func:`report_metrics`).

    :ivar by: the criterion of the usage tables (``"inclusion"`` where the posterior has
        inclusion probabilities, else ``"magnitude"``).
    :ivar criteria: every criterion the posterior allows, in
        :data:`~pyro_sparsegen.diagnostics.BY` order.
    :ivar sparsity: :func:`~pyro_sparsegen.diagnostics.image_sparsity`.
    :ivar usage: ``{criterion: code_usage [latent]}``.
    :ivar dead: ``{criterion: dead_dimensions [latent]}``.
    :ivar class_usage: ``[class, latent]`` by ``by`` (``None`` without labels).
    :ivar class_jaccard: :func:`~pyro_sparsegen.diagnostics.class_jaccard` of its active sets
        (``None`` without labels).
    :ivar convergence: :func:`~pyro_sparsegen.diagnostics.convergence` on the ``top``
        most-used dimensions.
    """

    threshold: float
    top: int
    min_usage: float
    tol: float
    by: str
    criteria: tuple
    sparsity: "xr.Dataset"  # a string: xarray is imported when first used
    usage: dict
    dead: dict
    class_usage: "xr.DataArray"
    class_jaccard: "xr.Dataset"
    convergence: "xr.Dataset"

    @property
    def rhat(self):
        """Every R-hat of :attr:`convergence`, flat (NumPy)."""
        return np.concatenate([self.convergence[v].values.ravel()
                               for v in self.convergence.data_vars if v.endswith("_rhat")])


def report_metrics(idata, *, threshold=ACTIVE_THRESHOLD, top=10, min_usage=MIN_USAGE,
                   tol=DEAD_USAGE, convergence_ds=None, sparsity=None):
    """The :class:`ReportMetrics` of ``idata``; ``convergence_ds`` / ``sparsity`` when already
    computed (convergence is the slow part: it covers the ``top`` most-used dims)."""
    reduced = _reductions(idata, threshold=threshold, top=top, min_usage=min_usage, tol=tol,
                          sparsity=sparsity)
    return _with_convergence(reduced, idata, convergence_ds)


def _reductions(idata, *, threshold, top, min_usage, tol, sparsity=None):
    """:func:`report_metrics` but for the convergence (``None``), the slow part."""
    by = "inclusion" if "inclusion_probability" in idata.posterior else "magnitude"
    criteria = tuple(b for b in BY if b == "magnitude" or by == "inclusion")
    usage = {b: code_usage(idata, threshold=threshold, by=b) for b in criteria}
    labelled = "constant_data" in idata.groups() and "label" in idata.constant_data
    cu = class_usage(idata, threshold=threshold, by=by) if labelled else None
    return ReportMetrics(
        threshold=threshold, top=top, min_usage=min_usage, tol=tol, by=by, criteria=criteria,
        sparsity=image_sparsity(idata, threshold=threshold) if sparsity is None else sparsity,
        usage=usage, dead={b: dead_dimensions(usage[b], tol=tol) for b in criteria},
        class_usage=cu,
        class_jaccard=None if cu is None else class_jaccard(cu >= min_usage,
                                                            min_usage=min_usage),
        convergence=None)


def _with_convergence(m, idata, convergence_ds=None):
    """``m`` with its :attr:`~ReportMetrics.convergence` (computed unless given)."""
    if convergence_ds is None:
        convergence_ds = convergence(idata, top=m.top, threshold=m.threshold, by=m.by)
    return dataclasses.replace(m, convergence=convergence_ds)


# ------------------------------------------------------------------------------------------
# Markdown


def summary_tables(idata, *, threshold=ACTIVE_THRESHOLD, top=10, min_usage=MIN_USAGE,
                   tol=DEAD_USAGE, convergence_ds=None, sparsity=None, computed=None):
    """The analysis as Markdown text: run settings, overall sparsity, per-image sparsity
    distribution, top-used and dead dimensions, per-class usage and Jaccard overlap,
    convergence quantiles and divergences.

    :param computed: the :class:`ReportMetrics` of ``idata`` when already computed (as
        :func:`analyze` does; its settings then replace the keywords); otherwise
        :func:`report_metrics` with the keywords (``convergence_ds`` / ``sparsity`` when
        already computed).
    """
    m = computed if computed is not None else report_metrics(
        idata, threshold=threshold, top=top, min_usage=min_usage, tol=tol,
        convergence_ds=convergence_ds, sparsity=sparsity)
    post, sizes = idata.posterior, idata.posterior.sizes
    out = [convergence_verdict(m.convergence, swap_accept_prob=_swaps(idata))[2], ""]
    out += _ladder_lines(idata) + ["# Posterior sparsity diagnostics", ""]
    settings = [(k, str(v)) for k, v in post.attrs.items()
                if k not in ("created_at", "arviz_version", "inference_library_version")]
    settings = [("chains x draws", f"{sizes['chain']} x {sizes['draw']}"),
                ("images x latent", f"{sizes['image']} x {sizes['latent']}")] + settings
    out += ["## Run", "", markdown_table(["setting", "value"], settings), ""]

    rows = []
    for b in m.criteria:
        mean = m.sparsity[f"inactive_{b}"]
        hdi = m.sparsity[f"inactive_{b}_hdi"]
        width = (hdi.sel(hdi="higher") - hdi.sel(hdi="lower")).mean()
        rule = f"abs(z) <= {m.threshold}" if b == "magnitude" else \
            f"inclusion prob. < {INCLUSION_CUTOFF}"
        rows.append([rule, mean.mean(), (1 - mean.mean()) * sizes["latent"], width])
    out += ["## Overall sparsity", "",
            markdown_table(["inactive when", "mean inactive fraction", "mean active coords",
                            "mean 94% HDI width"], rows), ""]

    qs = {b: m.sparsity[f"inactive_{b}"].quantile(QUANTILES).values for b in m.criteria}
    rows = [[f"{int(q * 100)}%"] + [qs[b][i] for b in m.criteria]
            for i, q in enumerate(QUANTILES)]
    out += ["## Per-image inactive fraction (posterior mean), quantiles over images", "",
            markdown_table(["quantile", *m.criteria], rows), ""]

    dims = top_dimensions(m.usage[m.by], m.top)
    rows = [[str(d)] + [m.usage[b].sel(latent=d) for b in m.criteria] for d in dims]
    out += [f"## Top {len(dims)} dimensions by usage (fraction of images, by {m.by})", "",
            markdown_table(["latent"] + [f"usage ({b})" for b in m.criteria], rows), ""]

    rows = []
    for b in m.criteria:
        dead = m.dead[b]
        listed = ", ".join(map(str, dead.latent[dead].values.tolist())) or "none"
        rows.append([b, int(dead.sum()), listed if len(listed) < 200 else listed[:197] + "..."])
    out += [f"## Dead dimensions (usage <= {m.tol})", "",
            markdown_table(["criterion", "count", "dimensions"], rows), ""]

    if m.class_usage is not None:
        out += _class_tables(m)
    out += _convergence_table(m.convergence)

    stats = idata.sample_stats if "sample_stats" in idata.groups() else xr.Dataset()
    rows = []
    if "diverging" in stats:
        div = stats["diverging"]
        rows.append(["divergent transitions", int(div.sum()), float(div.mean())])
    if "acceptance_rate" in stats:
        rows.append(["mean acceptance rate", "", float(stats["acceptance_rate"].mean())])
    out += ["## Divergences", "", markdown_table(["", "count", "fraction"], rows), ""]
    return "\n".join(out)


def _class_tables(m):
    cu, cj = m.class_usage, m.class_jaccard
    rows = []
    for c in cu["class"].values:
        row = cu.sel({"class": c})
        best = top_dimensions(row, 5)
        rows.append([str(c), int(row["count"]), int(cj.active.sel({"class": c}).sum()),
                     float(row.sum()),
                     ", ".join(f"{d} ({row.sel(latent=d).item():.2f})" for d in best)])
    classes = [str(c) for c in cj["class"].values]
    return [f"## Per-class usage (by {m.by})", "",
            markdown_table(["class", "images", f"active set (usage >= {m.min_usage})",
                            "mean active coords", "top dimensions (usage)"], rows), "",
            "### Jaccard overlap of per-class active sets", "",
            markdown_table(["class", *classes],
                           [[c, *cj.jaccard.values[i]] for i, c in enumerate(classes)]), "",
            f"Mean off-diagonal Jaccard: {format_number(cj.mean_off_diagonal)}", ""]


def _convergence_table(conv):
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
    return [f"## Convergence of the short runs (z and inclusion prob. on the {scope})", "",
            markdown_table(["quantity", "scalars", "median R-hat", "90% R-hat", "max R-hat",
                            "frac R-hat > 1.01", "min ESS", "median ESS"], rows), ""]


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


def analyze(model, x, out_dir, *, labels=None, chains=DEFAULT_CHAINS, draws=200,
            warmup=DEFAULT_WARMUP, source=None,
            threshold=ACTIVE_THRESHOLD, top=10, progress=True, **kernel_options):
    """Sample the posterior of every image, write ``idata.nc``, ``summary.md`` and the
    figures into ``out_dir`` (each file atomically), and return headline numbers and the paths.

    :param kernel_options: passed to :func:`~pyro_sparsegen.diagnostics.sample_posterior`
        (``step_size``, ``noise``, ``metropolis``, ``prior_step``, ``init``, ``thin``, ...).
    :param top: R-hat/ESS of ``z`` and the inclusion probabilities, and the choice of the
        coordinates plotted, cover the ``top`` most-used dimensions (``None``: all dimensions;
        ``az.rhat`` and ``az.ess`` then take about 35 s per 25,600 scalars on this CPU).
    :param progress: a tqdm bar over the stages (sampling, metrics, convergence, files).
    :return: dict with ``converged`` and ``max_rhat_reductions``
        (:func:`~pyro_sparsegen.diagnostics.convergence_verdict`),
        ``inactive_fraction_magnitude``, ``inactive_fraction_inclusion``
        (``None`` without inclusion probabilities), ``dead_dimensions``, ``class_jaccard``
        (``None`` without labels), ``max_rhat``, ``divergences``, ``seconds``,
        ``stage_seconds`` and the paths ``idata``, ``summary`` and ``figures`` (name -> path).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    files.output_folder(out_dir)
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
    m = _reductions(idata, threshold=threshold, top=top, min_usage=MIN_USAGE, tol=DEAD_USAGE)
    stage("convergence")
    m = _with_convergence(m, idata)

    stage("netcdf")
    idata_path = os.path.join(out_dir, "idata.nc")
    with files.atomic_file(idata_path) as tmp:
        idata.to_netcdf(tmp)

    stage("summary")
    summary_path = os.path.join(out_dir, "summary.md")
    files.write_text(summary_path, summary_tables(idata, computed=m))

    stage("figures")
    figures = _analysis_figures(idata, out_dir, m)
    stage("done")
    bar.close()
    names = list(timings)
    stage_seconds = {name.split(" ")[0]: timings[names[i + 1]] - timings[name]
                     for i, name in enumerate(names[:-1])}

    rhat = m.rhat
    finite = rhat[np.isfinite(rhat)]
    converged, worst, _ = convergence_verdict(m.convergence, swap_accept_prob=_swaps(idata))
    return {
        "converged": converged,
        "max_rhat_reductions": worst,
        "inactive_fraction_magnitude": float(m.sparsity["inactive_magnitude"].mean()),
        "inactive_fraction_inclusion": float(m.sparsity["inactive_inclusion"].mean())
        if m.by == "inclusion" else None,
        "dead_dimensions": int(m.dead[m.by].sum()),
        "class_jaccard": None if m.class_jaccard is None
        else float(m.class_jaccard.mean_off_diagonal),
        "max_rhat": float(finite.max()) if finite.size else float("nan"),
        "divergences": int(idata.sample_stats["diverging"].sum()),
        "seconds": time.perf_counter() - start,
        "stage_seconds": stage_seconds,
        "idata": idata_path,
        "summary": summary_path,
        "figures": figures,
    }


def _swaps(idata):
    """``sample_stats.swap_accept_prob`` (``[level_pair, image]``) of a tempered run, or
    ``None``."""
    ss = getattr(idata, "sample_stats", None)
    return None if ss is None or "swap_accept_prob" not in ss else ss["swap_accept_prob"].values


def _ladder_lines(idata):
    """The summary's lines on the ladder (tempered runs only): levels, swap acceptance, round
    trips, the evidence."""
    if _swaps(idata) is None:
        return []
    ss = idata.sample_stats
    swaps, trips = ss["swap_accept_prob"].values, ss["round_trips"].values
    evidence = ss["log_marginal_likelihood"].values
    mcse = ss["log_marginal_likelihood_mcse"].values
    n = max(np.isfinite(evidence).sum(), 1)
    lines = [f"Replica exchange: {ss['beta'].sizes['level']} levels x {trips.shape[0]} ladders "
             f"per image; swap acceptance per adjacent pair {swaps.min():.2f}-{swaps.max():.2f} "
             f"(median {np.median(swaps):.2f}); round trips per ladder min {trips.min()}, "
             f"median {np.median(trips):g}."]
    if np.isfinite(evidence).any():
        lines.append(f"Evidence (stepping stone): mean log p(x) per image "
                     f"{np.nanmean(evidence):.2f} +- {np.sqrt(np.nansum(mcse ** 2)) / n:.2f} "
                     "(MCSE) nats.")
    return lines + [""]


def _analysis_figures(idata, out_dir, m):
    """The report's figures from its :class:`ReportMetrics`: ``{name: path}``."""
    def path(name):
        return os.path.join(out_dir, name)

    usage = m.usage[m.by]
    figures = {"code_usage": plots.plot_code_usage(usage, path("code_usage.png"),
                                                   title=f"Code usage (by {m.by})")}
    if m.class_usage is not None:
        figures["class_usage"] = plots.plot_class_usage(m.class_usage, path("class_usage.png"))
    figures["sparsity_histogram"] = plots.plot_sparsity_histogram(
        m.sparsity, path("sparsity_histogram.png"))
    latents = top_dimensions(usage, min(3, usage.sizes["latent"]))
    images = idata.posterior["image"].values[:2]
    figures["rank"] = plots.plot_rank(idata, path("rank.png"), latents=latents, images=images)
    figures["trace"] = plots.plot_trace(idata, path("trace.png"), latents=latents,
                                        images=images)
    candidates = top_dimensions(usage, m.top or usage.sizes["latent"])
    image, latent = _spike_slab_coordinate(idata, m.threshold, candidates)
    figures["spike_slab"] = plots.plot_spike_slab(idata, path("spike_slab.png"), image=image,
                                                  latent=latent, threshold=m.threshold)
    figures["rhat"] = plots.plot_rhat(m.rhat, path("rhat.png"))
    if _swaps(idata) is not None:
        figures["ladder"] = plots.plot_ladder(idata, path("ladder.png"))
    return figures
