"""Denoise, then classify (the authors' protocol): a linear classifier (logistic regression)
trained on clean training images classifies each model's reconstructions of test images
corrupted by Gaussian noise (σ = 0.3, 0.5, 0.7, clipped to [0, 1]); 5 repeats with different
noise, mean ± sd. The noisy images themselves are the floor, the clean ones the ceiling.

    python analyses/denoise_classify.py --data mnist5k --out runs/analysis --quick

Writes ``OUT/denoise_classify.md`` (the table), ``.json`` and
``OUT/figures/denoise_accuracy.png``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402

NAME = "denoise_classify"
TITLE = "Denoise, then classify"


def accuracies(ws, key, sigma):
    return [ws.denoise(key, sigma, r)["accuracy"] for r in range(ws.repeats)]


def run(ws):
    ws.needs_labels("denoise-then-classify")
    sigmas = common.NOISE_LEVELS
    header = ["model", "clean input"] + [f"σ = {s}" for s in sigmas]
    rows, results, curves = [], {}, {}
    clean_accuracy = ws.denoise(None, 0.0, 0)["accuracy"]
    for key in common.MODEL_KEYS + (None,):
        name = common.label(key) if key else "noisy input, no model (floor)"
        per_sigma = {s: accuracies(ws, key, s) for s in sigmas}
        clean = clean_accuracy if key is None else ws.denoise(key, 0.0, 0)["accuracy"]
        rows.append([name, f"{100 * clean:.1f}"] +
                    [common.fmt_mean_sd(per_sigma[s], 100) for s in sigmas])
        curves[key] = [clean] + [float(np.mean(per_sigma[s])) for s in sigmas]
        entry = {"denoise_accuracy": {str(s): float(np.mean(per_sigma[s])) for s in sigmas},
                 "denoise_accuracy_sd": {str(s): float(np.std(per_sigma[s], ddof=1))
                                         if len(per_sigma[s]) > 1 else 0.0 for s in sigmas},
                 "denoise_accuracy_clean": clean}
        results[key or "noisy_input"] = entry
    note = (f"Accuracy (%) of one logistic regression trained on the {len(ws.train)} clean "
            f"training images, on the {len(ws.test)} test images: for a model, on its "
            "reconstructions network(encoder(noisy image)); mean ± sd over "
            f"{ws.repeats} noise draws (the same noisy images for every model). 'clean input': "
            "reconstructions of the clean test images (for the floor row: the clean images "
            "themselves, the classifier's ceiling).")
    path = _figure(ws, curves, sigmas)
    return common.Section(NAME, TITLE, [note, common.md_table(header, rows)],
                          [("denoise-then-classify accuracy", ws.relative(path))], results)


def _figure(ws, curves, sigmas):
    fig = common.figure(6.5, 4.0)
    ax = fig.subplots()
    xs = [0.0] + list(sigmas)
    for key, ys in curves.items():
        style = {"ls": ":", "color": "0.4"} if key is None else {"ls": "-"}
        ax.plot(xs, 100 * np.asarray(ys), marker="o", label=common.label(key) if key else
                "noisy input (floor)", **style)
    ax.set_xlabel("noise σ")
    ax.set_ylabel("accuracy of the pixel classifier (%)")
    ax.set_title("Denoise, then classify")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return common.save_figure(fig, ws.figure_path("denoise_accuracy.png"))


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
