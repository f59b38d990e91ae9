"""Denoise, then classify, under the authors' protocol (hanaoli/Sparse-ABP, ``hiabp_sparse.py``,
``test_denoise_classify``; :mod:`pyro_sparsegen.evaluation.denoise`): test images get noise
``N(0, sigma^2)``, sigma = 0.3, 0.5, 0.7, **not clipped**; every model encodes the noisy
image exactly as it encodes a clean one; a logistic regression trained on the clean training
pixels classifies the reconstructions; 5 noise repeats (the same noisy images for every model).
A second, harder table clips the noisy images to [0, 1]; a third, labelled variant infers the
clipped images under a censored Gaussian likelihood (ABP models). Each accuracy comes with its
paired comparison against the sparse model on the same images (difference ± standard error; within
one standard error: a tie).

    python analyses/denoise_classify.py --data mnist5k --out runs/analysis --quick

Writes ``OUT/denoise_classify.md`` (the tables), ``.json`` and
``OUT/figures/denoise_accuracy.png``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np

import common
from common import ev

NAME = "denoise_classify"
TITLE = "Denoise, then classify"
# (denoise keywords, results field, caption, models)
VARIANTS = (
    ({"clip": False}, "denoise_accuracy", "authors' protocol: noisy images not clipped", None),
    ({"clip": True}, "denoise_accuracy_clipped",
     "harder variant: noisy images clipped to [0, 1]", None),
    ({"censored": True}, "denoise_accuracy_clipped_censored",
     "labelled variant: clipped, inferred under a censored Gaussian likelihood (ABP models)",
     "abp"))


def entry(ws, key, clip=False, censored=False):
    """Accuracy per sigma (mean, sd over seeds, or over noise repeats for one seed, and the
    per-seed means: the noise draws averaged inside each seed) and the paired comparison of
    the sparse model against ``key``, both under the same variant."""
    seeds = [0] if key is None else ws.seeds_of(key)
    variant = {"clip": clip, "censored": censored}
    # the floor has no inference to censor: its row is the clipped noisy images
    own = {"clip": clip or censored} if key is None else variant
    out = {"mean": {}, "sd": {}, "comparison": {}, "seeds": {}}
    for sigma in common.NOISE_LEVELS:
        per_seed = [ws.denoise(key, s, **own)[sigma].accuracy for s in seeds]
        stacked = ev.Accuracy.stack(per_seed)
        s = common.sigma_text(sigma)
        out["mean"][s] = stacked.mean
        out["seeds"][s] = [a.mean for a in per_seed]
        out["sd"][s] = (ev.mean_sd([a.mean for a in per_seed])[1] if len(per_seed) > 1
                        else stacked.sd)
        if key != "sparse":
            out["comparison"][s] = ev.paired_comparison(
                ws.accuracy("sparse", sigma, **variant), stacked).to_dict()
    return out


def run(ws):
    ws.needs_labels("denoise-then-classify")
    keys = common.MODEL_KEYS + (None,)
    ceiling = ws.denoise(None, clean=True)[0.0].accuracy.mean

    def clean(key, censored=False):
        """``(mean over seeds, per seed)`` of the accuracy on reconstructions of clean images."""
        if key is None:
            return ceiling, [ceiling]
        values = [ws.denoise(key, s, clean=True, censored=censored)[0.0].accuracy.mean
                  for s in ws.seeds_of(key)]
        return ev.mean_sd(values)[0], values

    results, blocks, curves = {}, [], {}
    seeds = len(ws.seeds)
    spread = f"sd over {seeds} training seeds (the floor: over the noise draws)" \
        if seeds > 1 else "sd over the noise draws"
    blocks.append(
        f"Accuracy (%) of one logistic regression trained on the {len(ws.train)} clean "
        f"training images, on the {len(ws.test)} test images: for a model, on its "
        "reconstructions g(z*) of the noisy images, z* from the model's own encoder (as in "
        f"training); mean ± {spread}, {ws.repeats} noise draws per level (the same noisy images "
        "for every model). 'clean input': reconstructions of the clean test images (for the "
        "floor row: the clean images themselves, the classifier's ceiling). 'sparse − model': "
        "the paired difference on the same images in points, ± its standard error, and the "
        "verdict for the sparse model (within one standard error: ties).")
    for variant, field, caption, models in VARIANTS:
        header = ["model", "clean input"] + [f"σ = {s}" for s in common.NOISE_LEVELS] + \
            [f"sparse − model, σ = {s}" for s in common.NOISE_LEVELS]
        rows = []
        for key in (ws.abp_keys + (None,) if models == "abp" else keys):
            e = entry(ws, key, **variant)
            name = key or "noisy_input"
            results.setdefault(name, {}).update({
                field: e["mean"], f"{field}_sd": e["sd"], f"{field}_comparison":
                e["comparison"] or None})
            results[name].setdefault("seed_values", {})[field] = e["seeds"]
            ceiling_of, per_seed = clean(key, variant.get("censored", False))
            if not variant.get("censored"):
                results[name]["denoise_accuracy_clean"] = ceiling_of
                results[name]["seed_values"]["denoise_accuracy_clean"] = per_seed
            rows.append([common.label(key), common.fmt_mean_sd(ceiling_of, None, 100)] +
                        [common.fmt_mean_sd(e["mean"][common.sigma_text(s)],
                                            e["sd"][common.sigma_text(s)], 100)
                         for s in common.NOISE_LEVELS] +
                        [common.fmt_comparison(e["comparison"].get(common.sigma_text(s)))
                         for s in common.NOISE_LEVELS])
            curves[key, field] = [ceiling_of] + [e["mean"][common.sigma_text(s)]
                                                 for s in common.NOISE_LEVELS]
        blocks += [f"**{caption[0].upper() + caption[1:]}** (`{field}`):",
                   common.md_table(header, rows)]
    blocks.append(
        "The labelled variant keeps each ABP model and its inference (prior, initialisation, "
        "steps, sparsification) and replaces the Gaussian likelihood by a censored one at the "
        "model's own σ (pyro_sparsegen.evaluation.censored): a pixel at 0 or 1 counts with the "
        "probability mass beyond the bound. Its floor row is the clipped noisy images.")
    path = _figure(ws, curves)
    return common.Section(NAME, TITLE, blocks,
                          [("denoise-then-classify accuracy", ws.relative(path))], results)


def _figure(ws, curves):
    fig = common.figure(16.0, 4.0)
    axes = fig.subplots(1, len(VARIANTS), sharey=True)
    xs = [0.0] + list(common.NOISE_LEVELS)
    for ax, (_, field, caption, _) in zip(axes, VARIANTS):
        for key in common.MODEL_KEYS + (None,):
            if (key, field) not in curves:
                continue
            style = {"ls": ":", "color": "0.4"} if key is None else {"ls": "-"}
            ax.plot(xs, 100 * np.asarray(curves[key, field]), marker="o",
                    label=common.label(key), **style)
        ax.set_xlabel("noise σ")
        ax.set_title(caption.split(":")[0], fontsize="medium")
    axes[0].set_ylabel("accuracy of the pixel classifier (%)")
    axes[-1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return common.save_figure(fig, ws.figure_path("denoise_accuracy.png"))


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
