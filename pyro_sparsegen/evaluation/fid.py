r"""Sample quality: a Fréchet distance in the features of a small classifier ("MNIST FID").

The Fréchet Inception Distance (Heusel et al., NeurIPS 2017) compares two sets of images by
the Gaussians fitted to their features,

.. math::
    d^2 = \lVert\mu_1 - \mu_2\rVert^2
          + \operatorname{tr}\bigl(\Sigma_1 + \Sigma_2 - 2 (\Sigma_1^{1/2} \Sigma_2
          \Sigma_1^{1/2})^{1/2}\bigr).

Inception features do not suit 28x28 digits, and the package brings no pretrained network, so
the features here are the penultimate layer of a small MLP classifier
(:class:`FeatureClassifier`, pixels -> 256 -> 64 -> classes, ReLU) trained with torch on the
*training* images (:func:`fit_feature_classifier`: seeded, Adam, a few epochs, seconds on a
CPU). :func:`sample_fid` compares a model's prior samples with held-out images.

The value depends on the feature network and on the number of images (the covariance
estimates are biased): compare models only with the same extractor and equal sample sizes.
Two disjoint halves of the held-out images give the noise level of the estimate.
"""

import numpy as np
import torch
from torch import nn

from .adapters import sample_images, seeded


class FeatureClassifier(nn.Module):
    """An MLP classifier of images ``[N, C, H, W]``; :meth:`features` gives its penultimate
    layer.

    :param image_shape: ``(C, H, W)``.
    :param int classes: number of classes.
    :param hidden: widths of the hidden layers (the last one is the feature size).
    """

    def __init__(self, image_shape, classes, hidden=(256, 64)):
        super().__init__()
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden must be positive widths, got {hidden!r}")
        self.image_shape, self.classes, self.hidden = tuple(image_shape), int(classes), \
            tuple(int(h) for h in hidden)
        layers, width = [nn.Flatten()], int(np.prod(self.image_shape))
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, self.classes)

    def forward(self, x):
        return self.head(self.body(x))

    @torch.no_grad()
    def features(self, images, batch_size=1000):
        """Penultimate-layer features, float64 numpy ``[N, hidden[-1]]``."""
        device = self.head.weight.device
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.as_tensor(np.asarray(images[start:start + batch_size], dtype=np.float32),
                                device=device)
            out.append(self.body(x).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    @torch.no_grad()
    def accuracy(self, images, labels):
        """Classification accuracy on ``images`` ``[N, C, H, W]``."""
        device = self.head.weight.device
        x = torch.as_tensor(np.asarray(images, dtype=np.float32), device=device)
        return float((self(x).argmax(1).cpu().numpy() == np.asarray(labels)).mean())


def fit_feature_classifier(train, *, hidden=(256, 64), epochs=10, batch_size=128, lr=1e-3,
                           seed=0, device="cpu"):
    """Train a :class:`FeatureClassifier` on the labelled images of ``train`` (an
    :class:`~pyro_sparsegen.ImageData`): Adam, cross-entropy, shuffled mini-batches, seeded
    (initialisation and order), in eval mode when returned."""
    if train.labels is None:
        raise ValueError("the FID's feature classifier needs labelled training images")
    images = train.images().to(device)
    labels = torch.as_tensor(train.labels, device=device)
    with seeded(seed, device):
        net = FeatureClassifier(train.image_shape, int(train.labels.max()) + 1, hidden)
    net = net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(len(images)), device=device)
        for start in range(0, len(images), batch_size):
            rows = order[start:start + batch_size]
            loss = nn.functional.cross_entropy(net(images[rows]), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net.eval()


def gaussian_statistics(features):
    """Mean ``[F]`` and covariance ``[F, F]`` (ddof 1) of ``features`` ``[N, F]``, float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, F], got shape {list(features.shape)}")
    return features.mean(0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix):
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, cov1, mu2, cov2):
    """The squared Fréchet (2-Wasserstein) distance between ``N(mu1, cov1)`` and
    ``N(mu2, cov2)``; the cross term through the symmetric ``cov1^1/2 cov2 cov1^1/2``, whose
    eigenvalues are those of ``cov1 cov2`` (stable, no complex square roots)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, float)), np.atleast_1d(np.asarray(mu2, float))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, float)), np.atleast_2d(np.asarray(cov2, float))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
        raise ValueError("means and covariances must have matching shapes")
    root = _sqrt_psd(cov1)
    cross = np.linalg.eigvalsh(root @ cov2 @ root)
    trace = np.trace(cov1) + np.trace(cov2) - 2 * np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + max(trace, 0.0))


def fid(extractor, images_a, images_b):
    """:func:`frechet_distance` between the feature Gaussians of two image sets
    (``[N, C, H, W]`` each; ``extractor``: a :class:`FeatureClassifier`)."""
    return frechet_distance(*gaussian_statistics(extractor.features(images_a)),
                            *gaussian_statistics(extractor.features(images_b)))


def sample_fid(model, extractor, reference, *, n=None, seed=0, sparsify=False):
    """FID between ``n`` prior samples of ``model``
    (:func:`~pyro_sparsegen.evaluation.adapters.sample_images`) and the ``reference`` images
    (``[M, C, H, W]``, held out; ``n`` defaults to ``M``, equal sizes keep FIDs comparable).
    """
    reference = np.asarray(reference, dtype=np.float32)
    samples = sample_images(model, len(reference) if n is None else n, seed=seed,
                            sparsify=sparsify)
    return fid(extractor, samples, reference)
