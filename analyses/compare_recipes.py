"""The recipe search's table: the targets of several ``run_all.py`` outputs side by side.

    # each setting: its own run_all output, its recipe in a --config file
    python analyses/run_all.py --data mnist5k --quick --out runs/steps60 --runs runs/analysis \\
        --config steps60.toml
    python analyses/compare_recipes.py runs/analysis runs/steps60 --out runs/search

reads each folder's ``results.json`` (with ``--long-runs`` it has the longer runs' inactive
fraction; without, those columns read "not measured") and writes ``OUT/recipes.md`` (one row
per run: its recipe, the matched budgets and, for each target of the default recipe, the
seed-level comparison ``mean ± half-width: verdict``, positive = sparse better),
``OUT/recipes.json`` (the same numbers) and ``OUT/recipes.png`` (the comparisons that decide
most targets, as intervals per run). Runs of different data, modes or seeds are refused: their
figures do not compare.
"""

import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import run_all
from pyro_sparsegen import cli, files
from pyro_sparsegen.errors import first_line

RATIO = "ratio"  # the zeroed MSE's column: the per-seed ratio, its verdict the seed verdict's
# (column, where in results.json, scale, digits): the item-4 comparisons
COLUMNS = (
    ("inactive ≥ 0.85", ("verdicts", "inactive_fraction"), 1.0, 3),
    ("inactive ≥ 0.85, 60 epochs", ("long_runs", "60", "verdict"), 1.0, 3),
    ("inactive ≥ 0.85, 100 epochs", ("long_runs", "100", "verdict"), 1.0, 3),
    ("zeroed MSE / dense ABP test MSE ≤ 2", RATIO, 1.0, 2),
    ("σ 0.5 vs matched", ("verdicts", "denoise_accuracy", "0.5", "dense_matched"), 100.0, 1),
    ("σ 0.5 vs dense ABP", ("verdicts", "denoise_accuracy", "0.5", "dense_abp"), 100.0, 1),
    ("σ 0.7 vs matched", ("verdicts", "denoise_accuracy", "0.7", "dense_matched"), 100.0, 1),
    ("σ 0.7 vs dense ABP", ("verdicts", "denoise_accuracy", "0.7", "dense_abp"), 100.0, 1),
    ("FID vs dense ABP", ("verdicts", "sample_fid", "dense_abp"), 1.0, 1),
    ("class Jaccard < 0.3", ("verdicts", "class_jaccard"), 1.0, 3),
)
PLOTTED = (4, 6, 3, 0)  # the panels of the figure: indices into COLUMNS


class CompareError(common.AnalysisError):
    """A run folder that cannot be compared (one line)."""


def read_run(folder):
    """``(name, results)`` of a ``run_all.py`` output folder."""
    path = os.path.join(folder, "results.json")
    try:
        with open(path) as f:
            results = json.load(f)
    except OSError as e:
        raise CompareError(f"{path}: cannot read ({e.strerror}); is {folder} a run_all.py "
                           "output?") from None
    except ValueError as e:
        raise CompareError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(results, dict) or not all(
            isinstance(results.get(k), dict) for k in ("verdicts", "meta")):
        raise CompareError(f"{path}: not a run_all.py results file (no verdicts / meta)")
    return os.path.basename(os.path.normpath(folder)), results


def _lookup(verdicts, path):
    for key in path:
        if not isinstance(verdicts, dict) or key not in verdicts:
            return None
        verdicts = verdicts[key]
    return verdicts


def mse_ratio(results):
    """The sparse model's zeroed test MSE over dense ABP's test MSE, per seed: a threshold
    entry (``mean``, ``interval``, ``n_seeds``, ``threshold`` 2) with the verdict of the
    seed-level comparison against twice the dense MSE (``verdicts.zeroed_mse.dense_abp``)."""
    mean, half, n = common.mean_interval(run_all.zeroed_mse_ratios(results))
    verdict = _lookup(results["verdicts"], ("zeroed_mse", "dense_abp")) or {}
    return {"mean": mean, "interval": None if half is None else [mean - half, mean + half],
            "n_seeds": n, "threshold": run_all.MSE_RATIO_TARGET,
            "verdict": verdict.get("verdict", common.NOT_MEASURED)}


def rows(runs):
    """One dict per run: ``name``, ``recipe`` (the ``--config`` mapping, ``None``: the
    default), ``matched`` (budget per seed), ``seeds``, ``comparisons`` (column → the seed
    verdict dict of ``results.json``, or ``None``) and ``met`` / ``decided`` (targets)."""
    out = []
    for name, results in runs:
        settings = results["meta"].get("settings", {})
        targets = results["meta"].get("targets", [])
        decided = [t for t in targets if t.get("met") is not None]
        out.append({"name": name, "recipe": settings.get("recipe"),
                    "matched": settings.get("matched_latent_dims"),
                    "seeds": settings.get("seeds"),
                    "comparisons": {c[0]: mse_ratio(results) if c[1] == RATIO else
                                    _lookup(results, c[1]) for c in COLUMNS},
                    "met": sum(1 for t in decided if t["met"]), "decided": len(decided)})
    return out


