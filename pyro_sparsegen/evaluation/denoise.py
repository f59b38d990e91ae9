"""Denoise, then classify; PSNR and SSIM of the denoised images.

The authors' protocol (hanaoli/Sparse-ABP, ``hiabp_sparse.py``: ``test_denoise_classify`` and
``test_noise``), which :func:`denoise` follows by default:

1. a linear classifier is trained on the clean training pixels (theirs: one linear layer,
   Adam 1e-3, 20 epochs; here :class:`PixelClassifier`, a multinomial logistic regression
   fitted by scikit-learn to convergence, the same model class. Being deterministic, it is
   fitted once and reused for every repeat instead of being retrained);
2. each test image gets Gaussian noise ``N(0, sigma^2)``, sigma in 0.3 / 0.5 / 0.7, **not
   clipped** to [0, 1] (:func:`~pyro_sparsegen.evaluation.add_noise`); 5 repeats with fresh
   noise, the same noisy images for every model;
3. every model encodes the noisy image exactly as it encodes a clean one (its own encoder:
   for ABP models the short Langevin run of training, with the model's prior, initialisation,
   steps and sparsification; for VAE / VSC one encoder pass) and the classifier labels the
   reconstruction ``g(z*)``;
4. the floor: the classifier on the noisy images themselves (``model=None``); the ceiling: on
   the clean images.

``clip=True`` (:func:`denoise_accuracy_clipped`) is the second, harder table: the noisy images
are clipped to [0, 1] first.

PSNR and SSIM (:func:`image_quality`, ``skimage.metrics`` with ``data_range=1``) compare each
denoised image with the **clean** image. The authors' ``test_noise`` passes the *noisy* image
to ``structural_similarity``, which rewards reproducing the noise; that is a slip, not followed
here.
"""

import dataclasses
import warnings

import numpy as np

from .adapters import reconstruct
from .compare import Accuracy
from .noise import add_noise

NOISE_LEVELS = (0.3, 0.5, 0.7)
REPEATS = 5


class PixelClassifier:
    """A multinomial logistic regression on raw pixels (no standardisation: border pixels are
    constant on clean digits, and scaling them would let noise there dominate).

    :ivar model: the fitted :class:`sklearn.linear_model.LogisticRegression`.
    """

    def __init__(self, model, image_shape):
        self.model, self.image_shape = model, tuple(image_shape)

    def _pixels(self, images):
        images = np.asarray(images, dtype=np.float32)
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images must be [N, {', '.join(map(str, self.image_shape))}], "
                             f"got {list(images.shape)}")
        return images.reshape(len(images), -1)

    def predict(self, images):
        """Labels ``[N]`` for images ``[N, C, H, W]``."""
        return self.model.predict(self._pixels(images))

    @property
    def classes(self):
        """The labels, in the order of :meth:`probabilities`' columns: ``[classes]``."""
        return self.model.classes_

    def probabilities(self, images):
        """Class probabilities ``[N, classes]`` for images ``[N, C, H, W]``."""
        return self.model.predict_proba(self._pixels(images))

    def correct(self, images, labels):
        """Boolean ``[N]``: which images are classified as ``labels``."""
        return self.predict(images) == np.asarray(labels)


def fit_logistic(x, y, *, scale=True, seed=0, max_iter=1000):
    """A multinomial logistic regression on features ``x: [N, F]`` (standardised when
    ``scale``). lbfgs gets ``max_iter`` iterations; a remaining ConvergenceWarning (a fit that
    has not fully converged still classifies) is kept out of the caller's warning filters."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = LogisticRegression(max_iter=max_iter, random_state=seed)
    model = make_pipeline(StandardScaler(), classifier) if scale else classifier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(np.asarray(x), np.asarray(y))
    return model


def fit_pixel_classifier(train, *, seed=0, max_iter=1000):
    """:class:`PixelClassifier` fitted on the clean images of ``train`` (an
    :class:`~pyro_sparsegen.ImageData` with labels)."""
    if train.labels is None:
        raise ValueError("denoise-then-classify needs labelled training images")
    x = train.images().numpy()
    return PixelClassifier(fit_logistic(x.reshape(len(x), -1), train.labels, scale=False,
                                        seed=seed, max_iter=max_iter), x.shape[1:])


def image_quality(clean, output):
    """Per-image PSNR (dB, capped at 100 for identical images) and SSIM of ``output`` against
    ``clean`` (both ``[N, C, H, W]``; ``data_range=1``): two float arrays ``[N]``."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    clean, output = np.asarray(clean, dtype=np.float64), np.asarray(output, dtype=np.float64)
    if clean.shape != output.shape:
        raise ValueError(f"clean and output differ in shape: {clean.shape} vs {output.shape}")
    psnr, ssim = np.empty(len(clean)), np.empty(len(clean))
    for i, (a, b) in enumerate(zip(clean, output)):
        with np.errstate(divide="ignore"):
            psnr[i] = peak_signal_noise_ratio(a, b, data_range=1.0)
        if a.shape[0] == 1:
            ssim[i] = structural_similarity(a[0], b[0], data_range=1.0,
                                            win_size=_win_size(a.shape[1:]))
        else:
            ssim[i] = structural_similarity(a, b, data_range=1.0, channel_axis=0,
                                            win_size=_win_size(a.shape[1:]))
    return np.minimum(psnr, 100.0), ssim


