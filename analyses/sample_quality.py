"""Sample quality: an "MNIST FID" (:mod:`pyro_sparsegen.evaluation.fid`) of each generative
model's prior samples against the held-out images, in the penultimate-layer features of a small
classifier trained on the training images; and a grid of samples per model.

Each model draws as many samples as there are test images, from its own prior
(``model.generate``: the schedule's prior at the end of training, or a learned prior where the
model has one); ABP models trained with sparsified codes decode the samples with the spike
collapsed to 0, as they decode their codes. Two disjoint halves of the test images give the
noise level of the estimate (at half the sample size, so it is biased up).

    python analyses/sample_quality.py --data mnist5k --out runs/analysis --quick

Writes ``OUT/sample_quality.md`` (the table), ``.json`` and ``OUT/figures/samples_<key>.png``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np

import common
import pyro_sparsegen as psg
from common import ev

NAME = "sample_quality"
TITLE = "Sample quality (FID in a small classifier's features)"
GRID = (2, 10)  # rows x images of each sample grid


def reference(ws):
    """FIDs that frame the models': two class-spread halves of the test images, and the test
    images against uniform noise images."""
    x = ws.test.images().numpy()
    first = ws.spread(ws.test, len(x) // 2)
    second = np.setdiff1d(np.arange(len(x)), first)
    noise = np.random.default_rng(ws.settings.seed).random(x.shape).astype(np.float32)
    extractor = ws.feature_extractor()
    return {"two halves of the test images": ev.fid(extractor, x[first], x[second]),
            "uniform noise images": ev.fid(extractor, noise, x)}


def run(ws):
    ws.needs_labels("the FID's feature classifier")
    extractor = ws.feature_extractor()
    accuracy = extractor.accuracy(ws.test.images().numpy(), ws.test.labels)
    rows, results, figures = [], {}, []
    for key in common.MODEL_KEYS:
        mean, sd, values = ws.over_seeds(key, ws.sample_fid)
        results[key] = {"sample_fid": mean, "sample_fid_sd": sd,
                        "seed_values": {"sample_fid": values}}
        rows.append([common.label(key), common.fmt_mean_sd(mean, sd, digits=2)])
        m = ws.model(key)
        samples = ev.sample_images(m.model, GRID[0] * GRID[1], seed=ws.settings.seed + 1,
                                   sparsify=ws.sparsified(key, m))
        path = psg.plots.plot_image_grid(
            [samples[i * GRID[1]:(i + 1) * GRID[1]] for i in range(GRID[0])],
            ws.figure_path(f"samples_{key}.png"))
        figures.append((f"{common.label(key)}: samples from its prior", ws.relative(path)))
    references = reference(ws)
    for name, value in references.items():
        rows.append([f"reference: {name}", common.fmt(value, 2)])
    seeds = len(ws.seeds)
    note = (f"Fréchet distance (lower is better) between {len(ws.test)} prior samples of each "
            f"model and the {len(ws.test)} test images, in the 64 penultimate-layer features "
            f"of an MLP classifier trained on the {len(ws.train)} training images (test "
            f"accuracy {100 * accuracy:.1f}%)" + (f"; mean ± sd over {seeds} training seeds"
                                                  if seeds > 1 else "") + ".")
    results["fid_reference"] = references
    results["fid_feature_accuracy"] = accuracy
    return common.Section(NAME, TITLE, [note, common.md_table(["model", "FID"], rows)],
                          figures, results)


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
