"""Every analysis, on one set of models trained once: writes ``OUT/report.md`` (every table and
figure, and the seed-level verdicts of the sparse recipe's targets) and ``OUT/results.json``
(the numbers, for machines).

    # 3 seeds of the five main models, 10 epochs, two trained at a time: 13.6 minutes on an
    # idle 2-core machine (measured; --sweeps adds the one-seed extras, ~15 minutes more)
    python analyses/run_all.py --data mnist5k --out runs/analysis --quick
    # the full mode, the command for a GPU (or a long CPU run): 5 seeds, the authors' 100
    # epochs (the package's default config has 20), the sweeps, variant priors and transfer
    # runs included; on 2 CPU cores about 3 hours for mnist5k (estimated; not measured on a GPU)
    python analyses/run_all.py --data mnist5k --out runs/full --device cuda
    # the quick run with the sparse model's learned-scale twin compared with it over the seeds
    python analyses/run_all.py --data mnist5k --out runs/analysis --quick --learned-scale

The main models' missing seeds are trained first, ``--jobs`` at a time (default 2 on CPU, 1 on
CUDA; :func:`common.train_core_models`); the scripts then load the finished runs. ``--sweeps``
(always on in the full mode) adds the slab-weight sweep, the sparsity frontier beyond the main
models, the variant priors and the transfer runs, one seed each; without it the report says in
one line what was skipped, their ``meta`` entries are empty and the transfer targets read "not
run (--sweeps)".
``--bayes-denoise`` (always on in the full mode) adds the labelled Bayes denoising variant
(``bayes_denoise.py``: the tempered exact sampler on 200 test images at σ 0.5 and 0.7 for the
sparse and dense ABP models, about 2.5 minutes per model, seed and noise level on one CPU
thread: 45 minutes for 3 seeds); its fields (``bayes_denoise_accuracy``, ``_psnr``, ``_ssim``,
``_seconds_per_image``, ``_convergence``, ``_authors_protocol``) join the models' entries, its
verdicts and settings ``meta.bayes_denoise``; without it the report says so in one line.

``results.json`` has one entry per model key (``sparse``, ``dense_abp``, ``dense_matched``,
``beta_vae``, ``vsc``, and ``noisy_input`` for the floor) with ``test_mse``, ``zeroed_mse``,
``inactive_fraction`` (|z| ≤ 0.2), ``mean_active``, ``denoise_accuracy`` (authors' protocol)
and ``denoise_accuracy_clipped`` (noise σ as text → mean accuracy), ``sample_fid``,
``probe_accuracy`` (label count as text → accuracy) and ``class_jaccard`` — each the mean over
the training seeds — with its sd over seeds (``*_sd``) and paired comparison against the sparse
model on the same images (``*_comparison``) where defined, ``latent_dim`` (the first seed's),
and ``seed_values``: figure name → the list over seeds (index = seed index, the same nesting as
the figure: ``denoise_accuracy`` → ``{"0.5": [...], ...}``; the floor has one value). The key
``verdicts`` holds the headline comparisons from seed-level paired differences
(:func:`common.seed_verdict`: ``mean_difference``, oriented so that positive = sparse better,
``interval`` [lo, hi] 95 % Student t over seeds, ``n_seeds``, ``margin``, ``verdict``):
``denoise_accuracy`` and ``denoise_accuracy_clipped`` → σ → rival → verdict, ``zeroed_mse`` →
``dense_abp`` (against 2 × its test MSE), ``sample_fid`` → ``dense_abp``, and the thresholds
``inactive_fraction`` (≥ 0.85) and ``class_jaccard`` (< 0.3) (:func:`common.threshold_verdict`).
The key ``meta`` holds the settings (``matched_latent_dims``: the matched budget per seed;
``sweeps``), ``skipped`` (the sections left out without ``--sweeps``), the seeds, the
baselines' training settings, the models (``trained_by``: ``pool``, ``main process`` or
``null`` when reused), the sweep, frontier, variant and transfer models (empty when skipped),
the reference MSEs and FIDs, the targets and the timings. Numbers that are not defined for a
model are ``null``.

``--long-runs`` (always in the full mode) also trains the sparse model for 60 and 100 epochs
(each its own run, the annealing sized to it) on the main models' seeds, side by side with
them (``long_runs.py``: with ``--quick`` 6 models of 2.5–4.5 minutes, about 8 minutes more on 2
cores, measured); its key ``long_runs`` (epochs as text → ``seed_values``, the seed means of
``inactive_fraction``, ``mean_active``, ``test_mse``, ``zeroed_mse`` with ``*_sd``, and
``verdict``: :func:`common.threshold_verdict` against 0.85) adds a target row per length;
without it those rows read "not run (--long-runs)" and the key is empty.

With ``--config FILE`` (a partial training config, TOML or JSON) every model built from the
base config is trained with the file's settings over the package's default: the recipe under
test (issue 22, item 4). What a setting does not touch is reused from ``--runs`` (the β-VAE
and VSC ignore the prior and Langevin sections, dense ABP the prior's): a model the analyses
trained records its request and is reused only for the same one. ``meta.settings`` records the
file (``config``) and its mapping (``recipe``) and the report names it.

With ``--learned-scale`` the sparse model with learned slab weights and scales
(``sparse_learned_scale``) is trained on the main models' seeds with them, and the key
``learned_scale`` holds ``learned_scale.py``'s comparison: ``models`` → ``sparse`` /
``sparse_learned_scale`` → ``sample_fid``, ``zeroed_mse``, ``test_mse``, ``train_active``,
``prior_active`` (mean active coordinates of the training codes and of prior draws),
``slab_scale``, ``slab_weight`` (the learned prior's means), each a seed mean with ``*_sd`` and
``seed_values``; ``verdicts`` → ``sample_fid``, ``zeroed_mse`` (:func:`common.seed_verdict`,
positive = the learned scale better; margins 5 % and 10 %) and ``default`` (the issue's rule:
``make it the default`` or ``keep the annealed default``). Without the flag it is empty.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import bayes_denoise
import classify_codes
import denoise_classify
import denoise_quality
import explainability
import learned_scale
import long_runs
import reconstruction_sparsity
import sample_quality
import transfer
import variant_priors

SCRIPTS = (reconstruction_sparsity, denoise_classify, denoise_quality, bayes_denoise,
           classify_codes, sample_quality, explainability, variant_priors, transfer,
           learned_scale, long_runs)
SWEEP_SCRIPTS = (variant_priors, transfer)  # only with --sweeps (or in the full mode)
LEARNED_SCALE_SCRIPTS = (learned_scale,)  # only with --learned-scale
LONG_RUN_SCRIPTS = (long_runs,)  # only with --long-runs (or in the full mode)
LONG_SKIP = "not run (--long-runs)"
# only with --bayes-denoise (or in the full mode): the tempered sampler on 200 test images,
# about 2.5 minutes per model, seed and noise level on CPU
BAYES_SCRIPTS = (bayes_denoise,)
BAYES_SKIP_LINE = ("Not run: the Bayes denoising variant (tempered exact sampler; add "
                   "`--bayes-denoise`, or run the full mode).")
RESULT_KEYS = common.MODEL_KEYS + ("noisy_input",)
TARGET_SIGMAS = ("0.5", "0.7")
INACTIVE_TARGET, JACCARD_TARGET, MSE_RATIO_TARGET = 0.85, 0.3, 2.0
# the headline accuracy comparisons: (field, rivals of the sparse model)
ACCURACY_RIVALS = (("denoise_accuracy", ("dense_abp", "dense_matched", "beta_vae", "vsc")),
                   ("denoise_accuracy_clipped", ("noisy_input", "dense_abp")))
SKIPPED = ("the slab-weight sweep and the sparsity frontier beyond the main models",
           "the variant priors", "the transfer runs")
SKIP_LINE = ("Not run (one seed each; add `--sweeps`, or run the full mode): "
             + ", ".join(SKIPPED) + ".")


def scripts_for(ws):
    """The scripts this run runs: :data:`SCRIPTS`, without :data:`SWEEP_SCRIPTS` unless the
    sweeps run, without :data:`BAYES_SCRIPTS` unless the Bayes denoising variant does
    (:attr:`common.Settings.run_bayes_denoise`) and without :data:`LEARNED_SCALE_SCRIPTS`
    unless ``--learned-scale``, without :data:`LONG_RUN_SCRIPTS` unless the longer runs are
    trained (:attr:`common.Settings.run_long_runs`)."""
    return tuple(s for s in SCRIPTS if (ws.sweeps or s not in SWEEP_SCRIPTS) and
                 (ws.settings.run_bayes_denoise or s not in BAYES_SCRIPTS) and
                 (ws.settings.learned_scale or s not in LEARNED_SCALE_SCRIPTS) and
                 (ws.settings.run_long_runs or s not in LONG_RUN_SCRIPTS))


def run(ws):
    tick = time.perf_counter()
    sections, merged = [], {}
    common.train_core_models(ws)
    for script in scripts_for(ws):
        start = time.perf_counter()
        ws.log(f"running {script.NAME}")
        section = script.run(ws)
        ws.timings[f"script {script.NAME}"] = time.perf_counter() - start
        ws.write_text(f"{script.NAME}.md", section.markdown(level=1))
        ws.write_json(f"{script.NAME}.json", section.results)
        sections.append(section)
        common.merge(merged, section.results)
    ws.timings["total"] = time.perf_counter() - tick
    results = {key: merged.get(key, {}) for key in RESULT_KEYS}
    results["verdicts"] = verdicts(results)
    results["learned_scale"] = merged.get("learned_scale", {})
    results["long_runs"] = merged.get("long_runs", {})
    checks = targets(results, merged.get("transfer"), threshold=ws.threshold,
                     sweeps=ws.sweeps, long=results["long_runs"] or None)
    results["meta"] = {
        "settings": {"data": ws.settings.data, "mode": ws.settings.mode,
                     "seed": ws.settings.seed, "seeds": [ws.settings.seed + s for s in ws.seeds],
                     "device": str(ws.device), "train_images": len(ws.train),
                     "test_images": len(ws.test), "threshold": ws.threshold,
                     "noise_levels": list(common.NOISE_LEVELS), "noise_repeats": ws.repeats,
                     "noise_clipped": {"denoise_accuracy": False,
                                       "denoise_accuracy_clipped": True},
                     "matched_latent_dim": ws.matched_latent_dim(0),
                     "matched_latent_dims": ws.matched_latent_dims(),
                     "sweeps": ws.sweeps, "jobs": ws.jobs,
                     "learned_scale": ws.settings.learned_scale,
                     "bayes_denoise": ws.settings.run_bayes_denoise,
                     "long_runs": ws.settings.run_long_runs,
                     "config": ws.settings.config, "recipe": ws.settings.recipe},
        "skipped": [] if ws.sweeps else list(SKIPPED),
        "baselines": baseline_settings(ws),
        "models": {ws.folder_name(key, seed): {
            "key": key, "seed": m.config.seed, "folder": m.folder,
            "latent_dim": m.config.network.latent_dim, "epochs": m.config.optim.epochs,
            "trained_seconds": m.trained_seconds, "trained_by": m.trained_by,
            "early_stopping": m.extra.get("early_stopping")}
            for (key, seed), m in ws.loaded_models().items()},
        "sweep": merged.get("sweep", {}),
        "variants": merged.get("variants", {}),
        "transfer": merged.get("transfer", {}),
        "frontier": merged.get("frontier", {}),
        "bayes_denoise": merged.get("bayes_denoise", {}),
        "reference_mse": merged.get("reference_mse", {}),
        "fid_reference": merged.get("fid_reference", {}),
        "fid_feature_accuracy": merged.get("fid_feature_accuracy"),
        "targets": checks,
        "timings_seconds": dict(ws.timings),
    }
    ws.write_json("results.json", results)
    ws.write_text("report.md", report(ws, sections, results))
    return results


def baseline_settings(ws):
    """How the β-VAE and VSC were trained (the same for every seed)."""
    out = {}
    for kind in common.BASELINE_KINDS:
        config, stopping, options = ws.baseline_request(kind)
        out[kind] = {"optimizer": "Adam", "lr": config.optim.lr,
                     "betas": [config.optim.beta1, config.optim.beta2],
                     "batch_size": config.optim.batch_size, "min_epochs": config.optim.epochs,
                     "early_stopping": stopping.to_dict(), "options": options}
    return out


def report(ws, sections, results):
    s = ws.settings
    seeds = results["meta"]["settings"]["seeds"]
    dims = results["meta"]["settings"]["matched_latent_dims"]
    lines = ["# Sparse generator against baselines: the paper's experiments", "",
             f"Data `{s.data}` ({len(ws.train)} training, {len(ws.test)} test images), mode "
             f"`{s.mode}`, training seeds {', '.join(map(str, seeds))} for the main models "
             f"(one seed for the sweep and frontier models), device `{ws.device}`. Produced by "
             "`analyses/run_all.py`; the numbers are also in `results.json`.", ""]
    if s.recipe is not None:
        lines += [f"Recipe under test (`--config {s.config}`, over the package's default for "
                  f"every model built from it): `{json.dumps(s.recipe, sort_keys=True)}`.", ""]
    if results["meta"]["skipped"]:
        lines += [SKIP_LINE, ""]
    if not ws.settings.run_bayes_denoise:
        lines += [BAYES_SKIP_LINE, ""]
    lines += ["## Targets (issue 15: a sparse recipe that wins)", "",
              targets_table(results["meta"]["targets"]), "",
              common.VERDICT_RULE + " A comparison target is *met* when the sparse model wins "
              "or is not worse against every rival it names. The matched budget d is fixed "
              "per seed from that seed's sparse training codes: d = "
              f"{', '.join(map(str, dims))}. The transfer targets have one seed each.", "",
              "## Models", ""]
    rows = []
    for (key, seed), m in ws.loaded_models().items():
        trained = "reused" if m.trained_seconds is None else f"{m.trained_seconds:.0f} s" + (
            " (side by side)" if m.trained_by == "pool" else "")
        stopped = m.extra.get("early_stopping")
        epochs = str(m.config.optim.epochs) + (
            f" (early stopping, min {stopped['min_epochs']}, cap {stopped['max_epochs']})"
            if stopped else "")
        rows.append([f"`{ws.folder_name(key, seed)}`", common.label(key), str(m.config.seed),
                     str(m.config.network.latent_dim), epochs, f"{m.config.optim.lr:g}",
                     trained])
    lines += [common.md_table(["run", "model", "seed", "d", "epochs", "lr", "training"], rows),
              "", baseline_note(results["meta"]["baselines"]), ""]
    for section in sections:
        lines += [section.markdown(level=2), ""]
    timing = [[name, f"{seconds:.0f}"] for name, seconds in ws.timings.items()
              if seconds is not None]
    lines += ["## Timings", "", "Wall-clock seconds; a script's time includes the training of "
              "the models it was first to ask for; the main models are trained side by side "
              "before the scripts run.", "",
              common.md_table(["stage", "seconds"], timing), ""]
    return "\n".join(lines)


def baseline_note(settings):
    vae, vsc = settings["beta_vae"], settings["vsc"]
    stop = vae["early_stopping"]
    return (f"Baselines, with their own recommended training: Adam, lr {vae['lr']:g}, betas "
            f"({vae['betas'][0]:g}, {vae['betas'][1]:g}), batch {vae['batch_size']}; as many "
            f"epochs as the ELBO on a validation split ({100 * stop['validation_fraction']:.0f}"
            f" % of the training images, held out) keeps improving — at least "
            f"{vae['min_epochs']} (the ABP models' count), at most {stop['max_epochs']} — with "
            f"the learning rate × {stop['lr_drop']:g} at the first plateau ({stop['patience']} "
            f"epochs without improvement) and a stop at the second. β-VAE: β = "
            f"{vae['options']['beta']:g}. VSC (Tonolini et al. 2019): α = "
            f"{vsc['options']['alpha']:g}, c warmed up {vsc['options']['c_start']:g} → "
            f"{vsc['options']['c_end']:g} over the first {vsc['min_epochs']} epochs, λ warm-up "
            "of the slab over their first 10 %. Dense ABP: the sparse model's settings with "
            "the N(0, 1) prior.")


def _seed_values(results, key, field, sub=None):
    """The per-seed list of ``results[key]["seed_values"][field]`` (``[sub]``), or None."""
    values = ((results.get(key) or {}).get("seed_values") or {}).get(field)
    if sub is not None and values is not None:
        values = values.get(sub)
    return values


def zeroed_mse_ratios(results):
    """Per seed, the sparse model's zeroed test MSE over dense ABP's test MSE (the seeds with
    both figures)."""
    return [z / t for z, t in zip(_seed_values(results, "sparse", "zeroed_mse") or [],
                                  _seed_values(results, "dense_abp", "test_mse") or [])
            if z is not None and t]


def _compare(own, theirs, **rule):
    """:func:`common.seed_verdict`, or a *not measured* entry when either side is missing."""
    if own is None or theirs is None:
        return {"mean_difference": None, "interval": None, "n_seeds": 0, "margin": None,
                "verdict": common.NOT_MEASURED}
    return common.seed_verdict(own, theirs, **rule)


def verdicts(results):
    """The headline comparisons of the sparse model from the models' ``seed_values``
    (:data:`ACCURACY_RIVALS` at σ 0.5 and 0.7 with the accuracy margin; the zeroed MSE against
    2 × dense ABP's test MSE and the FID against dense ABP's, lower is better, with the
    relative margin; the inactive fraction and the class Jaccard against their thresholds):
    ``{field: ...}`` as ``results.json``'s ``verdicts`` (see the module docstring)."""
    out = {}
    for field, rivals in ACCURACY_RIVALS:
        for sigma in TARGET_SIGMAS:
            own = _seed_values(results, "sparse", field, sigma)
            out.setdefault(field, {})[sigma] = {
                rival: _compare(own, _seed_values(results, rival, field, sigma),
                                margin=common.ACCURACY_MARGIN) for rival in rivals}
    dense = _seed_values(results, "dense_abp", "test_mse")
    out["zeroed_mse"] = {"dense_abp": _compare(
        _seed_values(results, "sparse", "zeroed_mse"),
        None if dense is None else [None if v is None else MSE_RATIO_TARGET * v for v in dense],
        higher_is_better=False, relative_margin=common.RELATIVE_MARGIN)}
    out["sample_fid"] = {"dense_abp": _compare(
        _seed_values(results, "sparse", "sample_fid"),
        _seed_values(results, "dense_abp", "sample_fid"),
        higher_is_better=False, relative_margin=common.RELATIVE_MARGIN)}
    for field, bound, at_least in (("inactive_fraction", INACTIVE_TARGET, True),
                                   ("class_jaccard", JACCARD_TARGET, False)):
        out[field] = common.threshold_verdict(
            _seed_values(results, "sparse", field) or [], bound, at_least=at_least)
    return out


