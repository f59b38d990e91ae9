"""A linear probe on the codes (:func:`pyro_sparsegen.evaluation.linear_probe`): logistic
regression on standardised codes of the training images, with 100, 1,000 and all training
labels (class-spread subsets, fixed seed), scored on the codes of the test images; each
accuracy with its paired comparison against the sparse model on the same test images.

    python analyses/classify_codes.py --data mnist5k --out runs/analysis --quick

Writes ``OUT/classify_codes.md`` (the table), ``.json`` and ``OUT/figures/probe_accuracy.png``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from common import ev

NAME = "classify_codes"
TITLE = "Linear probe on the codes"


def probe(ws, key, seed):
    """``{count: Accuracy}`` of the probe on the codes of model ``key``, seed ``seed``."""
    train, test = ws.codes(key, seed, "train"), ws.codes(key, seed, "test")
    counts = [None if c == "all" else int(c) for c in ws.probe_label_counts()]
    return ws.cached(("probe", key, seed), lambda: ev.linear_probe(
        train["z"], train["labels"], test["z"], test["labels"], label_counts=counts,
        seed=ws.settings.seed), "probes")


def stacked(ws, key, count):
    return ev.Accuracy.stack([probe(ws, key, s)[count] for s in ws.seeds_of(key)])


def run(ws):
    ws.needs_labels("the linear probe")
    counts = ws.probe_label_counts()
    names = [f"{c} labels" if c != "all" else f"all ({len(ws.train)}) labels" for c in counts]
    header = ["model", "d"] + names + [f"sparse − model, {n}" for n in names]
    rows, results = [], {}
    for key in common.MODEL_KEYS:
        accuracy, sd, comparison, seed_values = {}, {}, {}, {}
        for c in counts:
            per_seed = [probe(ws, key, s)[c].mean for s in ws.seeds_of(key)]
            seed_values[c] = per_seed
            accuracy[c], sd[c] = ev.mean_sd(per_seed)
            if len(per_seed) < 2:
                sd[c] = None
            if key != "sparse":
                comparison[c] = ev.paired_comparison(stacked(ws, "sparse", c),
                                                     stacked(ws, key, c)).to_dict()
        rows.append([common.label(key), str(ws.model(key).config.network.latent_dim)] +
                    [common.fmt_mean_sd(accuracy[c], sd[c], 100) for c in counts] +
                    [common.fmt_comparison(comparison.get(c)) for c in counts])
        results[key] = {"probe_accuracy": accuracy, "probe_accuracy_sd": sd,
                        "probe_comparison": comparison or None,
                        "seed_values": {"probe_accuracy": seed_values}}
    seeds = len(ws.seeds)
    note = (f"Test accuracy (%) on the {len(ws.test)} test images of a logistic regression on "
            "standardised codes, trained on a class-spread subset (seed "
            f"{ws.settings.seed}) of the {len(ws.train)} training images' codes"
            + (f"; mean ± sd over {seeds} training seeds" if seeds > 1 else "") +
            ". 'sparse − model': the paired difference on the same test images (points ± "
            "standard error, verdict for the sparse model).")
    skipped = [ev.count_name(n) for n in common.PROBE_LABELS
               if ev.count_name(n) not in counts]
    if skipped:
        note += f" Label counts {', '.join(skipped)} exceed the training set and are left out."
    path = _figure(ws, results, counts)
    return common.Section(NAME, TITLE, [note, common.md_table(header, rows)],
                          [("probe accuracy against the number of labels", ws.relative(path))],
                          results)


def _figure(ws, results, counts):
    fig = common.figure(6.0, 4.0)
    ax = fig.subplots()
    xs = [len(ws.train) if c == "all" else int(c) for c in counts]
    for key, entry in results.items():
        ax.plot(xs, [100 * entry["probe_accuracy"][c] for c in counts], "o-",
                label=common.label(key))
    if len(set(xs)) > 1:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("training labels")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Linear probe on the codes")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return common.save_figure(fig, ws.figure_path("probe_accuracy.png"))


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
