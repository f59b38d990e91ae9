"""Figures for training and for the posterior analysis, written to PNG files.

Every function takes data and an output path, writes the PNG atomically
(:func:`save_figure`), and returns the path. Figures are built with
:class:`matplotlib.figure.Figure` directly (the Agg canvas, :func:`new_figure`), never through
``pyplot``'s global figure registry: nothing is shown, nothing stays open, and the caller's
backend is left alone. ArviZ's plots draw into axes handed to them.
"""

import contextlib
import math
import os
import warnings

import numpy as np
import torch

from . import files
from .distributions import ACTIVE_THRESHOLD
from .runtime import LazyModule

az, xr = LazyModule("arviz"), LazyModule("xarray")  # imported when a figure is drawn
matplotlib, backend_agg = LazyModule("matplotlib"), LazyModule("matplotlib.backends.backend_agg")
figure = LazyModule("matplotlib.figure")

DPI = 100


def new_figure(width, height):
    """A :class:`matplotlib.figure.Figure` of ``width x height`` inches on its own Agg canvas
    (no pyplot state, nothing shown)."""
    fig = figure.Figure(figsize=(width, height), dpi=DPI)
    backend_agg.FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path):
    """Write ``fig`` to ``path`` atomically (:func:`pyro_sparsegen.files.atomic_file`; the
    format from the extension, PNG without one; the folder created), clear it and return
    ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        files.output_folder(folder)
    extension = os.path.splitext(path)[1][1:].lower()
    # the format named, never guessed from the temporary's name
    with files.atomic_file(path) as tmp:
        fig.savefig(tmp, format=extension or "png", dpi=DPI, bbox_inches="tight")
    fig.clear()
    return path


@contextlib.contextmanager
def _quiet_arviz():
    """Silence matplotlib's deprecation warnings raised inside ArviZ's plotting code
    (matplotlib 3.11 vs ArviZ 0.23), and ArviZ's note that a chain it draws a density of
    stayed at one value (a coordinate whose proposals were all rejected), and nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=matplotlib.MatplotlibDeprecationWarning)
        warnings.filterwarnings("ignore", message="Your data appears to have a single value",
                                category=UserWarning)
        yield


def _array(values):
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    if isinstance(values, xr.DataArray):
        return values.values
    return np.asarray(values)


# ------------------------------------------------------------------------------------------
# Training figures


def plot_code_usage(usage, path, *, title=None):
    """Bar chart of the fraction of images using each latent dimension (``usage: [latent]``)."""
    usage = _array(usage).ravel()
    fig = new_figure(max(6.0, min(0.08 * usage.size + 2, 16.0)), 3.2)
    ax = fig.subplots()
    ax.bar(np.arange(usage.size), usage, width=0.85, color="tab:blue")
    ax.set_xlim(-0.7, usage.size - 0.3)
    ax.set_ylim(0, max(1.0, float(np.nanmax(usage)) if usage.size else 1.0))
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("fraction of images using it")
    ax.set_title(title or "Code usage")
    return save_figure(fig, path)


_PANELS = (
    ("reconstruction MSE", ("train_mse", "test_mse", "zeroed_mse"), "log"),
    ("inactive fraction", ("inactive_fraction_threshold", "inactive_fraction_inclusion"), "linear"),
    ("prior parameters", ("slab_weight", "slab_scale", "spike_scale"), "log"),
    ("log joint", ("log_joint",), "linear"),
)


def _series(metrics, key):
    """(x, y) of the rows where ``key`` holds a finite number; x is the iteration if known."""
    xs, ys = [], []
    for i, row in enumerate(metrics):
        try:
            y = float(row[key])
        except (KeyError, TypeError, ValueError):
            continue
        if not math.isfinite(y):
            continue
        try:
            x = float(row.get("iteration", i))
        except (TypeError, ValueError):
            x = float(i)
        xs.append(x)
        ys.append(y)
    return np.asarray(xs), np.asarray(ys)


def plot_training_curves(metrics, path):
    """Training curves from metric rows (dicts with keys such as ``iteration``, ``train_mse``,
    ``test_mse``, ``zeroed_mse``, ``inactive_fraction_threshold``,
    ``inactive_fraction_inclusion``, ``slab_weight``, ``slab_scale``, ``spike_scale``,
    ``log_joint``): one panel per group of keys present, against the iteration."""
    metrics = list(metrics)
    panels = []
    for title, keys, scale in _PANELS:
        lines = [(k, *_series(metrics, k)) for k in keys]
        lines = [line for line in lines if line[1].size]
        if lines:
            panels.append((title, lines, scale))
    fig = new_figure(4.2 * max(len(panels), 1), 3.4)
    if not panels:
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no metrics yet", ha="center", va="center")
        ax.set_axis_off()
        return save_figure(fig, path)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, lines, scale) in zip(axes, panels):
        for key, x, y in lines:
            ax.plot(x, y, marker="o" if x.size < 30 else None, ms=3, label=key)
        if scale == "log" and all((y > 0).all() for _, _, y in lines):
            ax.set_yscale("log")
        if title == "inactive fraction":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path)


