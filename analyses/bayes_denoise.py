"""Bayes denoising, a labelled variant beside the authors' protocol (which stays the headline,
``denoise_classify.py``): each ABP model's likelihood scale becomes ``sqrt(s^2 + sigma^2)`` for
noise sigma, the tempered exact sampler (replica exchange of MALA from prior draws) draws the
code's posterior for every noisy image, every draw is decoded, the pixel classifier's class
probabilities are averaged over the draws and the posterior-mean image is scored by PSNR / SSIM
against the clean image (:func:`pyro_sparsegen.evaluation.bayes_denoise`).

On a class-spread subset of the test images (200; 4 in the tests' ``--tiny``) at sigma 0.5 and
0.7, noise not clipped, one noise draw per training seed (the same noisy images for every model
of that seed), for the sparse model and the dense ABP models (``dense_abp``, ``dense_matched``),
over the trained seeds: accuracy, PSNR, SSIM and seconds per image as seed mean ± sd, the
sampler's convergence (worst split R-hat and smallest bulk ESS of an image's log density, the
smallest swap acceptance of the ladders), the authors' protocol on the same images for
reference, and the seed-level paired verdicts of the sparse model against each dense model.

    python analyses/bayes_denoise.py --data mnist5k --out runs/analysis --quick --runs runs/analysis

``run_all.py`` runs it in the full mode or with ``--bayes-denoise``. Writes
``OUT/bayes_denoise.md`` (the tables) and ``.json``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np

import common
from common import ev

NAME = "bayes_denoise"
TITLE = "Bayes denoising (tempered exact sampler; a variant, not the authors' protocol)"
KEYS = ("sparse", "dense_abp", "dense_matched")
SIGMAS = (0.5, 0.7)
# (results field, column, scale, digits, verdict rule)
FIGURES = (("bayes_denoise_accuracy", "accuracy (%)", 100.0, 1,
            {"margin": common.ACCURACY_MARGIN}),
           ("bayes_denoise_psnr", "PSNR (dB)", 1.0, 2,
            {"relative_margin": common.RELATIVE_MARGIN}),
           ("bayes_denoise_ssim", "SSIM", 1.0, 3, {"relative_margin": common.RELATIVE_MARGIN}))


def subset(ws):
    """The class-spread test subset of the mode's size."""
    return ws.test.subset(ws.spread(ws.test, ws.mode["bayes_denoise"]["images"]))


def noisy_images(ws, seed, sigma):
    """``(clean, noisy)`` of the subset: one noise draw per seed index (its repeat), shared by
    every model of that seed."""
    clean = subset(ws).images().numpy()
    return clean, ev.add_noise(clean, sigma, seed=ws.settings.seed, repeat=seed)


def measure(ws, key, seed, sigma):
    """One model, seed and noise level: the Bayes denoiser's figures, its convergence and the
    authors' protocol on the same noisy images (cached)."""
    def compute():
        m = ws.model(key, seed)
        test = subset(ws)
        clean, noisy = noisy_images(ws, seed, sigma)
        classifier = ws.pixel_classifier()
        sampler = {k: v for k, v in ws.mode["bayes_denoise"].items() if k != "images"}
        run_seed = int(np.random.SeedSequence([ws.settings.seed, seed, round(1000 * sigma)])
                       .generate_state(1)[0])
        result = ev.bayes_denoise(m.model, noisy, sigma, classifier=classifier, seed=run_seed,
                                  device=ws.device, **sampler)
        psnr, ssim = ev.image_quality(clean, result.mean_image)
        authors = ev.reconstruct(m.model, m.encoder, noisy, batch_size=common.EVAL_BATCH,
                                 device=ws.device, seed=run_seed)
        a_psnr, a_ssim = ev.image_quality(clean, authors)
        return {"bayes_denoise_accuracy": float(result.correct(test.labels).mean()),
                "bayes_denoise_psnr": _nanmean(psnr), "bayes_denoise_ssim": _nanmean(ssim),
                "seconds_per_image": result.seconds_per_image, "max_rhat": result.max_rhat,
                "min_ess": result.min_ess,
                "min_swap_accept_prob": float(np.nanmin(result.swap_accept_prob))
                if result.swap_accept_prob.size else None,
                "nonfinite_images": result.nonfinite_images,
                "authors_accuracy": float(classifier.correct(authors, test.labels).mean()),
                "authors_psnr": _nanmean(a_psnr), "authors_ssim": _nanmean(a_ssim)}
    return ws.cached(("bayes denoise", key, seed, sigma), compute, "bayes denoise")


def _nanmean(values):
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _mean_sd(values, scale=1.0, digits=1):
    found = [v for v in values if v is not None and np.isfinite(v)]
    if not found:
        return common.MISSING
    mean, sd = ev.mean_sd(found)
    return common.fmt_mean_sd(mean, sd if len(found) > 1 else None, scale, digits)


