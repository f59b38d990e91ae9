"""Generator networks ``g: z -> image``; both end in a sigmoid (images live in [0, 1]).

Every generator maps ``z: [..., latent_dim]`` to ``[..., C, H, W]`` and exposes
``latent_dim`` and ``image_shape``. They hold no normalisation across the batch, so images
(and replica chains) stay independent during inference.
"""

import math

import torch
from torch import nn
from torch.nn.utils import parametrize


class ColumnNorm(nn.Module):
    """A weight parametrisation: every column (the weights out of one input) has the norm
    ``norm``. On a generator's first layer it fixes the scale of each latent coordinate's
    effect on the image, so that the code's scale is identifiable: MAP learning can no longer
    grow the weights and shrink the codes into the prior's spike."""

    def __init__(self, norm):
        super().__init__()
        self.norm = float(norm)

    def forward(self, weight):
        out = weight * (self.norm / weight.norm(dim=0, keepdim=True).clamp(min=1e-12))
        # Adam drives the entries of a dead hidden unit's row towards zero geometrically (the
        # projection makes their gradient proportional to them): flush those below float's
        # normal range to exactly 0, or every matmul with them takes the CPU's slow denormal
        # path (3.6x slower steps measured)
        return out.masked_fill(out.abs() < torch.finfo(out.dtype).tiny, 0.0)


def _normalise_columns(linear, norm):
    if norm is not None:
        if not (isinstance(norm, (int, float)) and not isinstance(norm, bool) and
                math.isfinite(norm) and norm > 0):
            raise ValueError(f"input_norm must be a positive number or None, got {norm!r}")
        parametrize.register_parametrization(linear, "weight", ColumnNorm(norm))


def _check_sizes(latent_dim, image_shape):
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
    image_shape = tuple(image_shape)
    if len(image_shape) != 3 or not all(isinstance(s, int) and s > 0 for s in image_shape):
        raise ValueError(f"image_shape must be (channels, height, width), got {image_shape!r}")
    return image_shape


class MLPGenerator(nn.Module):
    """The authors' fully connected generator ``z -> hidden (ReLU) ... -> C*H*W (sigmoid)``.

    :param int latent_dim: size of ``z``.
    :param image_shape: ``(C, H, W)``.
    :param hidden: widths of the hidden layers (``(400,)`` for MNIST, ``(2000, 2000)`` for
        SVHN and CelebA in the paper).
    :param input_norm: if given, the norm of every latent coordinate's weights in the first
        layer (:class:`ColumnNorm`).
    """

    def __init__(self, latent_dim, image_shape=(1, 28, 28), hidden=(400,), input_norm=None):
        super().__init__()
        self.image_shape = _check_sizes(latent_dim, image_shape)
        self.latent_dim = latent_dim
        hidden = tuple(hidden)
        if not all(isinstance(h, int) and h > 0 for h in hidden):
            raise ValueError(f"hidden widths must be positive integers, got {hidden!r}")
        self.hidden = hidden
        layers, width = [], latent_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers += [nn.Linear(width, math.prod(self.image_shape)), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.input_norm = None if input_norm is None else float(input_norm)
        _normalise_columns(self.net[0], input_norm)

    def forward(self, z):
        """z: [..., latent_dim] -> [..., C, H, W]"""
        return self.net(z).unflatten(-1, self.image_shape)

    def config(self):
        return {"type": "mlp", "latent_dim": self.latent_dim,
                "image_shape": list(self.image_shape), "hidden": list(self.hidden),
                "input_norm": self.input_norm}


class ConvGenerator(nn.Module):
    """A DCGAN-style generator: a linear map to a small feature map, then stride-2 transposed
    convolutions doubling the resolution, ReLU between them and a sigmoid at the end.

    Supports square images whose side is 7 or 4 times a power of two (28, 32, 64, ...), any
    channel count.

    :param int latent_dim: size of ``z``.
    :param image_shape: ``(C, H, W)`` with ``H == W``.
    :param int width: channels of the last hidden feature map (doubled at each coarser level).
    :param input_norm: as for :class:`MLPGenerator`, on the first (linear) layer.
    """

    def __init__(self, latent_dim, image_shape=(1, 28, 28), width=32, input_norm=None):
        super().__init__()
        self.image_shape = _check_sizes(latent_dim, image_shape)
        self.latent_dim = latent_dim
        channels, height, side = self.image_shape
        if height != side:
            raise ValueError(f"ConvGenerator needs square images, got {height}x{side}")
        base, levels = side, 0
        while base % 2 == 0 and base > 7:
            base, levels = base // 2, levels + 1
        if base not in (4, 7) or levels == 0:
            raise ValueError(f"ConvGenerator supports sides 4 or 7 times a power of two "
                             f"(28, 32, 64, ...), got {side}")
        self.width, self.base, self.levels = width, base, levels
        top = width * 2 ** (levels - 1)
        self.project = nn.Sequential(nn.Linear(latent_dim, top * base * base), nn.ReLU())
        layers, c = [], top
        for level in range(levels):
            last = level == levels - 1
            out = channels if last else c // 2
            layers.append(nn.ConvTranspose2d(c, out, 4, stride=2, padding=1))
            layers.append(nn.Sigmoid() if last else nn.ReLU())
            c = out
        self.deconv = nn.Sequential(*layers)
        self._top = top
        self.input_norm = None if input_norm is None else float(input_norm)
        _normalise_columns(self.project[0], input_norm)

    def forward(self, z):
        """z: [..., latent_dim] -> [..., C, H, W]"""
        lead = z.shape[:-1]
        h = self.project(z.reshape(-1, self.latent_dim))
        h = h.view(-1, self._top, self.base, self.base)
        return self.deconv(h).view(*lead, *self.image_shape)

    def config(self):
        return {"type": "conv", "latent_dim": self.latent_dim,
                "image_shape": list(self.image_shape), "width": self.width,
                "input_norm": self.input_norm}


def build_network(config):
    """Rebuild a generator from its ``config()`` dict (used by checkpoints)."""
    config = dict(config)
    kind = config.pop("type", None)
    if kind == "mlp":
        return MLPGenerator(config["latent_dim"], tuple(config["image_shape"]),
                            tuple(config.get("hidden", (400,))), config.get("input_norm"))
    if kind == "conv":
        return ConvGenerator(config["latent_dim"], tuple(config["image_shape"]),
                             config.get("width", 32), config.get("input_norm"))
    raise ValueError(f"unknown network type {kind!r} (expected 'mlp' or 'conv')")
