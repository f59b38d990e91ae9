"""A linear probe on the codes: logistic regression on standardised codes of the training
images, with 100, 1,000 and all training labels (stratified subsets, fixed seed), scored on
the codes of the test images.

    python analyses/classify_codes.py --data mnist5k --out runs/analysis --quick

Writes ``OUT/classify_codes.md`` (the table), ``.json`` and ``OUT/figures/probe_accuracy.png``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402

NAME = "classify_codes"
TITLE = "Linear probe on the codes"


def probe(ws, key, counts):
    """Test accuracy of the probe for each label count (``"all"`` or a number as text)."""
    train, test = ws.codes(key, "train"), ws.codes(key, "test")
    out = {}
    for count in counts:
        n = len(train["z"]) if count == "all" else int(count)
        rows = common.stratified_subset(train["labels"], n, ws.settings.seed)
        classifier = common.fit_logistic(train["z"][rows], train["labels"][rows],
                                         seed=ws.settings.seed)
        out[count] = float((classifier.predict(test["z"]) == test["labels"]).mean())
    return out


def run(ws):
    ws.needs_labels("the linear probe")
    counts = ws.probe_label_counts()
    header = ["model", "d"] + [f"{c} labels" if c != "all" else f"all ({len(ws.train)}) labels"
                               for c in counts]
    rows, results = [], {}
    for key in common.MODEL_KEYS:
        accuracy = probe(ws, key, counts)
        rows.append([common.label(key), str(ws.model(key).config.network.latent_dim)] +
                    [f"{100 * accuracy[c]:.1f}" for c in counts])
        results[key] = {"probe_accuracy": accuracy}
    skipped = [str(n) for n in common.PROBE_LABELS if str(n) not in counts]
    note = (f"Test accuracy (%) on the {len(ws.test)} test images of a logistic regression on "
            "standardised codes, trained on a stratified subset (seed "
            f"{ws.settings.seed}) of the {len(ws.train)} training images' codes.")
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
