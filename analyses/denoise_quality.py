"""Denoising quality: PSNR and SSIM (``skimage.metrics``, data_range 1) of each model's
reconstructions of noisy test images (the authors' protocol: sigma = 0.3, 0.5, 0.7, not
clipped), measured against the **clean** images; the noisy images themselves are the floor.
The authors' code (hanaoli/Sparse-ABP, ``hiabp_sparse.py``, ``test_noise``) passes the noisy
image to ``structural_similarity``, a slip that rewards reproducing the noise; it is not
followed here (:func:`pyro_sparsegen.evaluation.image_quality`).

    python analyses/denoise_quality.py --data mnist5k --out runs/analysis --quick

Writes ``OUT/denoise_quality.md`` (the table), ``.json`` and
``OUT/figures/denoise_examples.png``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np

import common
import pyro_sparsegen as psg

NAME = "denoise_quality"
TITLE = "Denoising quality (PSNR, SSIM against the clean images)"
EXAMPLE_SIGMA = 0.5


def run(ws):
    sigmas = common.NOISE_LEVELS
    header = ["model"] + [f"PSNR σ = {s} (dB)" for s in sigmas] + \
        [f"SSIM σ = {s}" for s in sigmas]
    rows, results = [], {}
    for key in common.MODEL_KEYS + (None,):
        seeds = [0] if key is None else ws.seeds_of(key)
        psnr, ssim = {}, {}
        for s in sigmas:
            psnr[s] = np.concatenate([ws.denoise(key, seed)[s].psnr for seed in seeds])
            ssim[s] = np.concatenate([ws.denoise(key, seed)[s].ssim for seed in seeds])
        rows.append([common.label(key)] +
                    [common.fmt_mean_sd(psnr[s].mean(), psnr[s].std(ddof=1), digits=2)
                     for s in sigmas] +
                    [common.fmt_mean_sd(ssim[s].mean(), ssim[s].std(ddof=1), digits=3)
                     for s in sigmas])
        results[key or "noisy_input"] = {
            "denoise_psnr": {common.sigma_text(s): float(psnr[s].mean()) for s in sigmas},
            "denoise_ssim": {common.sigma_text(s): float(ssim[s].mean()) for s in sigmas},
            "seed_values": {  # every seed scores as many images: their mean is the figure
                f"denoise_{name}": {common.sigma_text(s): [
                    float(getattr(ws.denoise(key, seed)[s], name).mean()) for seed in seeds]
                    for s in sigmas} for name in ("psnr", "ssim")}}
    note = (f"Mean over the {len(ws.test)} test images; ± sd over the noise draws (and "
            "training seeds) — the same noisy images for every model — of "
            "skimage.metrics.peak_signal_noise_ratio and structural_similarity (data_range 1), "
            "each reconstruction g(z*) of a noisy image (not clipped) against its clean image. "
            "The authors compared SSIM with the noisy image, a slip not followed here.")
    path = _figure(ws)
    return common.Section(NAME, TITLE, [note, common.md_table(header, rows)],
                          [(f"denoising examples at σ = {EXAMPLE_SIGMA}", ws.relative(path))],
                          results)


def _figure(ws):
    clean, noisy, _ = ws.denoise(None)[EXAMPLE_SIGMA].examples
    grid = [clean, noisy] + [np.clip(ws.denoise(k)[EXAMPLE_SIGMA].examples[2], 0, 1)
                             for k in common.MODEL_KEYS]
    titles = ["clean test images", f"noisy (σ = {EXAMPLE_SIGMA}, shown clipped to [0, 1])"] + \
        [common.label(k) for k in common.MODEL_KEYS]
    return psg.plots.plot_image_grid([np.clip(g, 0, 1) for g in grid],
                                     ws.figure_path("denoise_examples.png"), titles=titles)


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
