"""Accuracies with their uncertainty, and paired comparisons of two models.

An :class:`Accuracy` keeps every per-image outcome (``correct: [runs, images]``, one row per
noise repeat or training seed), so two models scored on the same test images compare *paired*:
:func:`paired_comparison` averages each image's outcomes over the runs, takes the per-image
differences ``d_i`` and reports their mean, its standard error ``sd(d) / sqrt(N)`` (the test
images are the unit of resampling), a paired bootstrap of the same standard error, and
McNemar's exact test on the discordant (image, run) pairs.

:func:`verdict` is the rule the reports use: differences within one standard error are
``"ties"``; otherwise ``"wins"`` (the mean is at least the rival's) or ``"loses"``.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Per-image outcomes of a classifier: ``correct`` boolean ``[runs, images]``."""

    correct: np.ndarray

    def __post_init__(self):
        correct = np.asarray(self.correct)
        if correct.ndim == 1:
            correct = correct[None]
        if correct.ndim != 2 or correct.shape[1] == 0:
            raise ValueError(f"correct must be [runs, images], got shape {list(correct.shape)}")
        object.__setattr__(self, "correct", correct.astype(bool))

    @property
    def mean(self):
        """Accuracy over every run and image."""
        return float(self.correct.mean())

    @property
    def per_run(self):
        """Accuracy of each run, ``[runs]``."""
        return self.correct.mean(1)

    @property
    def sd(self):
        """Standard deviation of the runs' accuracies (0 for one run)."""
        runs = self.per_run
        return float(runs.std(ddof=1)) if runs.size > 1 else 0.0

    @property
    def images(self):
        return self.correct.shape[1]

    @classmethod
    def stack(cls, accuracies):
        """One :class:`Accuracy` with the runs of all ``accuracies`` (e.g. training seeds)."""
        return cls(np.concatenate([a.correct for a in accuracies]))


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """``a`` against ``b`` on the same images: ``difference = mean_a - mean_b`` and its
    standard error ``se`` (per-image paired differences), ``bootstrap_se`` (paired bootstrap
    over images), ``mcnemar_p`` (exact two-sided, over (image, run) pairs; ``None`` when
    the two have different numbers of runs) from ``only_a`` / ``only_b`` discordant pairs."""

    mean_a: float
    mean_b: float
    difference: float
    se: float
    bootstrap_se: float
    mcnemar_p: float
    only_a: int
    only_b: int
    images: int

    @property
    def verdict(self):
        """:func:`verdict` of ``a`` against ``b``."""
        return verdict(self.mean_a, self.mean_b, self.se)

    def to_dict(self):
        return {**dataclasses.asdict(self), "verdict": self.verdict}


def _outcomes(x):
    if isinstance(x, Accuracy):
        return x.correct.astype(float)
    x = np.asarray(x, dtype=float)
    return x[None] if x.ndim == 1 else x


def paired_comparison(a, b, *, bootstrap=2000, seed=0):
    """Compare two models' outcomes on the same test images.

    :param a: an :class:`Accuracy` or an array ``[runs, images]`` (or ``[images]``) of
        per-image scores (booleans, or any numbers, e.g. squared errors).
    :param b: the same for the rival, with the same number of images.
    :param int bootstrap: paired bootstrap resamples of the images (0: none, ``nan``).
    :return: :class:`PairedComparison`
    """
    xa, xb = _outcomes(a), _outcomes(b)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"a and b must score the same images ({xa.shape[1]} vs {xb.shape[1]})")
    n = xa.shape[1]
    d = xa.mean(0) - xb.mean(0)
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    boot = float("nan")
    if bootstrap:
        rng = np.random.default_rng(seed)
        means = np.array([d[rng.integers(0, n, n)].mean() for _ in range(int(bootstrap))])
        boot = float(means.std(ddof=1))
    only_a = only_b = 0
    p = None
    if xa.shape == xb.shape and set(np.unique(np.concatenate([xa.ravel(), xb.ravel()]))) \
            <= {0.0, 1.0}:
        only_a = int(((xa == 1) & (xb == 0)).sum())
        only_b = int(((xa == 0) & (xb == 1)).sum())
        p = mcnemar_exact(only_a, only_b)
    return PairedComparison(float(xa.mean()), float(xb.mean()), float(d.mean()), se, boot, p,
                            only_a, only_b, n)


def mcnemar_exact(only_a, only_b):
    """Exact two-sided McNemar p-value: a binomial test of ``only_a`` successes in
    ``only_a + only_b`` discordant pairs at probability 1/2 (1 when there are none)."""
    from scipy.stats import binomtest

    total = int(only_a) + int(only_b)
    if total == 0:
        return 1.0
    return float(binomtest(int(only_a), total, 0.5).pvalue)


def verdict(mean, rival, se):
    """``"ties"`` when ``|mean - rival| <= se``; else ``"wins"`` when ``mean >= rival``, else
    ``"loses"``. ``None`` when a number is missing."""
    if mean is None or rival is None or se is None or not np.isfinite([mean, rival, se]).all():
        return None
    if abs(mean - rival) <= se:
        return "ties"
    return "wins" if mean >= rival else "loses"


def mean_sd(values):
    """``(mean, sd)`` of a list of numbers (sd with ddof 1; 0 for one value; ``None`` values
    are dropped; ``(None, None)`` when none is left)."""
    values = np.asarray([v for v in values if v is not None], dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0
