"""Bayes denoising: a labelled variant of denoise-then-classify, not the authors' protocol.

The authors' protocol (:mod:`~pyro_sparsegen.evaluation.denoise`) encodes a noisy image with
the training's 30 noise-free Langevin steps from zeros and classifies one reconstruction
``g(z*)``. Here the noise is part of the model and the code is integrated out:

1. the model's likelihood scale becomes ``sqrt(s^2 + sigma^2)`` for noise ``sigma``
   (:func:`~pyro_sparsegen.evaluation.noise_inflated`): an image ``x ~ N(g(z), s^2)`` seen
   through ``N(0, sigma^2)`` noise (not clipped, as in the authors' protocol);
2. the tempered exact sampler draws ``z`` from that posterior, per image: replica exchange
   (``tempering=levels`` ladders of MALA with the semi-implicit prior step, the crossing and
   pair moves, the hottest level refreshed from the prior), ``chains`` ladders from prior
   draws, ``warmup`` adapting transitions, then ``draws`` kept draws every ``thin``;
3. every kept draw is decoded to ``g(z)`` (the generator's mean); the classifier's class
   probabilities are averaged over the draws (the posterior predictive of the label,
   :func:`predictive_probabilities`) and so are the decoded images (the posterior-mean image,
   scored by PSNR / SSIM against the clean image).

The sampler may not converge on a sharp likelihood: every run reports, per image, the split
R-hat and bulk ESS of the log density over the chains and the ladder's swap acceptance. Draws
with a non-finite log density or image are left out of the averages and counted
(``BayesDenoised.finite_draws``); an image without a finite draw gets NaN.
"""

import dataclasses
import time

import numpy as np
import torch

from ..diagnostics.metrics import convergence
from ..infer import ShortRunLangevin
from ..runtime import LazyModule
from .adapters import model_device, seeded
from .corruption import noise_inflated

xr = LazyModule("xarray")

# The defaults, sized for 200 MNIST test images per model and noise level in about 2.5 minutes
# on one CPU thread: 0.73 s per image measured on 100 images at sigma 0.5 (a 10-epoch sparse
# model, d = 100, MLP 100 -> 400 -> 784; a shared 2-core machine). With 4 levels adjacent
# levels hardly swapped (acceptance ~0); 8 swap (0.01-0.24). The chains do not converge at this
# cost (median split R-hat of an image's log density 1.35, worst 2.6): reported, not hidden.
LEVELS = 8  #: tempering levels per ladder
CHAINS = 4  #: independent ladders per image
WARMUP = 150  #: warm-up transitions (step sizes and ladder adapted)
DRAWS = 50  #: kept draws per chain
THIN = 2  #: transitions per kept draw
BATCH = 100  #: images sampled together


@dataclasses.dataclass
class BayesDenoised:
    """Bayes denoising of ``N`` noisy images at one noise level.

    :ivar sigma: the noise level; ``scale``: the inflated likelihood scale ``sqrt(s^2 +
        sigma^2)``.
    :ivar mean_image: ``[N, C, H, W]`` the posterior mean of ``g(z)`` (float32).
    :ivar probabilities: ``[N, classes]`` the classifier's probabilities averaged over the
        draws (``None`` without a classifier); ``classes``: the labels of its columns.
    :ivar seconds: wall-clock seconds of the whole run (sampling, decoding, classifying).
    :ivar rhat: ``[N]`` split R-hat of each image's log density over its chains.
    :ivar ess: ``[N]`` bulk ESS of each image's log density.
    :ivar swap_accept_prob: ``[levels - 1, N]`` mean swap acceptance of adjacent levels.
    :ivar finite_draws: ``[N]`` draws kept in the averages (of ``chains * draws``).
    :ivar settings: the sampler's settings.
    """

    sigma: float
    scale: float
    mean_image: np.ndarray
    probabilities: np.ndarray
    classes: np.ndarray
    seconds: float
    rhat: np.ndarray
    ess: np.ndarray
    swap_accept_prob: np.ndarray
    finite_draws: np.ndarray
    settings: dict

    @property
    def seconds_per_image(self):
        return self.seconds / len(self.mean_image)

    @property
    def max_rhat(self):
        """The largest per-image R-hat (NaN when none is finite)."""
        return _nan_reduce(np.max, self.rhat)

    @property
    def min_ess(self):
        """The smallest per-image bulk ESS (NaN when none is finite)."""
        return _nan_reduce(np.min, self.ess)

    @property
    def nonfinite_images(self):
        """Images without a finite draw (their outputs are NaN)."""
        return int((self.finite_draws == 0).sum())

    def predicted(self):
        """Labels ``[N]``: the most probable class (``None`` where the probabilities are
        NaN, an image without a finite draw)."""
        if self.probabilities is None:
            raise ValueError("no classifier was given")
        best = self.classes[np.nan_to_num(self.probabilities, nan=-1.0).argmax(1)]
        ok = np.isfinite(self.probabilities).all(1)
        return np.where(ok, best.astype(object), None)

    def correct(self, labels):
        """Boolean ``[N]``: the most probable class is ``labels`` (an image without a finite
        draw counts as wrong)."""
        return np.asarray([p is not None and p == y for p, y in zip(self.predicted(), labels)])


def _nan_reduce(fn, values):
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else float("nan")


