"""Generator networks ``g: z -> image``; both end in a sigmoid (images live in [0, 1]).

Every generator maps ``z: [..., latent_dim]`` to ``[..., C, H, W]`` and exposes
``latent_dim`` and ``image_shape``. They hold no normalisation across the batch, so images
(and replica chains) stay independent during inference.
"""

import math

from torch import nn


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
    """

    def __init__(self, latent_dim, image_shape=(1, 28, 28), hidden=(400,)):
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

    def forward(self, z):
        """z: [..., latent_dim] -> [..., C, H, W]"""
        return self.net(z).unflatten(-1, self.image_shape)

    def config(self):
        return {"type": "mlp", "latent_dim": self.latent_dim,
                "image_shape": list(self.image_shape), "hidden": list(self.hidden)}


class ConvGenerator(nn.Module):
    """A DCGAN-style generator: a linear map to a small feature map, then stride-2 transposed
    convolutions doubling the resolution, ReLU between them and a sigmoid at the end.

    Supports square images whose side is 7 or 4 times a power of two (28, 32, 64, ...), any
    channel count.

    :param int latent_dim: size of ``z``.
    :param image_shape: ``(C, H, W)`` with ``H == W``.
    :param int width: channels of the last hidden feature map (doubled at each coarser level).
    """

    def __init__(self, latent_dim, image_shape=(1, 28, 28), width=32):
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

    def forward(self, z):
        """z: [..., latent_dim] -> [..., C, H, W]"""
        lead = z.shape[:-1]
        h = self.project(z.reshape(-1, self.latent_dim))
        h = h.view(-1, self._top, self.base, self.base)
        return self.deconv(h).view(*lead, *self.image_shape)

    def config(self):
        return {"type": "conv", "latent_dim": self.latent_dim,
                "image_shape": list(self.image_shape), "width": self.width}


def build_network(config):
    """Rebuild a generator from its ``config()`` dict (used by checkpoints)."""
    config = dict(config)
    kind = config.pop("type", None)
    if kind == "mlp":
        return MLPGenerator(config["latent_dim"], tuple(config["image_shape"]),
                            tuple(config.get("hidden", (400,))))
    if kind == "conv":
        return ConvGenerator(config["latent_dim"], tuple(config["image_shape"]),
                             config.get("width", 32))
    raise ValueError(f"unknown network type {kind!r} (expected 'mlp' or 'conv')")
