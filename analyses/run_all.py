"""Every analysis, on one set of models trained once: writes ``OUT/report.md`` (every table
and figure) and ``OUT/results.json`` (the numbers, for machines).

    # about 15 minutes on 2 CPU cores, all training included
    python analyses/run_all.py --data mnist5k --out runs/analysis --quick
    # the configs' full length (20 epochs), e.g. full MNIST on one GPU
    python analyses/run_all.py --data idx:data/mnist --out runs/mnist

``results.json`` has one entry per model key (``sparse``, ``dense_abp``, ``dense_matched``,
``beta_vae``, ``vsc``) with ``test_mse``, ``zeroed_mse``, ``inactive_fraction`` (|z| ≤ 0.2),
``denoise_accuracy`` (noise σ as text → mean accuracy), ``probe_accuracy`` (label count as
text → accuracy) and more; ``sparse`` also has ``class_jaccard``. The key ``meta`` holds the
settings, the slab-weight sweep, the reference MSEs, the floor rows and the timings. Numbers
that are not defined for a model are ``null``.
"""

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import classify_codes  # noqa: E402
import denoise_classify  # noqa: E402
import denoise_quality  # noqa: E402
import explainability  # noqa: E402
import reconstruction_sparsity  # noqa: E402

SCRIPTS = (reconstruction_sparsity, denoise_classify, denoise_quality, classify_codes,
           explainability)


def run(ws):
    tick = time.perf_counter()
    sections, merged = [], {}
    for script in SCRIPTS:
        start = time.perf_counter()
        ws.log(f"running {script.NAME}")
        section = script.run(ws)
        ws.timings[f"script {script.NAME}"] = time.perf_counter() - start
        ws.write_text(f"{script.NAME}.md", section.markdown(level=1))
        ws.write_json(f"{script.NAME}.json", section.results)
        sections.append(section)
        common.merge(merged, section.results)
    ws.timings["total"] = time.perf_counter() - tick
    by_name = {section.name: section for section in sections}
    results = {key: merged.get(key, {}) for key in common.MODEL_KEYS}
    results["meta"] = {
        "settings": {"data": ws.settings.data, "mode": ws.settings.mode,
                     "seed": ws.settings.seed, "device": str(ws.device),
                     "train_images": len(ws.train), "test_images": len(ws.test),
                     "threshold": ws.threshold, "noise_repeats": ws.repeats},
        "models": {key: {"folder": m.folder, "latent_dim": m.config.network.latent_dim,
                         "epochs": m.config.optim.epochs, "options": ws.baseline_options(key),
                         "trained_seconds": m.trained_seconds}
                   for key, m in ws.loaded_models().items()},
        "sweep": {key: by_name[reconstruction_sparsity.NAME].results[key]
                  for _, key in ws.sweep_weights()},
        "reference_mse": merged.get("reference_mse", {}),
        "noisy_input": merged.get("noisy_input", {}),
        "timings_seconds": dict(ws.timings),
    }
    ws.write_json("results.json", results)
    ws.write_text("report.md", report(ws, sections, results))
    return results


def report(ws, sections, results):
    s = ws.settings
    lines = ["# Sparse generator against baselines: the paper's experiments", "",
             f"Data `{s.data}` ({len(ws.train)} training, {len(ws.test)} test images), mode "
             f"`{s.mode}`, seed {s.seed}, device `{ws.device}`. Produced by "
             "`analyses/run_all.py`; the numbers are also in `results.json`.", "",
             "## Models", ""]
    rows = []
    for key, m in ws.loaded_models().items():
        trained = "reused" if m.trained_seconds is None else f"{m.trained_seconds:.0f} s"
        options = ws.baseline_options(key)
        extra = ", ".join(f"{k} = {v}" for k, v in options.items()) or "—"
        rows.append([f"`{key}`", common.label(key), str(m.config.network.latent_dim),
                     str(m.config.optim.epochs), extra, trained,
                     f"`{os.path.relpath(m.folder, ws.out)}`"])
    lines += [common.md_table(["key", "model", "d", "epochs", "options", "training", "folder"],
                              rows), ""]
    lines += ["## Targets (issue 5)", "", targets(results), ""]
    for section in sections:
        lines += [section.markdown(level=2), ""]
    timing = [[name, f"{seconds:.0f}"] for name, seconds in ws.timings.items()]
    lines += ["## Timings", "", "Wall-clock seconds; a script's time includes the training of "
              "the models it was first to ask for.", "",
              common.md_table(["stage", "seconds"], timing), ""]
    return "\n".join(lines)


def targets(results):
    """The issue's goals for the sparse model, each with the measured values and a verdict."""
    sparse = results["sparse"]
    baselines = [k for k in common.MODEL_KEYS if k != "sparse"]

    def verdict(ok):
        return "—" if ok is None else "met" if ok else "missed"

    def known(*values):
        return all(v is not None and math.isfinite(v) for v in values)

    rows = []
    inactive = sparse.get("inactive_fraction")
    rows.append(["sparse inactive fraction ≥ 0.80", common.fmt(inactive, 3),
                 verdict(inactive >= 0.8 if known(inactive) else None)])
    zeroed, matched = sparse.get("zeroed_mse"), results["dense_matched"].get("test_mse")
    rows.append(["sparse zeroed MSE ≤ dense matched-budget MSE",
                 f"{common.fmt(zeroed, 4)} vs {common.fmt(matched, 4)}",
                 verdict(zeroed <= matched if known(zeroed, matched) else None)])
    for sigma in ("0.5", "0.7"):
        own = sparse.get("denoise_accuracy", {}).get(sigma)
        others = {k: results[k].get("denoise_accuracy", {}).get(sigma) for k in baselines}
        best = max(others, key=lambda k: -1 if others[k] is None else others[k])
        rows.append([f"sparse denoise accuracy at σ = {sigma} ≥ every baseline's",
                     f"{common.fmt(own, 3)} vs {common.fmt(others[best], 3)} ({best})",
                     verdict(own >= others[best] if known(own, others[best]) else None)])
    jac = sparse.get("class_jaccard")
    rows.append(["sparse mean per-class Jaccard < 0.5", common.fmt(jac, 3),
                 verdict(jac < 0.5) if known(jac) else "— (no class has an active set)"])
    return common.md_table(["target", "measured", "verdict"], rows)


def main(argv=None):
    return common.main(__file__, _run_and_summarise, __doc__, argv, save=False)


def _run_and_summarise(ws):
    results = run(ws)
    keys = ("test_mse", "zeroed_mse", "inactive_fraction")
    rows = [[key] + [common.fmt(results[key].get(k), 4) for k in keys] +
            [common.fmt(results[key].get("denoise_accuracy", {}).get("0.5"), 3),
             common.fmt(results[key].get("probe_accuracy", {}).get("all"), 3)]
            for key in common.MODEL_KEYS]
    table = common.md_table(["model", *keys, "denoise acc. σ=0.5", "probe acc. (all)"], rows)
    jaccard = common.fmt(results["sparse"].get("class_jaccard"), 3)
    return common.Section("run_all", "Summary", [table, f"sparse class Jaccard: {jaccard}",
                                                 f"report: {os.path.join(ws.out, 'report.md')}"],
                          [], results)


if __name__ == "__main__":
    sys.exit(main())