def predictive_probabilities(classifier, draws, finite=None):
    """The classifier's class probabilities averaged over posterior draws: ``[n, classes]``.

    :param classifier: has ``probabilities(images [M, C, H, W]) -> [M, classes]``.
    :param draws: decoded draws ``[draws, n, C, H, W]`` (numpy).
    :param finite: boolean ``[draws, n]``, the draws to average (default: every draw whose
        pixels are all finite); an image with none gets a NaN row.
    """
    draws = np.asarray(draws)
    s, n = draws.shape[:2]
    if finite is None:
        finite = np.isfinite(draws.reshape(s, n, -1)).all(-1)
    finite = np.asarray(finite, dtype=bool)
    flat = draws.reshape(s * n, *draws.shape[2:])
    keep = finite.reshape(-1)
    if keep.any():
        found = np.asarray(classifier.probabilities(flat[keep]), dtype=np.float64)
        probs = np.zeros((s * n, found.shape[1]))
        probs[keep] = found
    else:
        probs = np.zeros((s * n, len(classifier.classes)))
    count = finite.sum(0)
    with np.errstate(invalid="ignore"):
        return probs.reshape(s, n, -1).sum(0) / count[:, None]


def _convergence(lp):
    """Per-image split R-hat and bulk ESS of the log density ``lp: [chains, draws, N]``
    (NaN for an image with a non-finite value or a single chain)."""
    lp = np.asarray(lp, dtype=np.float64)
    n = lp.shape[-1]
    if lp.shape[0] < 2:
        return np.full(n, np.nan), np.full(n, np.nan)
    conv = convergence(xr.Dataset({"lp": (("chain", "draw", "image"), lp)}), var_names=("lp",),
                       reduced=False)
    rhat, ess = conv["lp_rhat"].values.copy(), conv["lp_ess"].values.copy()
    bad = ~np.isfinite(lp).all((0, 1))
    rhat[bad], ess[bad] = np.nan, np.nan
    return rhat, ess


def bayes_denoise(model, noisy, sigma, *, classifier=None, levels=LEVELS, chains=CHAINS,
                  warmup=WARMUP, draws=DRAWS, thin=THIN, seed=0, batch_size=BATCH,
                  device=None):
    """Denoise ``noisy`` images by the posterior under the noise-inflated likelihood.

    :param model: an ABP model (:class:`~pyro_sparsegen.SparseGenerator` with a normal
        likelihood, sparse or dense; others are refused in one line).
    :param noisy: ``[N, C, H, W]`` numpy array or tensor, the images with noise ``N(0,
        sigma^2)`` (not clipped).
    :param float sigma: the noise level the likelihood is inflated by.
    :param classifier: has ``probabilities(images) -> [M, classes]`` and ``classes`` (a
        :class:`~pyro_sparsegen.evaluation.PixelClassifier`); ``None``: no probabilities.
    :param int levels: tempering levels (the kernel's ``tempering``); ``chains``: ladders per
        image; ``warmup``, ``draws``, ``thin``: as in
        :meth:`~pyro_sparsegen.ShortRunLangevin.sample_chains`.
    :param seed: seeds the sampler's draws (torch's RNG forked, the caller's untouched).
    :param int batch_size: images sampled together (memory: ``chains * levels * batch_size``
        rows).
    :return: :class:`BayesDenoised`.
    """
    inflated = noise_inflated(model, sigma)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    device = model_device(model) if device is None else torch.device(device)
    like = next(iter(model.parameters()), None)
    dtype = torch.float32 if like is None else like.dtype
    kernel = ShortRunLangevin(inflated, metropolis=True, prior_step="semi-implicit",
                              tempering=levels)
    means, probs, lps, swaps, counts = [], [], [], [], []
    tick = time.perf_counter()
    with seeded(seed, device):
        for start in range(0, len(noisy), batch_size):
            x = noisy[start:start + batch_size]
            x = x.to(device=device, dtype=dtype) if isinstance(x, torch.Tensor) else \
                torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
            with torch.enable_grad():
                samples, stats = kernel.sample_chains(x, num_chains=chains, num_draws=draws,
                                                      warmup_steps=warmup, thin=thin)
            z = samples["z"].detach()  # [chains, draws, n, d]
            with torch.no_grad():
                images = inflated.decode(z.reshape(-1, z.shape[-1]))
            images = images.reshape(chains * draws, x.shape[0], *x.shape[1:]).cpu().numpy()
            lp = stats["log_density"].detach().cpu().numpy()  # [chains, draws, n]
            finite = np.isfinite(images.reshape(*images.shape[:2], -1)).all(-1) & \
                np.isfinite(lp.reshape(chains * draws, -1))
            count = finite.sum(0)
            with np.errstate(invalid="ignore"):
                means.append(np.where(finite[..., None, None, None], images, 0.0).sum(0) /
                             count[:, None, None, None])
            if classifier is not None:
                probs.append(predictive_probabilities(classifier, images, finite))
            lps.append(lp)
            swaps.append(stats["swap_accept_prob"].detach().cpu().numpy())
            counts.append(count)
    seconds = time.perf_counter() - tick
    rhat, ess = _convergence(np.concatenate(lps, -1))
    return BayesDenoised(
        float(sigma), float(inflated.noise_scale),
        np.concatenate(means).astype(np.float32), np.concatenate(probs) if probs else None,
        None if classifier is None else np.asarray(classifier.classes), seconds, rhat, ess,
        np.concatenate(swaps, -1), np.concatenate(counts),
        {"levels": levels, "chains": chains, "warmup": warmup, "draws": draws, "thin": thin,
         "seed": seed, "sampler": "MALA (exact), semi-implicit prior step, replica exchange",
         "init": "prior"})

