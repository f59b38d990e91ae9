"""Variant priors, trained through the public API: the default annealed spike-and-slab, the
learned prior (per-dimension slab weights learned after the annealing: empirical Bayes), the
hierarchical prior (the slab weights a global Beta latent whose concentrations are learned) and a
Laplace prior — each as the package's :class:`~pyro_sparsegen.SparseGenerator` (its ``prior=``
presets, a subclass for the Laplace) and as a plain Pyro function model trained by the same
:func:`~pyro_sparsegen.train` through a factory (``config.model``, what ``--model`` sets;
``variant_models.py`` holds both).

For each: test MSE, zeroed MSE (``|z| ≤ 0.2`` set to 0), inactive fraction and mean active
coordinates per image of the test codes, and the mean active coordinates of as many draws from
the model's own prior (``model.generate``) — a prior that generates like the data uses about as
many as the codes do. A grid of prior samples per model.

    python analyses/variant_priors.py --data mnist5k --out runs/analysis --quick

Writes ``OUT/variant_priors.md`` (the table), ``.json`` and ``OUT/figures/variants_<key>.png``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch

import common
import pyro_sparsegen as psg
import variant_models
from common import ev

NAME = "variant_priors"
TITLE = "Variant priors: annealed, learned, hierarchical, Laplace (class and plain function)"
PRIORS = ("annealed", "learned", "hierarchical", "laplace")
ROUTES = ("class", "function")
GRID = (2, 10)  # rows x images of each sample grid


def request(ws, prior, route):
    """``(config, model_class)`` of one variant: the package's default config with the prior
    set by ``prior.kind`` / a subclass (class route) or by a factory (function route)."""
    config, model_class = ws.base_config(), None
    if route == "function":
        config.model = f"variant_models:{prior}_fn"
    elif prior == "laplace":
        model_class = variant_models.LaplaceGenerator
    else:
        config.prior.kind = prior
    return config.validate(), model_class


def key_of(prior, route):
    return f"variant_{prior}_{route}"


def load(ws, prior, route):
    """The trained variant as a :class:`common.Loaded` (the class-route annealed prior is the
    main sparse model: the same config, trained once)."""
    if prior == "annealed" and route == "class":
        return ws.model("sparse")
    config, model_class = request(ws, prior, route)
    key = key_of(prior, route)
    folder, seconds = ws.trained_folder(key, "abp", config, model_class=model_class)
    # the opt-in to import exactly the class or factory this script asked for
    model, config, state = psg.load_run(folder, device=ws.device, model_class=model_class,
                                               model=config.model)
    return ws.loaded(key, folder, model, config, state, seconds)


def prior_draws(ws, m, n):
    """``(images, z)`` of ``n`` draws from the model's prior (seeded); images decoded as the
    model decodes its codes (sparsified where it was trained so)."""
    images = ev.sample_images(m.model, n, seed=ws.settings.seed + 1,
                              sparsify=ws.sparsified("sparse", m))
    with ev.adapters.seeded(ws.settings.seed + 1, ws.device), torch.no_grad():
        _, z = m.model.generate(n)
    return images, z.detach().cpu().numpy()


EVIDENCE_IMAGES, EVIDENCE_LEVELS, EVIDENCE_LADDERS = 16, 12, 4


def evidence(ws, m):
    """``(mean log p(x) per test image, its MCSE)`` by the stepping-stone estimate of a
    replica-exchange run (:meth:`pyro_sparsegen.ShortRunLangevin.sample_chains` with
    ``tempering``) on ``EVIDENCE_IMAGES`` spread test images, or ``(None, None)`` where the
    model cannot be tempered per image (the hierarchical prior's global block has no
    per-image evidence)."""
    rows = ws.spread(ws.test, min(EVIDENCE_IMAGES, len(ws.test)))
    x = ws.test.batch(rows).to(ws.device)
    kernel = psg.ShortRunLangevin(m.model, metropolis=True, prior_step="semi-implicit",
                                  tempering=EVIDENCE_LEVELS,
                                  step_size=m.config.langevin.step_size)
    try:
        kernel.target((x,)).check_temperable()
    except ValueError:
        return None, None
    with ev.adapters.seeded(ws.settings.seed + 2, ws.device):
        warmup, draws, thin = ws.mode["evidence"]
        _, stats = kernel.sample_chains(x, num_chains=EVIDENCE_LADDERS, num_draws=draws,
                                        warmup_steps=warmup, thin=thin)
    log_evidence = stats["log_marginal_likelihood"].double()
    mcse = stats["log_marginal_likelihood_mcse"].double()
    n = log_evidence.numel()
    return float(log_evidence.mean()), float(mcse.pow(2).sum().sqrt() / n)


def evaluate(ws, prior, route):
    """The table's numbers of one variant (its function model is evaluated before the next
    one is loaded: function models share Pyro's param store)."""
    m = load(ws, prior, route)
    codes = ws.dataset_codes(m.model, m.encoder, ws.test)
    summary = ev.sparsity_summary(codes)
    images, z = prior_draws(ws, m, len(ws.test))
    path = psg.plots.plot_image_grid(
        [images[i * GRID[1]:(i + 1) * GRID[1]] for i in range(GRID[0])],
        ws.figure_path(f"variants_{prior}_{route}.png"))
    log_evidence, log_evidence_mcse = evidence(ws, m)
    return m, {"test_mse": summary["test_mse"], "zeroed_mse": summary["zeroed_mse"],
               "log_evidence": log_evidence, "log_evidence_mcse": log_evidence_mcse,
               "inactive_fraction": summary["inactive_fraction"],
               "mean_active": summary["mean_active"],
               "prior_mean_active": float((np.abs(z) > ws.threshold).sum(1).mean()),
               "latent_dim": summary["latent_dim"], "folder": m.folder,
               "figure": ws.relative(path)}