def run(ws):
    ws.needs_labels("Bayes denoising")
    seeds = ws.seeds
    settings = ws.mode["bayes_denoise"]
    results, blocks = {}, []
    spread = f"mean ± sd over {len(seeds)} training seeds" if len(seeds) > 1 else \
        "one training seed"
    blocks.append(
        f"A labelled variant, not the authors' protocol (their 30 noise-free Langevin steps "
        f"from zeros stay the headline, 'Denoise, then classify'). On {settings['images']} "
        f"class-spread test images, noise N(0, σ²) not clipped, one noise draw per training "
        f"seed (the same noisy images for every model of that seed): each ABP model's "
        f"likelihood scale becomes √(s² + σ²) (s its own), replica exchange of exact MALA "
        f"(semi-implicit prior step, crossing and pair moves, {settings['levels']} tempering "
        f"levels, {settings['chains']} ladders per image from prior draws, "
        f"{settings['warmup']} warm-up transitions, {settings['draws']} draws every "
        f"{settings['thin']}) samples every image's code; every draw is decoded to g(z); the "
        f"accuracy is that of the pixel classifier's probabilities averaged over the draws "
        f"(the posterior predictive of the label); PSNR / SSIM score the posterior-mean image "
        f"against the clean image; seconds per image: sampling, decoding and classifying, on "
        f"`{ws.device}`. {spread[0].upper() + spread[1:]}. Convergence, never hidden: the "
        f"worst split R-hat and the smallest bulk ESS of an image's log density (over its "
        f"{settings['chains']} chains), the smallest swap acceptance of adjacent levels, "
        f"worst over the seeds; images without a finite draw are counted (and wrong). "
        f"'authors' protocol': the model's own encoder on the same noisy images.")
    for sigma in SIGMAS:
        s = common.sigma_text(sigma)
        header = ["model", "accuracy (%)", "PSNR (dB)", "SSIM", "s / image", "max R-hat",
                  "min ESS", "min swap acc.", "non-finite", "authors' protocol: acc. (%) / "
                  "PSNR / SSIM"]
        rows = []
        for key in KEYS:
            per = [measure(ws, key, seed, sigma) for seed in ws.seeds_of(key)]
            entry = results.setdefault(key, {})
            for field, *_ in FIGURES:
                values = [p[field] for p in per]
                entry.setdefault(field, {})[s] = _nanmean(values)
                entry.setdefault("seed_values", {}).setdefault(field, {})[s] = values
            entry.setdefault("bayes_denoise_seconds_per_image", {})[s] = _nanmean(
                [p["seconds_per_image"] for p in per])
            entry.setdefault("bayes_denoise_convergence", {})[s] = {
                "max_rhat": _worst(per, "max_rhat", max), "min_ess": _worst(per, "min_ess", min),
                "min_swap_accept_prob": _worst(per, "min_swap_accept_prob", min),
                "nonfinite_images": sum(p["nonfinite_images"] for p in per)}
            entry.setdefault("bayes_denoise_authors_protocol", {})[s] = {
                name: _nanmean([p[f"authors_{name}"] for p in per])
                for name in ("accuracy", "psnr", "ssim")}
            conv = entry["bayes_denoise_convergence"][s]
            rows.append([common.label(key),
                         _mean_sd([p["bayes_denoise_accuracy"] for p in per], 100, 1),
                         _mean_sd([p["bayes_denoise_psnr"] for p in per], 1, 2),
                         _mean_sd([p["bayes_denoise_ssim"] for p in per], 1, 3),
                         _mean_sd([p["seconds_per_image"] for p in per], 1, 3),
                         common.fmt(conv["max_rhat"], 3), common.fmt(conv["min_ess"], 0),
                         common.fmt(conv["min_swap_accept_prob"], 2),
                         str(conv["nonfinite_images"]),
                         " / ".join([_mean_sd([p["authors_accuracy"] for p in per], 100, 1),
                                     _mean_sd([p["authors_psnr"] for p in per], 1, 2),
                                     _mean_sd([p["authors_ssim"] for p in per], 1, 3)])])
        blocks += [f"**σ = {s}**:", common.md_table(header, rows)]
    verdicts, table = _verdicts(results)
    blocks += ["**Sparse − dense, seed-level paired verdicts** (positive: the sparse model is "
               "better; accuracy in points): " + common.VERDICT_RULE + " Here *not worse* is "
               f"within {100 * common.ACCURACY_MARGIN:g} points for the accuracy and "
               f"{common.RELATIVE_MARGIN:.0%} of the dense model's seed mean for PSNR and "
               "SSIM.", table, _pays(verdicts)]
    results[NAME] = {"verdicts": verdicts, "settings": dict(settings),
                     "sigmas": [common.sigma_text(s) for s in SIGMAS], "models": list(KEYS)}
    return common.Section(NAME, TITLE, blocks, [], results)


def _worst(per, name, fn):
    values = [p[name] for p in per if p[name] is not None and np.isfinite(p[name])]
    return fn(values) if values else None


def _verdicts(results):
    """``{field: {sigma: {rival: seed_verdict}}}`` and their table."""
    out, rows = {}, []
    for field, column, scale, digits, rule in FIGURES:
        for sigma in SIGMAS:
            s = common.sigma_text(sigma)
            own = results["sparse"]["seed_values"][field][s]
            found = {rival: common.seed_verdict(own, results[rival]["seed_values"][field][s],
                                                **rule) for rival in KEYS[1:]}
            out.setdefault(field, {})[s] = found
            rows.append([column, s] + [common.fmt_verdict(found[r], scale, digits)
                                       for r in KEYS[1:]])
    header = ["figure", "σ"] + [f"sparse vs {common.label(r)}" for r in KEYS[1:]]
    return out, common.md_table(header, rows)


def _pays(verdicts):
    """One sentence: where the sparse prior wins against every dense model, with the
    intervals, or that it wins nowhere."""
    names = {field: column for field, column, *_ in FIGURES}
    wins = []
    for field, by_sigma in verdicts.items():
        for s, rivals in by_sigma.items():
            if all(v["verdict"] == "wins" for v in rivals.values()):
                scale, digits = (100.0, 1) if field.endswith("accuracy") else (1.0, 3)
                intervals = "; ".join(
                    f"{common.label(r)} {common.fmt_verdict(v, scale, digits)}"
                    for r, v in rivals.items())
                wins.append(f"{names[field]} at σ = {s} ({intervals})")
    if wins:
        return "**Here the sparse prior pays**, against every dense model: " + \
            "; ".join(wins) + "."
    return ("The sparse prior wins against every dense model on no figure here (see the "
            "verdicts above).")


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