def _win_size(hw):
    """scikit-image's default window (7), shrunk to the largest odd size that fits."""
    side = min(7, min(hw))
    return side if side % 2 else side - 1


@dataclasses.dataclass
class DenoiseRun:
    """Denoising at one noise level.

    :ivar sigma: the noise level; ``clip``: whether the noisy images were clipped to [0, 1].
    :ivar accuracy: :class:`~pyro_sparsegen.evaluation.Accuracy` ``[repeats, images]`` of the
        pixel classifier on the outputs (``None`` without a classifier or labels).
    :ivar psnr: ``[repeats]`` mean PSNR against the clean images (``None`` without quality).
    :ivar ssim: ``[repeats]`` mean SSIM against the clean images.
    :ivar examples: ``(clean, noisy, output)`` of the example rows, first repeat.
    """

    sigma: float
    clip: bool
    accuracy: Accuracy
    psnr: np.ndarray
    ssim: np.ndarray
    examples: tuple


def denoise(model, encoder, test, *, classifier=None, sigmas=NOISE_LEVELS, repeats=REPEATS,
            clip=False, seed=0, batch_size=100, device="cpu", quality=True, example_rows=()):
    """Denoise the test images at each noise level and score the outputs.

    :param model: a trained model (decoded through
        :func:`~pyro_sparsegen.evaluation.adapters.decode`) and ``encoder`` its encoder
        (:func:`pyro_sparsegen.make_inference`); both ``None``: the noisy images themselves are
        the output (the floor).
    :param test: the test :class:`~pyro_sparsegen.ImageData`.
    :param classifier: a :class:`PixelClassifier` (see :func:`fit_pixel_classifier`), or
        ``None`` to skip the accuracy.
    :param sigmas: noise levels (0 gives the clean images).
    :param int repeats: noise draws per level (seeded by ``seed``, the repeat and sigma).
    :param bool clip: clip the noisy images to [0, 1] (the harder variant).
    :param bool quality: also compute PSNR and SSIM against the clean images.
    :param example_rows: test positions whose images are kept in ``examples``.
    :return: ``{sigma: DenoiseRun}``
    """
    if (model is None) != (encoder is None):
        raise ValueError("give both model and encoder, or neither (the noisy-input floor)")
    if repeats < 1:
        raise ValueError(f"repeats must be positive, got {repeats!r}")
    clean = test.images().numpy()
    labels = test.labels
    rows = np.asarray(example_rows, dtype=int)
    out = {}
    for sigma in sigmas:
        correct, psnr, ssim, examples = [], [], [], None
        for r in range(repeats):
            noisy = add_noise(clean, sigma, seed=seed, repeat=r, clip=clip)
            output = noisy if model is None else reconstruct(
                model, encoder, noisy, batch_size=batch_size, device=device,
                seed=_run_seed(seed, r, sigma))
            if classifier is not None and labels is not None:
                correct.append(classifier.correct(output, labels))
            if quality:
                p, s = image_quality(clean, output)
                psnr.append(p.mean())
                ssim.append(s.mean())
            if r == 0:
                examples = (clean[rows], noisy[rows], output[rows])
        out[float(sigma)] = DenoiseRun(float(sigma), bool(clip),
                                       Accuracy(np.stack(correct)) if correct else None,
                                       np.asarray(psnr) if quality else None,
                                       np.asarray(ssim) if quality else None, examples)
    return out


def _run_seed(seed, repeat, sigma):
    """The torch seed of one denoising run (an encoder that draws: Langevin noise, a prior
    initialisation), from (seed, repeat, sigma)."""
    state = np.random.SeedSequence([int(seed), int(repeat), int(round(1000 * float(sigma)))])
    return int(state.generate_state(1)[0])


def denoise_accuracy(model, encoder, train, test, *, classifier=None, sigmas=NOISE_LEVELS,
                     repeats=REPEATS, clip=False, seed=0, batch_size=100, device="cpu"):
    """Denoise-then-classify under the authors' protocol (no clipping): ``{str(sigma): mean
    accuracy}``. The classifier is fitted on ``train``'s clean pixels unless given.

    Example::

        >>> model, config, _ = psg.load_run("runs/default")
        >>> train, test = psg.load_data("mnist5k", "train"), psg.load_data("mnist5k", "test")
        >>> denoise_accuracy(model, psg.make_inference(model, config), train, test)
        {'0.3': 0.89, '0.5': 0.86, '0.7': 0.83}
    """
    classifier = classifier or fit_pixel_classifier(train, seed=seed)
    runs = denoise(model, encoder, test, classifier=classifier, sigmas=sigmas, repeats=repeats,
                   clip=clip, seed=seed, batch_size=batch_size, device=device, quality=False)
    return {f"{s:g}": run.accuracy.mean for s, run in runs.items()}


def denoise_accuracy_clipped(model, encoder, train, test, **kwargs):
    """:func:`denoise_accuracy` with the noisy images clipped to [0, 1] (the harder table)."""
    return denoise_accuracy(model, encoder, train, test, clip=True, **kwargs)
