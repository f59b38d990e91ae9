"""Linear probes on the codes: how much of the label a linear read-out of ``z`` recovers.

A logistic regression on standardised codes of the training images, trained with 100, 1,000
or all labels (a class-spread, seeded subset of the training images:
:meth:`pyro_sparsegen.ImageData.spread_rows`), scored on the codes of the test images.
"""

import numpy as np

from ..data import ImageData

from .compare import Accuracy
from .denoise import fit_logistic

LABEL_COUNTS = (100, 1000, None)  # None: all training labels


def label_subset(labels, n, *, seed=0):
    """:meth:`pyro_sparsegen.ImageData.spread_rows` for a bare label array: sorted positions
    of a deterministic, class-spread subset of ``n`` of ``labels`` (never a prefix)."""
    labels = np.asarray(labels)
    view = ImageData.from_arrays(np.zeros((len(labels), 1, 1, 1), dtype=np.uint8), labels)
    return view.spread_rows(int(n), seed)


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
        rows = label_subset(train_labels, len(train_labels) if count is None else count,
                            seed=seed)
        classifier = fit_logistic(train_codes[rows], train_labels[rows], seed=seed)
        out[count_name(count)] = Accuracy(classifier.predict(test_codes) == test_labels)
    return out
