"""Reconstruction against sparsity: test MSE, zeroed MSE (inactive coordinates set to exactly
0) and the inactive fraction, for the sparse model at several final slab weights and for the
baselines.

    python analyses/reconstruction_sparsity.py --data mnist5k --out runs/analysis --quick

Writes ``OUT/reconstruction_sparsity.md`` (the table), ``.json`` (the numbers) and
``OUT/figures/mse_vs_sparsity.png``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402

NAME = "reconstruction_sparsity"
TITLE = "Reconstruction and sparsity"


def _reference_mse(ws):
    """MSE of predicting the mean training image, and the mean training image of the right
    class: what a code that carries nothing (or only the class) would reach."""
    train = ws.train.images().numpy()
    test = ws.test.images().numpy()
    rows = [("predict the mean training image", float(((test - train.mean(0)) ** 2).mean()))]
    if ws.train.labels is not None and ws.test.labels is not None:
        means = {c: train[ws.train.labels == c].mean(0) for c in np.unique(ws.train.labels)}
        if all(c in means for c in np.unique(ws.test.labels)):
            pred = np.stack([means[c] for c in ws.test.labels])
            rows.append(("predict the class's mean training image",
                         float(((test - pred) ** 2).mean())))
    return rows


def run(ws):
    sweep = ws.sweep_weights()
    keys = [key for _, key in sweep] + [k for k in common.MODEL_KEYS if k != "sparse"]
    rows, results, points = [], {}, {}
    weight_of = {key: w for w, key in sweep}
    for key in keys:
        ev = ws.evaluation(key)
        m = ws.model(key)
        d = m.config.network.latent_dim
        active = (1.0 - ev["inactive_fraction_threshold"]) * d
        w = weight_of.get(key)
        rows.append([common.label(key), common.fmt(w, 3) if w is not None else "—", str(d),
                     common.fmt(ev["test_mse"], 4), common.fmt(ev["zeroed_mse"], 4),
                     common.fmt(ev["zeroed_mse_inclusion"], 4),
                     common.fmt(ev["inactive_fraction_threshold"], 3),
                     common.fmt(ev["inactive_fraction_inclusion"], 3), common.fmt(active, 1)])
        results[key] = {"test_mse": ev["test_mse"], "zeroed_mse": ev["zeroed_mse"],
                        "zeroed_mse_inclusion": ev["zeroed_mse_inclusion"],
                        "inactive_fraction": ev["inactive_fraction_threshold"],
                        "inactive_fraction_inclusion": ev["inactive_fraction_inclusion"],
                        "latent_dim": d, "mean_active": active}
        if w is not None:
            results[key]["final_slab_weight"] = w
        points[key] = (ev["inactive_fraction_threshold"], ev["test_mse"], ev["zeroed_mse"])
    references = _reference_mse(ws)
    for name, mse in references:
        rows.append([name, "—", "0", common.fmt(mse, 4), "—", "—", "—", "—", "0"])
    header = ["model", "final w", "d", "test MSE", "zeroed MSE (|z| ≤ t)",
              "zeroed MSE (incl. < 0.5)", "inactive (|z| ≤ t)", "inactive (incl. < 0.5)",
              "mean active coords"]
    t = ws.threshold
    note = (f"Test set: {len(ws.test)} images; t = {t}. Zeroed MSE: the reconstruction with "
            "every inactive coordinate set to exactly 0. Inclusion probabilities exist only for "
            "spike-and-slab priors (— elsewhere). The dense matched-budget model has "
            f"d = round(sparse model's mean active coordinates) = {ws.matched_latent_dim()}.")
    path = _figure(ws, points, sweep, references)
    results["reference_mse"] = dict(references)
    return common.Section(NAME, TITLE, [note, common.md_table(header, rows)],
                          [("test MSE against sparsity", ws.relative(path))], results)


def _figure(ws, points, sweep, references):
    fig = common.figure(7.0, 4.5)
    ax = fig.subplots()
    sweep_keys = [key for _, key in sweep]
    xs = [points[k][0] for k in sweep_keys]
    ax.plot(xs, [points[k][1] for k in sweep_keys], "o-", color="tab:blue",
            label="sparse: test MSE")
    ax.plot(xs, [points[k][2] for k in sweep_keys], "s--", color="tab:blue", mfc="none",
            label="sparse: zeroed MSE")
    for w, key in sweep:
        ax.annotate(f"w={w:g}", (points[key][0], points[key][1]), textcoords="offset points",
                    xytext=(4, 4), fontsize="small")
    colours = {"dense_abp": "tab:orange", "dense_matched": "tab:green", "beta_vae": "tab:red",
               "vsc": "tab:purple"}
    for key, colour in colours.items():
        x, mse, zeroed = points[key]
        ax.plot([x], [mse], "o", color=colour, label=f"{common.label(key)}: test MSE")
        ax.plot([x], [zeroed], "s", color=colour, mfc="none", label=f"{common.label(key)}: zeroed")
    for (name, mse), style in zip(references, (":", "-.")):
        ax.axhline(mse, color="0.5", ls=style, lw=1, label=name)
    values = [v for p in points.values() for v in p[1:]] + [m for _, m in references]
    if all(np.isfinite(values)) and min(values) > 0:
        ax.set_yscale("log")
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel(f"inactive fraction (|z| ≤ {ws.threshold})")
    ax.set_ylabel("per-pixel MSE on test images")
    ax.set_title("Reconstruction error against sparsity")
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return common.save_figure(fig, ws.figure_path("mse_vs_sparsity.png"))


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