def _recipe_text(recipe):
    """``section.key = value, ...`` of a ``--config`` mapping; ``default`` for none."""
    if not recipe:
        return "default"
    parts = []
    for section, values in sorted(recipe.items()):
        if isinstance(values, dict):
            parts += [f"{section}.{k} = {v}" for k, v in sorted(values.items())]
        else:
            parts.append(f"{section} = {values}")
    return ", ".join(parts)


def _figure_key(v):
    """The key a comparison's figure is under: ``mean`` for a threshold entry, else the
    difference's."""
    return "mean" if v is not None and "threshold" in v else "mean_difference"


def table(found):
    """The Markdown table of :func:`rows`."""
    body = []
    for r in found:
        cells = [f"`{r['name']}`", _recipe_text(r["recipe"]),
                 ", ".join(map(str, r["matched"] or [])) or common.MISSING]
        for column, _, scale, digits in COLUMNS:
            v = r["comparisons"][column]
            key = _figure_key(v)
            cells.append(common.fmt_verdict(v, scale, digits, key=key,
                                            signed=key == "mean_difference"))
        cells.append(f"{r['met']} of {r['decided']}")
        body.append(cells)
    return common.md_table(["run", "recipe", "matched d"] + [c[0] for c in COLUMNS] +
                           ["targets met"], body)


def figure(found, path):
    """Each run's interval on the comparisons that decide most targets (:data:`PLOTTED`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(3.2 * len(PLOTTED),
                                                       1.0 + 0.45 * len(found)), sharey=True)
    for ax, index in zip(axes, PLOTTED):
        column, _, scale, _ = COLUMNS[index]
        for y, r in enumerate(found):
            v = r["comparisons"][column]
            key = _figure_key(v)
            if v is None or v.get(key) is None or not math.isfinite(v[key]):
                continue
            low, high = v["interval"] or (v[key], v[key])
            ax.errorbar(v[key] * scale, y, xerr=[[(v[key] - low) * scale],
                                                  [(high - v[key]) * scale]], fmt="o",
                        color="C2" if v["verdict"] in ("wins", "not worse", "met") else "C3",
                        capsize=3)
        if "threshold" in (found[0]["comparisons"][column] or {}):
            ax.axvline(found[0]["comparisons"][column]["threshold"] * scale, color="k", lw=0.8)
        else:
            ax.axvline(0, color="k", lw=0.8)
            margin = (found[0]["comparisons"][column] or {}).get("margin")
            if margin:
                ax.axvline(-margin * scale, color="k", lw=0.8, ls=":")
        ax.set_title(column, fontsize=9)
    axes[0].set_yticks(range(len(found)), [r["name"] for r in found])
    axes[0].invert_yaxis()
    fig.suptitle("Seed mean and 95 % interval over seeds (accuracy: sparse − rival, points; "
                 "green: on the target's side)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(folders, out):
    """Read ``folders`` (``run_all.py`` outputs), write ``OUT/recipes.{md,json,png}``; returns
    the table."""
    runs = [read_run(f) for f in folders]
    first = runs[0][1]["meta"].get("settings", {})
    for name, results in runs[1:]:
        settings = results["meta"].get("settings", {})
        for key in ("data", "mode", "seeds"):
            if settings.get(key) != first.get(key):
                raise CompareError(f"{name}: {key} {settings.get(key)!r} differs from "
                                   f"{runs[0][0]}'s {first.get(key)!r}: the figures do not "
                                   "compare")
    found = rows(runs)
    files.output_folder(out, error=CompareError)
    text = table(found)
    header = ("# The recipe search\n\nEach row: one `run_all.py` output, its sparse model "
              "against the baselines, seed-level (sparse − rival, mean ± half-width of the "
              f"95 % interval over seeds: verdict; the zeroed MSE as a ratio, its verdict the "
              f"comparison with twice the dense MSE). {common.VERDICT_RULE}"
              "\n\n![recipes](recipes.png)\n\n")
    files.write_text(os.path.join(out, "recipes.md"), header + text + "\n")
    files.write_text(os.path.join(out, "recipes.json"), json.dumps(found, indent=1))
    figure(found, os.path.join(out, "recipes.png"))
    return text


def main(argv=None):
    prog = "compare_recipes.py"
    p = cli.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run_all.py output folders")
    p.add_argument("--out", required=True, help="folder for recipes.md / .json / .png")
    try:
        args = p.parse_args(argv)
        print(compare(args.runs, args.out))
    except cli.UsageError as e:
        sys.stderr.write(f"{prog}: error: {first_line(e)}\n")
        return 2
    except common.USER_ERRORS as e:
        sys.stderr.write(f"{prog}: error: {first_line(e)}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
