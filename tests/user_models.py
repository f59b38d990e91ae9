"""A user's model module for the tests: factories NAME(image_shape, config) -> Pyro model."""

import pyro
import pyro.distributions as dist

import pyro_sparsegen as psg


def sparse_mlp(image_shape, config):
    """The README's plain Pyro function: the package's generator written by hand."""
    d, device = config.network.latent_dim, psg.runtime.resolve_device(config.device)
    decoder = psg.MLPGenerator(d, image_shape, hidden=config.network.hidden,
                               input_norm=config.network.input_norm).to(device)
    annealed = psg.Annealed(config.build_schedule(), device=device)
    sigma = psg.likelihood_scale(config.network.noise_scale, image_shape)

    def model(x=None, num_images=None):
        pyro.module("decoder", decoder)
        w, slab, spike = annealed
        n = x.shape[0] if x is not None else num_images
        with pyro.plate("images", n):
            z = pyro.sample("z", psg.SpikeAndSlab(w, slab, spike).expand([d]).to_event(1))
            return pyro.sample("x", dist.Normal(decoder(z), sigma).to_event(3), obs=x)

    return model


NOT_A_MODEL = 42


def returns_nothing(image_shape, config):
    return None
