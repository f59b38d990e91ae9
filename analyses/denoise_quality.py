"""Denoising quality: PSNR and SSIM (scikit-image, data_range = 1) of each model's
reconstructions of noisy test images (σ = 0.3, 0.5, 0.7, clipped to [0, 1]) measured against
the clean images; the noisy images themselves as the floor.

    python analyses/denoise_quality.py --data mnist5k --out runs/analysis --quick

Writes ``OUT/denoise_quality.md`` (the table), ``.json`` and
``OUT/figures/denoise_examples.png``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402
import pyro_sparsegen as psg  # noqa: E402

NAME = "denoise_quality"
TITLE = "Denoising quality (PSNR, SSIM against the clean images)"
EXAMPLE_SIGMA = 0.5


def run(ws):
    sigmas = common.NOISE_LEVELS
    header = ["model"] + [f"PSNR σ = {s} (dB)" for s in sigmas] + \
        [f"SSIM σ = {s}" for s in sigmas]
    rows, results = [], {}
    for key in common.MODEL_KEYS + (None,):
        runs = {s: [ws.denoise(key, s, r) for r in range(ws.repeats)] for s in sigmas}
        psnr = {s: [r["psnr"] for r in runs[s]] for s in sigmas}
        ssim = {s: [r["ssim"] for r in runs[s]] for s in sigmas}
        rows.append([common.label(key) if key else "noisy input, no model (floor)"] +
                    [common.fmt_mean_sd(psnr[s], digits=2) for s in sigmas] +
                    [common.fmt_mean_sd(ssim[s], digits=3) for s in sigmas])
        results[key or "noisy_input"] = {
            "denoise_psnr": {str(s): float(np.mean(psnr[s])) for s in sigmas},
            "denoise_ssim": {str(s): float(np.mean(ssim[s])) for s in sigmas}}
    note = (f"Mean over the {len(ws.test)} test images, mean ± sd over {ws.repeats} noise "
            "draws (the same noisy images for every model), of "
            "skimage.metrics.peak_signal_noise_ratio and structural_similarity (data_range 1), "
            "each reconstruction network(encoder(noisy image)) against its clean image.")
    path = _figure(ws)
    return common.Section(NAME, TITLE, [note, common.md_table(header, rows)],
                          [(f"denoising examples at σ = {EXAMPLE_SIGMA}", ws.relative(path))],
                          results)


def _figure(ws):
    first = ws.denoise(None, EXAMPLE_SIGMA, 0)["examples"]
    grid = [first[0], first[1]] + [ws.denoise(k, EXAMPLE_SIGMA, 0)["examples"][2]
                                   for k in common.MODEL_KEYS]
    titles = ["clean test images", f"noisy (σ = {EXAMPLE_SIGMA})"] + \
        [common.label(k) for k in common.MODEL_KEYS]
    return psg.plots.plot_image_grid(grid, ws.figure_path("denoise_examples.png"), titles=titles)


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
