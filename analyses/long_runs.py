"""The default recipe over longer runs (issue 22, item 4): the sparse model trained for 60 and
100 epochs (the mode's ``long_epochs``) on the main models' seeds, in separate runs (the
schedule is sized to each run's length), and the inactive-fraction target (``|z|`` at most the
threshold on the test codes, at least 0.85) checked on each length over the seeds.

    python analyses/long_runs.py --data mnist5k --out runs/analysis --quick
    python analyses/run_all.py --data mnist5k --out runs/analysis --quick --long-runs

Per length and seed: the inactive fraction, the mean active coordinates and the test and
zeroed MSE of the test codes (as ``reconstruction_sparsity.py``); per length the threshold
verdict over the seeds (:func:`common.threshold_verdict`). The mode's own length uses the main
sparse model. Writes ``OUT/long_runs.md`` and ``.json``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from common import ev

NAME = "long_runs"
TITLE = "The default recipe over longer runs: the inactive fraction at 60 and 100 epochs"
INACTIVE_TARGET = 0.85
FIELDS = ("inactive_fraction", "mean_active", "test_mse", "zeroed_mse")


def run(ws):
    entries, rows = {}, []
    for epochs, key in ws.long_runs():
        per_seed = [ws.summary(key, s) for s in ws.seeds]
        entry = {"key": key, "epochs": epochs, "seeds": [ws.settings.seed + s for s in ws.seeds],
                 "seed_values": {f: [float(p[f]) for p in per_seed] for f in FIELDS}}
        for field in FIELDS:
            entry[field], sd = ev.mean_sd(entry["seed_values"][field])
            entry[f"{field}_sd"] = sd if len(ws.seeds) > 1 else None
        entry["verdict"] = common.threshold_verdict(entry["seed_values"]["inactive_fraction"],
                                                    INACTIVE_TARGET, at_least=True)
        entries[str(epochs)] = entry
        rows.append([str(epochs), f"`{ws.folder_name(key, 0)}`",
                     ", ".join(common.fmt(v, 3)
                               for v in entry["seed_values"]["inactive_fraction"]),
                     common.fmt_verdict(entry["verdict"], 1.0, 3, key="mean", signed=False),
                     common.fmt_mean_sd(entry["mean_active"], entry["mean_active_sd"]),
                     common.fmt_mean_sd(entry["test_mse"], entry["test_mse_sd"], digits=4),
                     common.fmt_mean_sd(entry["zeroed_mse"], entry["zeroed_mse_sd"], digits=4)])
    note = (f"The sparse model of the recipe under test trained for each length in its own run "
            f"(the annealing is sized to the run), seeds "
            f"{', '.join(str(ws.settings.seed + s) for s in ws.seeds)}; on the {len(ws.test)} "
            f"test images: inactive = |z| ≤ {ws.threshold:g}, per seed, then the seed mean ± "
            f"the half-width of its {common.CONFIDENCE:.0%} interval: *met* when the whole "
            f"interval is at least {INACTIVE_TARGET:g}, *missed* when the mean is below, "
            "*undecided* otherwise; mean ± sd over seeds for the rest.")
    table = common.md_table(["epochs", "run", "inactive per seed",
                             f"inactive ≥ {INACTIVE_TARGET:g}: seed mean ± half-width",
                             "active coordinates", "test MSE", "zeroed MSE"], rows)
    return common.Section(NAME, TITLE, [note, table], [], {"long_runs": entries})


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
