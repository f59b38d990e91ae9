"""Recognition networks and the generator-with-encoder base class of the SVI baselines."""

import math

from torch import nn

from ..model import SparseGenerator


def _check_hidden(hidden, owner):
    hidden = tuple(hidden)
    if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
        raise ValueError(f"{owner} hidden widths must be positive integers, got {hidden!r}")
    return hidden


class MLPEncoder(nn.Module):
    """Fully connected ReLU network on the flattened image, the mirror of
    :class:`~pyro_sparsegen.MLPGenerator`: ``x: [..., C, H, W]`` -> ``heads`` tensors
    ``[..., latent_dim]`` (e.g. mean and log-scale).

    :param image_shape: ``(C, H, W)``.
    :param int latent_dim: size of each output.
    :param hidden: widths of the hidden layers.
    :param int heads: number of outputs per latent coordinate.
    """

    def __init__(self, image_shape, latent_dim, hidden=(400,), heads=2):
        super().__init__()
        self.image_shape, self.latent_dim, self.heads = tuple(image_shape), latent_dim, heads
        self.hidden = _check_hidden(hidden, "encoder")
        layers, width = [], math.prod(self.image_shape)
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, heads * latent_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        """x: [..., C, H, W] -> tuple of ``heads`` tensors [..., latent_dim]"""
        out = self.net(x.flatten(-3))
        return out.unflatten(-1, (self.heads, self.latent_dim)).unbind(-2)


class AmortizedGenerator(SparseGenerator):
    """A :class:`~pyro_sparsegen.SparseGenerator` (same ``model``, likelihood and fast path)
    with a recognition network ``q(z | x)``: its ``guide``, trained jointly with the
    generator by stochastic variational inference against :meth:`loss`.

    Subclasses set ``heads`` (encoder outputs per coordinate) and define ``guide``,
    :meth:`encode` and :meth:`loss`.
    """

    heads = 2

    def __init__(self, network, *, schedule, noise_scale, likelihood, encoder_hidden):
        super().__init__(network, schedule=schedule, noise_scale=noise_scale,
                         likelihood=likelihood)
        self.encoder_hidden = _check_hidden(encoder_hidden, "encoder_hidden")
        like = self._param_like()
        self.encoder = MLPEncoder(self.image_shape, self.latent_dim, self.encoder_hidden,
                                  self.heads).to(device=like.device, dtype=like.dtype)

    @classmethod
    def from_checkpoint_options(cls, network, *, schedule=None, **options):
        """Rebuild from :func:`~pyro_sparsegen.checkpoint.model_options`; the prior follows
        from the options, so the stored ``schedule`` is not needed."""
        return cls(network, **options)

    def checkpoint_options(self):
        """Constructor arguments besides the network, noise scale and likelihood."""
        return {"encoder_hidden": list(self.encoder_hidden)}

    def annealing_state(self):
        """Training-schedule values at :attr:`iteration`, for the metrics rows."""
        return {}

    def _images(self, x, num_images):
        if x is None:
            raise ValueError(f"{type(self).__name__}.guide needs the images x")
        self._num_images(x, num_images)
        return x

    def guide(self, x=None, *, num_images=None):
        raise NotImplementedError

    def encode(self, x):
        """Deterministic codes ``z: [images, latent_dim]`` for ``x: [images, C, H, W]``."""
        raise NotImplementedError

    def loss(self):
        """The training loss, a callable ``loss(model, guide, *args, **kwargs) -> -ELBO``
        (summed over images) usable as ``pyro.infer.SVI(..., loss=model.loss())``."""
        raise NotImplementedError
