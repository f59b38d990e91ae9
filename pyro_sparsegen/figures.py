"""The figures a training run leaves (training curves, reconstructions, prior samples, code
usage), drawn by :mod:`pyro_sparsegen.plots` from a model and its code inference."""

import os

import torch

from . import plots
from .distributions import ACTIVE_THRESHOLD
from .encoding import infer_codes
from .metrics import active_mask


@torch.no_grad()
def reconstructions(model, encoder, x, *, threshold=ACTIVE_THRESHOLD, observed=None):
    """``(g(z), g(z with every |z| <= threshold set to 0))`` for the codes ``encoder``
    infers from ``observed`` (default ``x``, e.g. a noisy copy of it)."""
    with torch.enable_grad():  # the Langevin run differentiates the log density
        z = encoder(x if observed is None else observed)
    active, _ = active_mask(model, z, threshold)
    return model.decode(z), model.decode(z * active)


def write_figures(model, encoder, data, metrics, out_dir, config, device, num=16):
    """Training curves, reconstructions, prior samples and the code-usage chart."""
    model.eval()
    rows = data.spread_rows(num)  # split files are often sorted by class
    x = data.batch(rows).to(device)
    recon, zeroed = reconstructions(model, encoder, x, threshold=config.threshold)
    samples, _ = model.generate(num)
    out = {
        "curves": plots.plot_training_curves(metrics, os.path.join(out_dir, "training_curves.png")),
        "reconstructions": plots.plot_image_grid(
            [x.cpu(), recon.cpu(), zeroed.cpu()], os.path.join(out_dir, "reconstructions.png"),
            titles=["test images", "reconstructions", "inactive coordinates zeroed"]),
        "samples": plots.plot_image_grid([samples[i::2].cpu() for i in range(2)],
                                         os.path.join(out_dir, "samples.png"),
                                         titles=["samples from the prior", ""]),
    }
    codes = infer_codes(model, data, encoder, threshold=config.threshold,
                        batch_size=config.optim.batch_size, device=device, limit=1000)
    usage = codes["active"].mean(0)
    out["code_usage"] = plots.plot_code_usage(usage, os.path.join(out_dir, "code_usage.png"),
                                              title="fraction of test images using each dimension")
    return out