POSITIVE = ("wins", "not worse", "met")


def _overall(rivals):
    """A target's verdict from its comparisons' (``{name: verdict dict}``): ``(text, met)``."""
    found = [v["verdict"] for v in rivals.values()]
    if all(v in POSITIVE for v in found):
        return "met", True
    if any(v in ("loses", "missed") for v in found):
        return "missed", False
    if any(v == "undecided" for v in found):
        return "undecided", None
    return (common.ONE_SEED if common.ONE_SEED in found else common.NOT_MEASURED), None


def targets(results, transferred=None, *, threshold=common.ACTIVE_THRESHOLD, sweeps=True,
            long=None):
    """Issue 15's targets for the sparse model from the seed-level verdicts (:func:`verdicts`
    of ``results``): ``[{target, measured, verdict, met, rivals}]``, where ``measured`` holds
    the seed means, ``rivals`` ``{rival (or "threshold"): verdict dict}``, ``verdict`` the
    target's (*met* when every comparison wins or is not worse / the threshold is met) and
    ``met`` True / False / None (undecided, one seed, not measured); ``transferred`` adds one
    target per data set of ``transfer.py`` (one seed: ``met`` as measured), or with
    ``sweeps`` off one "not run (--sweeps)" row each; ``long`` (``long_runs.py``'s
    ``{epochs: entry}``) the inactive fraction of the longer runs, one row per length (without
    it, one :data:`LONG_SKIP` row per :data:`common.LONG_EPOCHS`); ``threshold``: the
    analysis's (|z| above it is active)."""
    sparse, out = results["sparse"], []
    found = results.get("verdicts") or verdicts(results)

    def add(target, measured, rivals):
        verdict, met = _overall(rivals)
        out.append({"target": target, "measured": measured, "verdict": verdict, "met": met,
                    "rivals": rivals})

    v = found["inactive_fraction"]
    add(f"inactive fraction (|z| ≤ {threshold:g}) ≥ {INACTIVE_TARGET:g}",
        common.fmt(sparse.get("inactive_fraction"), 3), {"threshold": v})
    lengths = list(long) if long else [str(e) for e in common.LONG_EPOCHS]
    for epochs in lengths:
        target = f"inactive fraction (|z| ≤ {threshold:g}) ≥ {INACTIVE_TARGET:g} after " \
            f"{epochs} epochs (its own run)"
        if long is None:
            out.append({"target": target, "measured": LONG_SKIP, "verdict": LONG_SKIP,
                        "met": None, "rivals": None})
        else:
            add(target, common.fmt(long[epochs]["inactive_fraction"], 3),
                {"threshold": long[epochs]["verdict"]})
    zeroed, dense = sparse.get("zeroed_mse"), results["dense_abp"].get("test_mse")
    ratio, half, n = common.mean_interval(zeroed_mse_ratios(results))
    ratio_text = "—" if ratio is None else f"{ratio:.2f}" + (
        "" if half is None else f" ± {half:.2f}") + "×"
    d = results["dense_abp"].get("latent_dim")
    add(f"zeroed test MSE ≤ {MSE_RATIO_TARGET:g} × dense ABP (d = {d}) test MSE",
        f"{common.fmt(zeroed, 4)} vs {common.fmt(dense, 4)} ({ratio_text})",
        {f"{MSE_RATIO_TARGET:g}x_dense_abp_test_mse": found["zeroed_mse"]["dense_abp"]})
    names = {"denoise_accuracy": "authors' protocol: ≥ every baseline",
             "denoise_accuracy_clipped": "clipped: ≥ the noisy-input floor and ≥ dense ABP"}
    for field, rivals in ACCURACY_RIVALS:
        for sigma in TARGET_SIGMAS:
            own = sparse.get(field, {}).get(sigma)
            means = {r: results[r].get(field, {}).get(sigma) for r in rivals}
            best = max(means, key=lambda r: -1 if means[r] is None else means[r])
            add(f"denoise accuracy at σ = {sigma}, {names[field]}",
                f"{common.fmt_mean_sd(own, None, 100)} vs "
                f"{common.fmt_mean_sd(means[best], None, 100)} ({common.label(best)})",
                found[field][sigma])
    own, dense = sparse.get("sample_fid"), results["dense_abp"].get("sample_fid")
    add("sample FID ≤ dense ABP's", f"{common.fmt(own, 2)} vs {common.fmt(dense, 2)}",
        dict(found["sample_fid"]))
    add(f"mean class Jaccard < {JACCARD_TARGET:g}", common.fmt(sparse.get("class_jaccard"), 3),
        {"threshold": found["class_jaccard"]})
    if not sweeps:
        for name, spec, _, _ in transfer.DATASETS:
            out.append({"target": f"transfer {name} ({spec}): inactive ≥ "
                                  f"{transfer.INACTIVE_TARGET:.2f}, zeroed MSE ≤ dense ABP "
                                  "with as many numbers", "measured": "not run (--sweeps)",
                        "verdict": "not run (--sweeps)", "met": None, "rivals": None})
    for entry in (transferred or {}).values():
        h, w = entry["image_size"]
        d = entry["matched_latent_dim"]
        own, dense = entry["models"]["sparse"], entry["models"][f"dense_d{d}"]
        met = entry["target_met"]
        out.append({"target": f"{entry['data']} {h}×{w}: inactive ≥ "
                              f"{transfer.INACTIVE_TARGET:.2f}, zeroed MSE ≤ dense ABP with as "
                              f"many numbers (d = {d})",
                    "measured": f"{common.fmt(own['inactive_fraction'], 3)}; "
                                f"{common.fmt(own['zeroed_mse'], 4)} vs "
                                f"{common.fmt(dense['test_mse'], 4)}",
                    "verdict": f"{'met' if met else 'missed'} (one seed)", "met": met,
                    "rivals": None})
    return out