def run(ws):
    rows, results, figures = [], {}, []
    for prior in PRIORS:
        for route in ROUTES:
            m, entry = evaluate(ws, prior, route)
            results[key_of(prior, route)] = entry
            what = ("SparseGenerator" + (" subclass" if prior == "laplace" else
                                         f"(prior={prior!r})")) if route == "class" else \
                f"function {m.config.model}"
            rows.append([prior, what, common.fmt(entry["test_mse"], 4),
                         common.fmt(entry["zeroed_mse"], 4),
                         common.fmt_mean_sd(entry["log_evidence"], entry["log_evidence_mcse"]),
                         common.fmt(entry["inactive_fraction"], 3),
                         common.fmt(entry["mean_active"], 1),
                         common.fmt(entry["prior_mean_active"], 1)])
            figures.append((f"{prior} prior ({route}): samples from its prior",
                            entry["figure"]))
    note = (f"One seed each (training seed {ws.settings.seed}; the annealed class route is the "
            "main sparse model's first seed). Each model trained with the default settings "
            f"({ws.base_config().optim.epochs} epochs) on the {len(ws.train)} training images; "
            f"measured on the {len(ws.test)} "
            f"test images. Active: |z| > {ws.threshold:g}; 'prior draws' counts the active "
            f"coordinates of {len(ws.test)} draws from each model's own prior at the end of "
            "training. Learned and hierarchical priors learn their slab weights once the "
            "annealing has ended, starting from the schedule's final weight; slab and spike "
            "scales are not learned (under MAP-ABP they are not identifiable: scaling the "
            "generator's first layer by c and the code by 1/c leaves the likelihood unchanged "
            f"and rewards smaller scales). Laplace: scale {variant_models.LAPLACE_SCALE:g}, "
            "no annealing.")
    warmup, draws, thin = ws.mode["evidence"]
    note += (f" log p(x): the mean over {EVIDENCE_IMAGES} spread test images of each image's "
             f"evidence, stepping-stone estimate of a replica-exchange run ({EVIDENCE_LEVELS} "
             f"levels x {EVIDENCE_LADDERS} ladders, {warmup} warm-up + {draws * thin} "
             "transitions), ± its "
             "Monte Carlo error; — where the prior has a global block (hierarchical: no "
             "per-image evidence).")
    header = ["prior", "model", "test MSE", "zeroed MSE", "log p(x)", "inactive",
              "active (codes)",
              "active (prior draws)"]
    return common.Section(NAME, TITLE, [note, common.md_table(header, rows)], figures,
                          {"variants": results})


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
