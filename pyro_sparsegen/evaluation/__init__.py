"""The paper's evaluation protocols, as functions of any trained model.

Every protocol takes a model and its code inference (``psg.make_inference(model, config)``,
which infers codes exactly as training does; an amortised encoder for the baselines) and
returns plain numbers or small result objects::

    import pyro_sparsegen as psg
    from pyro_sparsegen import evaluation as ev

    model, config, _ = psg.load_run("runs/default")
    encoder = psg.make_inference(model, config)
    train, test = psg.load_data("mnist5k", "train"), psg.load_data("mnist5k", "test")

    ev.denoise_accuracy(model, encoder, train, test)          # authors' protocol, no clipping
    ev.denoise_accuracy_clipped(model, encoder, train, test)  # noisy images clipped to [0, 1]
    ev.reconstruction_sparsity(model, encoder, test)          # test / zeroed MSE, sparsity
    codes = ev.dataset_codes(model, encoder, test)
    ev.class_overlap(codes)["class_jaccard"]
    extractor = ev.fit_feature_classifier(train)
    ev.sample_fid(model, extractor, test.images().numpy())    # "MNIST FID" of prior samples

The protocols (details in each module):

- :mod:`~.denoise`: denoise-then-classify and PSNR / SSIM, the authors' protocol
  (hanaoli/Sparse-ABP, ``hiabp_sparse.py``: ``test_denoise_classify``): noise ``N(0, sigma^2)``,
  sigma 0.3 / 0.5 / 0.7, **not clipped**; 5 repeats; every model encodes the noisy image as it
  encodes a clean one; a linear classifier (logistic regression) trained on clean training
  pixels labels the reconstructions ``g(z*)``. PSNR / SSIM against the *clean* image (the
  authors' ``test_noise`` compares with the noisy one, a slip). The clipped variant is a second,
  harder table; :mod:`~.corruption` gives its labelled variant, inference with a censored
  Gaussian likelihood that models the clipping (:func:`censored`).
- :mod:`~.bayes`: Bayes denoising, a labelled variant (:func:`bayes_denoise`): the likelihood
  scale inflated to ``sqrt(s^2 + sigma^2)`` (:func:`noise_inflated`), the code's posterior drawn
  by the tempered exact sampler, the classifier's probabilities averaged over the decoded
  draws, the posterior-mean image for PSNR / SSIM, with the sampler's R-hat and ESS.
- :mod:`~.probes`: linear probes on the codes with 100 / 1,000 / all labels.
- :mod:`~.sparsity`: test MSE, zeroed MSE (every ``|z_j| <= 0.2``, the
  :data:`~pyro_sparsegen.distributions.ACTIVE_THRESHOLD`, set to 0), inactive fraction,
  mean active coordinates, class usage and the class Jaccard overlap.
- :mod:`~.compare`: per-image outcomes (:class:`Accuracy`), paired comparisons of two models on
  the same images (difference, standard error, paired bootstrap, McNemar) and the verdict rule
  (within one standard error: a tie).
- :mod:`~.fid`: a Fréchet distance in the penultimate features of a small classifier trained on
  the training images.
- :mod:`~.adapters`: the only calls made on a model (``decode``, ``images_to_codes``,
  ``reconstruct``, ``sample_images``).

Earlier names kept as aliases for one release (they do not warn yet): ``encode`` (now
:func:`images_to_codes`), ``encode_codes`` (:func:`dataset_codes`) and ``THRESHOLD``
(:data:`~pyro_sparsegen.distributions.ACTIVE_THRESHOLD`).
"""

from .adapters import decode, encode, images_to_codes, reconstruct, sample_images
from .bayes import BayesDenoised, bayes_denoise, predictive_probabilities
from .compare import Accuracy, PairedComparison, mcnemar_exact, mean_sd, paired_comparison, verdict
from .corruption import CensoredNormal, censored, noise_inflated
from .denoise import (NOISE_LEVELS, REPEATS, DenoiseRun, PixelClassifier, denoise,
                      denoise_accuracy, denoise_accuracy_clipped, fit_logistic,
                      fit_pixel_classifier, image_quality)
from .fid import (FeatureClassifier, fid, fit_feature_classifier, frechet_distance,
                  gaussian_statistics, sample_fid)
from .noise import add_noise
from .probes import LABEL_COUNTS, count_name, label_subset, linear_probe
from .sparsity import (THRESHOLD, class_overlap, class_usage, codes_posterior, dataset_codes,
                       encode_codes, reconstruction_sparsity, sparsity_summary)

__all__ = [
    "Accuracy", "add_noise", "bayes_denoise", "BayesDenoised", "censored", "CensoredNormal",
    "class_overlap", "class_usage", "codes_posterior", "count_name", "dataset_codes", "decode",
    "denoise", "denoise_accuracy", "denoise_accuracy_clipped", "DenoiseRun", "encode",
    "encode_codes", "FeatureClassifier", "fid", "fit_feature_classifier", "fit_logistic",
    "fit_pixel_classifier", "frechet_distance", "gaussian_statistics", "image_quality",
    "images_to_codes", "LABEL_COUNTS", "label_subset", "linear_probe", "mcnemar_exact", "mean_sd",
    "NOISE_LEVELS", "noise_inflated", "paired_comparison", "PairedComparison", "PixelClassifier",
    "predictive_probabilities", "reconstruct", "reconstruction_sparsity", "REPEATS", "sample_fid",
    "sample_images", "sparsity_summary", "THRESHOLD", "verdict",
]