def _shown(target):
    """``(scale, digits)`` of a target's figures in the table."""
    if "MSE" in target:
        return 1.0, 4
    if "FID" in target:
        return 1.0, 2
    if "Jaccard" in target or "inactive fraction" in target:
        return 1.0, 3
    return 100.0, 1  # accuracies, in points


def targets_table(checks):
    """The targets as a Markdown table: target, seed means, each comparison as ``seed mean ±
    half-width (n seeds): verdict`` (a difference oriented so that positive = sparse better;
    a threshold's figure itself), the target's verdict."""
    rows = []
    for c in checks:
        scale, digits = _shown(c["target"])
        parts = []
        for rival, v in (c["rivals"] or {}).items():
            if rival == "threshold":
                parts.append(common.fmt_verdict(v, scale, digits, key="mean", signed=False))
            else:
                name = "2 × dense ABP" if rival.endswith("dense_abp_test_mse") else \
                    common.label(rival)
                parts.append(f"{name}: {common.fmt_verdict(v, scale, digits)}")
        rows.append([c["target"], c["measured"], "; ".join(parts) or "—", c["verdict"]])
    return common.md_table(["target", "seed means", "sparse vs rival: seed mean ± half-width "
                            "(n seeds): verdict", "verdict"], rows)


def main(argv=None):
    return common.main(__file__, _run_and_summarise, __doc__, argv, save=False, jobs=True)


def _run_and_summarise(ws):
    results = run(ws)
    keys = ("test_mse", "zeroed_mse", "inactive_fraction")
    rows = [[key] + [common.fmt(results[key].get(k), 4) for k in keys] +
            [common.fmt(results[key].get("denoise_accuracy", {}).get("0.5"), 3),
             common.fmt(results[key].get("denoise_accuracy_clipped", {}).get("0.5"), 3),
             common.fmt(results[key].get("sample_fid"), 2),
             common.fmt((results[key].get("probe_accuracy") or {}).get("all"), 3)]
            for key in RESULT_KEYS]
    table = common.md_table(["model", *keys, "denoise σ=0.5", "clipped σ=0.5", "FID",
                             "probe (all)"], rows)
    return common.Section("run_all", "Summary",
                          [table, targets_table(results["meta"]["targets"]),
                           f"report: {os.path.join(ws.out, 'report.md')}"], [], results)


if __name__ == "__main__":
    sys.exit(main())