def _mosaic(images, n):
    """[k, C, H, W] in [0, 1] -> one [H, n*(W+1)-1, C] strip (blank where k < n)."""
    k, c, h, w = images.shape
    strip = np.ones((h, n * (w + 1) - 1, c), dtype=np.float32)
    for i in range(k):
        strip[:, i * (w + 1):i * (w + 1) + w] = images[i].transpose(1, 2, 0)
    return strip


def plot_image_grid(rows, path, *, titles=None):
    """Rows of images, e.g. originals above reconstructions; each row ``[n, C, H, W]`` in
    ``[0, 1]`` (numpy or torch), 1 or 3 channels."""
    rows = [_array(r).astype(np.float32, copy=False) for r in rows]
    if not rows:
        raise ValueError("plot_image_grid needs at least one row")
    for r in rows:
        if r.ndim != 4 or r.shape[1] not in (1, 3):
            raise ValueError(f"each row must be [n, 1 or 3, H, W], got {list(r.shape)}")
    if titles is not None and len(titles) != len(rows):
        raise ValueError(f"got {len(titles)} titles for {len(rows)} rows")
    n = max(r.shape[0] for r in rows)
    h, w = rows[0].shape[2:]
    width = min(0.6 * n * max(w / h, 0.5) + 0.5, 20.0)
    fig = new_figure(width, (width - 0.5) / n * h / w * len(rows) + 0.4 * len(rows))
    axes = np.atleast_1d(fig.subplots(len(rows), 1))
    for i, (ax, r) in enumerate(zip(axes, rows)):
        strip = np.clip(_mosaic(r, n), 0.0, 1.0)
        if strip.shape[-1] == 1:
            ax.imshow(strip[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize="small", loc="left")
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------
# Analysis figures


def plot_class_usage(usage, path, *, classes=None, title=None):
    """Heatmap of per-class code usage, ``usage: [class, latent]`` (a DataArray supplies the
    class labels)."""
    if isinstance(usage, xr.DataArray):
        classes = usage["class"].values if classes is None else classes
        usage = usage.transpose("class", "latent").values
    usage = _array(usage)
    classes = np.arange(usage.shape[0]) if classes is None else np.asarray(classes)
    fig = new_figure(max(6.0, min(0.08 * usage.shape[1] + 2.5, 16.0)),
                  max(2.5, 0.3 * usage.shape[0] + 1.2))
    ax = fig.subplots()
    im = ax.imshow(usage, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                   interpolation="nearest")
    ax.set_yticks(np.arange(len(classes)), [str(c) for c in classes])
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("class")
    ax.set_title(title or "Per-class code usage (fraction of the class's images)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return save_figure(fig, path)


def plot_sparsity_histogram(sparsity, path, *, bins=30):
    """Histogram over images of the posterior-mean inactive fraction; ``sparsity`` is the
    Dataset of :func:`~pyro_sparsegen.diagnostics.image_sparsity` or a dict
    ``{label: [image]}``."""
    if isinstance(sparsity, xr.Dataset):
        series = {name.replace("inactive_", "by "): sparsity[name].values
                  for name in sparsity.data_vars
                  if name.startswith("inactive_") and not name.endswith("_hdi")}
    else:
        series = {k: _array(v) for k, v in dict(sparsity).items()}
    fig = new_figure(6.0, 3.6)
    ax = fig.subplots()
    edges = np.linspace(0.0, 1.0, bins + 1)
    for label, values in series.items():
        ax.hist(values, bins=edges, alpha=0.6, label=f"{label} (mean {np.mean(values):.3f})")
    ax.set_xlabel("fraction of inactive coordinates (posterior mean)")
    ax.set_ylabel("images")
    ax.set_title("Per-image sparsity")
    if series:
        ax.legend(fontsize="small")
    return save_figure(fig, path)


def _select(latents, images):
    return {"latent": list(np.atleast_1d(latents)), "image": list(np.atleast_1d(images))}


def plot_rank(idata, path, *, latents, images, var_name="z"):
    """ArviZ rank plots of ``var_name`` for the chosen latent dimensions and images."""
    coords = _select(latents, images)
    n = len(coords["latent"]) * len(coords["image"])
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = new_figure(3.6 * cols, 2.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    with _quiet_arviz():
        az.plot_rank(idata, var_names=[var_name], coords=coords, ax=axes[:n],
                     labeller=az.labels.DimCoordLabeller())
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_trace(idata, path, *, latents, images, var_name="z"):
    """ArviZ trace plots (density and trace per chain) for the chosen coordinates."""
    coords = _select(latents, images)
    n = len(coords["latent"]) * len(coords["image"])
    fig = new_figure(10.0, 2.0 * n)
    axes = fig.subplots(n, 2, squeeze=False)
    with _quiet_arviz():
        az.plot_trace(idata, var_names=[var_name], coords=coords, axes=axes, compact=False,
                      labeller=az.labels.DimCoordLabeller())
    fig.tight_layout()
    return save_figure(fig, path)


def multimodal_hdi(draws, hdi_prob=0.94):
    """``az.hdi(draws, multimodal=True)`` without its padding: ``[modes, 2]`` intervals."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="found more modes", category=UserWarning)
        intervals = az.hdi(np.asarray(draws).ravel(), hdi_prob=hdi_prob, multimodal=True)
    return intervals[np.isfinite(intervals).all(1)]


def plot_spike_slab(idata, path, *, image, latent, hdi_prob=0.94, threshold=ACTIVE_THRESHOLD,
                    var_name="z"):
    """The posterior of one coordinate: histogram and KDE of its draws with the multimodal
    HDI (``az.hdi(..., multimodal=True)``) separating spike and slab, and the threshold band."""
    draws = idata.posterior[var_name].sel(image=image, latent=latent).values.ravel()
    intervals = multimodal_hdi(draws, hdi_prob)
    fig = new_figure(6.5, 3.8)
    ax = fig.subplots()
    ax.axvspan(-threshold, threshold, color="0.9", label=f"|z| <= {threshold}")
    ax.hist(draws, bins=60, density=True, color="tab:blue", alpha=0.5, label="draws")
    with _quiet_arviz():
        az.plot_kde(draws, ax=ax, plot_kwargs={"color": "tab:blue"})
    top = ax.get_ylim()[1]
    for k, (lo, hi) in enumerate(intervals):
        ax.plot([lo, hi], [0.03 * top, 0.03 * top], color="k", lw=4, solid_capstyle="butt",
                label=f"{hdi_prob:.0%} HDI (multimodal)" if k == 0 else None)
    title = f"z[image={image}, latent={latent}]"
    if "inclusion_probability" in idata.posterior:
        prob = idata.posterior["inclusion_probability"].sel(image=image, latent=latent)
        title += f", mean inclusion prob. {float(prob.mean()):.2f}"
    ax.set_title(title + f", {len(intervals)} HDI interval(s)")
    ax.set_xlabel("z")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_rhat(rhat, path, *, bins=40):
    """Histogram of R-hat values (any shape; non-finite values are dropped), with the usual
    1.01 and 1.1 marks."""
    values = _array(rhat).ravel()
    values = values[np.isfinite(values)]
    fig = new_figure(6.0, 3.6)
    ax = fig.subplots()
    if values.size:
        ax.hist(values, bins=bins, color="tab:purple", alpha=0.8)
    for mark, style in ((1.01, "--"), (1.1, ":")):
        ax.axvline(mark, color="k", ls=style, lw=1, label=f"R-hat = {mark}")
    ax.set_xlabel("split R-hat (rank-normalised)")
    ax.set_ylabel("scalars")
    frac = float((values > 1.01).mean()) if values.size else float("nan")
    ax.set_title(f"R-hat of {values.size} scalars; {frac:.1%} above 1.01")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_ladder(idata, path):
    """The replica-exchange ladder of a tempered
    :func:`~pyro_sparsegen.diagnostics.sample_posterior` run: the adapted inverse
    temperatures per level (median and range over the images, log scale), the swap
    acceptance of every adjacent pair (median and range; 0 anywhere cuts the ladder) and a
    histogram of the round trips per ladder (the figure of merit of Syed et al.'s
    non-reversible scheme)."""
    ss = idata.sample_stats
    beta, swaps = ss["beta"].values, ss["swap_accept_prob"].values  # [L, N], [L - 1, N]
    trips = ss["round_trips"].values.ravel()
    fig = new_figure(12.0, 3.6)
    axes = fig.subplots(1, 3)
    levels = np.arange(beta.shape[0])
    hot = beta[:-1] if (beta[-1] == 0).all() else beta
    axes[0].fill_between(levels[:hot.shape[0]], hot.min(1), hot.max(1), alpha=0.3)
    axes[0].plot(levels[:hot.shape[0]], np.median(hot, 1), "o-")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("level (0: the posterior)")
    axes[0].set_ylabel("beta" + (" (the last level, 0, not shown)" if hot.shape != beta.shape
                                 else ""))
    axes[0].set_title("adapted ladder")
    pairs = np.arange(swaps.shape[0])
    axes[1].fill_between(pairs, swaps.min(1), swaps.max(1), alpha=0.3)
    axes[1].plot(pairs, np.median(swaps, 1), "o-")
    axes[1].set_ylim(0, 1)
    axes[1].set_xlabel("adjacent pair (l, l + 1)")
    axes[1].set_ylabel("swap acceptance")
    axes[1].set_title(f"swap acceptance (min {swaps.min():.2f})")
    axes[2].hist(trips, bins=min(30, max(5, np.unique(trips).size)), color="tab:green")
    axes[2].set_xlabel("round trips per ladder (kept transitions)")
    axes[2].set_ylabel("ladders x images")
    axes[2].set_title(f"round trips (median {np.median(trips):g})")
    return save_figure(fig, path)
