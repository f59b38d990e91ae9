"""Tests for pyro_sparsegen.networks (the generators g: z -> image)."""

import pytest
import torch
from torch import nn

from pyro_sparsegen import ConvGenerator, MLPGenerator
from pyro_sparsegen.networks import build_network

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)]


def _make(kind, latent_dim, shape):
    if kind == "mlp":
        return MLPGenerator(latent_dim, shape, hidden=(32,))
    return ConvGenerator(latent_dim, shape, width=8)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("lead", [(), (5,), (2, 3)])
def test_output_shape_and_range(float64, kind, shape, lead):
    torch.manual_seed(0)
    net = _make(kind, 6, shape)
    assert net.latent_dim == 6
    assert tuple(net.image_shape) == shape
    out = net(torch.randn(*lead, 6))
    assert out.shape == (*lead, *shape)
    assert out.dtype == torch.float64
    assert ((out > 0) & (out < 1)).all()


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_images_are_independent_across_the_batch(float64, kind):
    # one chain per image: an image's output must not depend on the other images in its batch
    torch.manual_seed(0)
    net = _make(kind, 4, (1, 28, 28))
    z = torch.randn(7, 4)
    batched = net(z)
    for i in range(7):
        torch.testing.assert_close(net(z[i:i + 1])[0], batched[i], rtol=1e-12, atol=1e-12)
    # and the output depends on z
    assert not torch.allclose(batched[0], batched[1])


def test_authors_mlp_architecture():
    net = MLPGenerator(100)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(100, 400), (400, 784)]
    assert isinstance(list(net.modules())[-1], nn.Sigmoid)
    svhn = MLPGenerator(100, (3, 32, 32), hidden=(2000, 2000))
    linears = [m for m in svhn.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (100, 2000), (2000, 2000), (2000, 3072)]


@pytest.mark.parametrize("shape,levels", [((1, 8, 8), 1), ((1, 28, 28), 2), ((3, 32, 32), 3),
                                          ((3, 64, 64), 4)])
def test_conv_uses_transposed_convolutions(shape, levels):
    net = ConvGenerator(16, shape)
    deconvs = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == levels
    assert deconvs[-1].out_channels == shape[0]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_config_round_trip(float64, kind):
    torch.manual_seed(0)
    net = _make(kind, 5, (3, 32, 32))
    again = build_network(net.config())
    assert type(again) is type(net)
    assert again.config() == net.config()
    again.load_state_dict(net.state_dict())
    z = torch.randn(2, 5)
    torch.testing.assert_close(again(z), net(z))


@pytest.mark.parametrize("factory,match", [
    (lambda: MLPGenerator(0), "latent_dim"),
    (lambda: MLPGenerator(True), "latent_dim"),
    (lambda: MLPGenerator(4, (28, 28)), "image_shape"),
    (lambda: MLPGenerator(4, (1, 0, 28)), "image_shape"),
    (lambda: MLPGenerator(4, hidden=(0,)), "hidden"),
    (lambda: ConvGenerator(4, (1, 28, 32)), "square"),
    (lambda: ConvGenerator(4, (1, 30, 30)), "sides"),
    (lambda: ConvGenerator(4, (1, 7, 7)), "sides"),
    (lambda: build_network({"type": "vae"}), "unknown network type"),
])
def test_validation(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()
