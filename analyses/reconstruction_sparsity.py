"""Reconstruction against sparsity, and the sparsity frontier: test MSE, zeroed MSE (every
``|z_j| <= 0.2`` set to exactly 0), the inactive fraction and the mean number of active
coordinates per image, for the main models, the sparse models of a slab-weight sweep and dense
ABP at several latent sizes (:func:`pyro_sparsegen.evaluation.sparsity_summary`).

    python analyses/reconstruction_sparsity.py --data mnist5k --out runs/analysis --quick

Writes ``OUT/reconstruction_sparsity.md`` (the tables), ``.json`` and
``OUT/figures/sparsity_frontier.png`` (zeroed MSE against mean active coordinates per image:
the sweep's sparse models against dense ABP at d = 4 ... 100).
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np

import common

NAME = "reconstruction_sparsity"
TITLE = "Reconstruction and sparsity"
FIELDS = ("test_mse", "zeroed_mse", "inactive_fraction", "mean_active")


def reference_mse(ws):
    """MSE of predicting the mean training image, and the mean training image of the right
    class: what a code that carries nothing (or only the class) would reach."""
    train = ws.train.images().numpy()
    test = ws.test.images().numpy()
    rows = {"predict the mean training image": float(((test - train.mean(0)) ** 2).mean())}
    if ws.train.labels is not None and ws.test.labels is not None:
        means = {c: train[ws.train.labels == c].mean(0) for c in np.unique(ws.train.labels)}
        if all(c in means for c in np.unique(ws.test.labels)):
            pred = np.stack([means[c] for c in ws.test.labels])
            rows["predict the class's mean training image"] = float(((test - pred) ** 2).mean())
    return rows


def entry(ws, key):
    """Mean (and sd over seeds) of the sparsity summary of ``key``; ``latent_dim`` is the
    first seed's (the matched budget's varies by seed: ``seed_values``)."""
    per_seed = [ws.summary(key, s) for s in ws.seeds_of(key)]
    out = {"latent_dim": per_seed[0]["latent_dim"], "seeds": ws.seeds_of(key),
           "seed_values": {"latent_dim": [p["latent_dim"] for p in per_seed]}}
    for field in FIELDS + ("inactive_fraction_inclusion",):
        values = [p.get(field) for p in per_seed]
        mean, sd = common.ev.mean_sd(values)
        out[field] = mean
        out["seed_values"][field] = values
        if len(values) > 1 and field in FIELDS:
            out.setdefault("sd", {})[field] = sd
    return out


def row(ws, key, e, extra=""):
    sd = e.get("sd", {})

    def cell(field, digits):
        return common.fmt(e[field], digits) + (
            f" ± {common.fmt(sd[field], digits)}" if field in sd else "")

    return [common.label(key) + extra, str(e["latent_dim"]), cell("test_mse", 4),
            cell("zeroed_mse", 4), cell("inactive_fraction", 3),
            common.fmt(e.get("inactive_fraction_inclusion"), 3), cell("mean_active", 1)]


def run(ws):
    header = ["model", "d", "test MSE", "zeroed MSE", "inactive (|z| ≤ t)",
              "inactive (incl. < 0.5)", "mean active coords"]
    results, rows = {}, []
    for key in common.MODEL_KEYS:
        results[key] = entry(ws, key)
        rows.append(row(ws, key, results[key]))
    references = reference_mse(ws)
    for name, mse in references.items():
        rows.append([name, "0", common.fmt(mse, 4), "—", "—", "—", "0"])
    t = ws.threshold
    seeds = len(ws.seeds)
    dims = ws.matched_latent_dims()
    note = (f"Test set: {len(ws.test)} images; t = {t}. Zeroed MSE: the reconstruction with "
            "every coordinate with |z| ≤ t set to exactly 0 (a sparse code must really be "
            "sparse). Inclusion probabilities exist only for spike-and-slab priors (— "
            "elsewhere). The matched-budget dense model has d = round(the sparse model's mean "
            "active coordinates on its *training* codes), fixed per seed from that seed's "
            f"sparse model: d = {', '.join(map(str, dims))}"
            + (f" for seeds {', '.join(str(ws.settings.seed + s) for s in ws.seeds)}"
               if seeds > 1 else "") + " (the table's d: the first seed's)."
            + (f" Main models: mean ± sd over {seeds} training seeds." if seeds > 1 else ""))
    blocks = [note, common.md_table(header, rows)]
    results["reference_mse"] = references
    if not ws.sweeps:
        blocks.append("The slab-weight sweep and the sparsity frontier beyond the main models: "
                      "not run (add --sweeps).")
        return common.Section(NAME, TITLE, blocks, [], results)
    sweep, frontier = ws.sweep(), ws.frontier()
    sweep_rows, frontier_rows = [], []
    for w, key in sweep:
        e = results.get(key) or entry(ws, key)
        e["final_slab_weight"] = w
        results.setdefault(key, e)
        sweep_rows.append([common.fmt(w, 3)] + row(ws, key, e)[1:])
    for d, key in frontier:
        e = results.get(key) or entry(ws, key)
        results.setdefault(key, e)
        frontier_rows.append([str(d), f"`{key}`"] + row(ws, key, e)[2:])
    blocks += ["Slab-weight sweep (sparse models, one seed each; the default: its seed mean):",
               common.md_table(["final w"] + header[1:], sweep_rows),
               "Dense ABP at several latent sizes (one seed each; the main models: their seed "
               "means):",
               common.md_table(["d", "key"] + header[2:], frontier_rows)]
    path = _frontier_figure(ws, results, sweep, frontier, references)
    results["sweep"] = {key: results[key] for _, key in sweep}
    results["frontier"] = {key: results[key] for _, key in frontier}
    return common.Section(NAME, TITLE, blocks,
                          [("the sparsity frontier: zeroed MSE against mean active coordinates",
                            ws.relative(path))], results)


def _frontier_figure(ws, results, sweep, frontier, references):
    fig = common.figure(7.0, 4.5)
    ax = fig.subplots()
    xs = [results[k]["mean_active"] for _, k in frontier]
    ax.plot(xs, [results[k]["zeroed_mse"] for _, k in frontier], "o-", color="tab:orange",
            label="dense ABP (d = 4 … 100): zeroed MSE")
    for d, key in frontier:
        ax.annotate(f"d={d}", (results[key]["mean_active"], results[key]["zeroed_mse"]),
                    textcoords="offset points", xytext=(4, -10), fontsize="x-small")
    sx = [results[k]["mean_active"] for _, k in sweep]
    ax.plot(sx, [results[k]["zeroed_mse"] for _, k in sweep], "s-", color="tab:blue",
            label="sparse (slab-weight sweep): zeroed MSE")
    ax.plot(sx, [results[k]["test_mse"] for _, k in sweep], "s:", color="tab:blue",
            mfc="none", label="sparse: test MSE (codes as inferred)")
    for w, key in sweep:
        ax.annotate(f"w={w:g}", (results[key]["mean_active"], results[key]["zeroed_mse"]),
                    textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    for key, colour in (("beta_vae", "tab:red"), ("vsc", "tab:purple")):
        ax.plot([results[key]["mean_active"]], [results[key]["zeroed_mse"]], "^",
                color=colour, label=f"{common.label(key)}: zeroed MSE")
    for (name, mse), style in zip(references.items(), (":", "-.")):
        ax.axhline(mse, color="0.5", ls=style, lw=1, label=name)
    values = [results[k][f] for _, k in sweep + frontier for f in ("zeroed_mse", "test_mse")]
    if all(v is not None and np.isfinite(v) and v > 0 for v in values):
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    if all(x is not None and x > 0 for x in xs + sx):
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    ax.set_xlabel(f"mean active coordinates per image (|z| > {ws.threshold})")
    ax.set_ylabel("per-pixel MSE on test images")
    ax.set_title("The sparsity frontier")
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return common.save_figure(fig, ws.figure_path("sparsity_frontier.png"))


LOG_TICKS = ((1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0), tuple(range(1, 10)))


def _plain_log_ticks(axis):
    """Labels at 1, 2 and 5 times the powers of ten (a denser set where the axis spans too
    little for three of them), as plain numbers (``0.02``, ``50``), none on the minor ticks:
    on an axis spanning about a decade matplotlib's own labels every minor tick as
    ``6×10⁻²``, and the labels overlap."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = sorted(axis.get_view_interval())
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for subs in LOG_TICKS:
        if sum(low <= s * 10.0**k <= high for k in decades for s in subs) >= 3:
            break
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
