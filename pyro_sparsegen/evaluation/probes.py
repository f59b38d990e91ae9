"""Linear probes on the codes: how much of the label a linear read-out of ``z`` recovers.

A logistic regression on standardised codes of the training images, trained with 100, 1,000
or all labels (a class-spread, seeded subset of the training images), scored on the codes of
the test images.
"""

import numpy as np

from .compare import Accuracy
from .denoise import fit_logistic

LABEL_COUNTS = (100, 1000, None)  # None: all training labels


def spread_subset(labels, n, *, seed=0):
    """Sorted positions of ``n`` of ``labels``, spread over the classes in proportion to
    their sizes (largest remainders), each class's members taken in a seeded random order;
    all positions when ``n >= len(labels)``. Deterministic in ``seed``; never a prefix (split
    files are often sorted by class)."""
    labels = np.asarray(labels)
    total = len(labels)
    if n >= total:
        return np.arange(total)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n!r}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / total
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:n - take.sum()]] += 1
    rows = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(rows)).astype(np.int64)


def count_name(count):
    """``"all"`` for ``None``, else the count as text (the keys of :func:`linear_probe`)."""
    return "all" if count is None else str(int(count))


def linear_probe(train_codes, train_labels, test_codes, test_labels, *,
                 label_counts=LABEL_COUNTS, seed=0):
    """Test accuracy of a logistic regression on the codes for each number of labels.

    :param train_codes: ``[N, d]`` codes of the training images, ``train_labels`` ``[N]``.
    :param test_codes: ``[M, d]`` codes of the test images, ``test_labels`` ``[M]``.
    :param label_counts: numbers of training labels (``None``: all); counts not below the
        training set's size are left out.
    :return: ``{"100": Accuracy, "1000": Accuracy, "all": Accuracy}`` (per-image outcomes,
        for :func:`~pyro_sparsegen.evaluation.paired_comparison`).
    """
    train_codes, test_codes = np.asarray(train_codes), np.asarray(test_codes)
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    out = {}
    for count in label_counts:
        if count is not None and count >= len(train_labels):
            continue
        rows = spread_subset(train_labels, len(train_labels) if count is None else count,
                             seed=seed)
        classifier = fit_logistic(train_codes[rows], train_labels[rows], seed=seed)
        out[count_name(count)] = Accuracy(classifier.predict(test_codes) == test_labels)
    return out
