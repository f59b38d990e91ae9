"""Explainability of the codes: per-class activation maps (for each class and latent dimension,
the fraction of the class's test images with |z| > t, as a heatmap), latent traversals of the
most-used dimensions (one coordinate of a typical code varied from −3 to 3, the others fixed),
and the mean Jaccard overlap of the per-class active sets (a dimension is in a class's set when
at least half of the class's images use it; lower means classes use more distinct dimensions).

    python analyses/explainability.py --data mnist5k --out runs/analysis --quick

Writes ``OUT/explainability.md`` (the table), ``.json``, and per model
``OUT/figures/class_usage_<key>.png`` and ``OUT/figures/traversals_<key>.png``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch

import common
import pyro_sparsegen as psg
from common import ev

NAME = "explainability"
TITLE = "Explainability: per-class activation maps, traversals, class overlap"
MIN_USAGE = psg.diagnostics.MIN_USAGE  # a class's active set: used by half its images
TRAVERSAL = np.linspace(-3.0, 3.0, 7)
TOP_DIMENSIONS = 8


def typical_code(z):
    """The code (of a real test image) nearest to the mean code."""
    return z[np.argmin(((z - z.mean(0)) ** 2).sum(1))]


def traversals(ws, key, usage, z):
    """Image rows ``[len(TRAVERSAL), C, H, W]`` for the most-used dimensions, and their
    titles."""
    loaded = ws.model(key)
    overall = usage.mean("class").values
    spread = z.std(0)
    # most used first; among equally used (e.g. a dense code) the widest spread first
    order = np.lexsort((-spread, -overall))[:min(TOP_DIMENSIONS, z.shape[1])]
    base = typical_code(z)
    rows, titles = [], []
    for j in order:
        codes = np.repeat(base[None], len(TRAVERSAL), 0)
        codes[:, j] = TRAVERSAL
        images = ev.decode(loaded.model, torch.as_tensor(codes, dtype=torch.float32,
                                                         device=ws.device))
        rows.append(images.cpu().numpy())
        titles.append(f"dimension {j} (used by {100 * overall[j]:.0f}% of test images; "
                      f"typical value {base[j]:+.2f})")
    return rows, titles


def run(ws):
    ws.needs_labels("the per-class analysis")
    header = ["model", "d", "dims used by ≥ 1% of test images", "mean active coords",
              "classes with an empty active set", "mean Jaccard of class active sets"]
    rows, results, figures = [], {}, []
    for key in common.MODEL_KEYS:
        overlaps = [ev.class_overlap(ws.codes(key, s, "test"), threshold=ws.threshold,
                                     min_usage=MIN_USAGE) for s in ws.seeds_of(key)]
        jaccard, jaccard_sd = ev.mean_sd([o["class_jaccard"] for o in overlaps])
        overlap, codes = overlaps[0], ws.codes(key, 0, "test")
        classes = overlap["active_sets"].sizes["class"]
        rows.append([common.label(key), str(codes["z"].shape[1]),
                     str(overlap["dimensions_used"]),
                     common.fmt(codes["active"].sum(1).mean(), 1),
                     f"{overlap['empty_class_sets']} of {classes}",
                     common.fmt_mean_sd(jaccard, jaccard_sd if len(overlaps) > 1 else None,
                                        digits=3)])
        results[key] = {"class_jaccard": jaccard, "dimensions_used": overlap["dimensions_used"],
                        "empty_class_sets": overlap["empty_class_sets"],
                        "seed_values": {"class_jaccard": [o["class_jaccard"] for o in overlaps]}}
        usage = overlap["usage"]
        ordered = usage.isel(latent=_block_order(usage.values))
        heat = psg.plots.plot_class_usage(
            ordered, ws.figure_path(f"class_usage_{key}.png"),
            title=f"{common.label(key)}: fraction of each class's test images using a "
                  f"dimension (|z| > {ws.threshold}); dimensions ordered by their main class")
        grid, titles = traversals(ws, key, usage, codes["z"])
        trav = psg.plots.plot_image_grid(grid, ws.figure_path(f"traversals_{key}.png"),
                                         titles=titles)
        figures += [(f"{common.label(key)}: per-class activation map", ws.relative(heat)),
                    (f"{common.label(key)}: traversals from −3 to 3 of the most-used dimensions"
                     f" of a typical code", ws.relative(trav))]
    note = (f"Test set: {len(ws.test)} images; a coordinate is active when |z| > "
            f"{ws.threshold}. A class's active set holds the dimensions used by at least "
            f"{MIN_USAGE:.0%} of its images; the Jaccard overlap "
            "(pyro_sparsegen.diagnostics.class_jaccard) is averaged over pairs of classes "
            "(pairs of two empty sets are skipped; — when every set is empty). Maps and "
            "traversals show the first seed's model; traversals start from the test code "
            "nearest to the mean code.")
    return common.Section(NAME, TITLE, [note, common.md_table(header, rows)], figures, results)


def _block_order(usage):
    """Latent order grouping dimensions by the class that uses them most (unused ones last)."""
    main = usage.argmax(0)
    peak = usage.max(0)
    main = np.where(peak < 0.01, usage.shape[0], main)
    return np.lexsort((-peak, main))


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
