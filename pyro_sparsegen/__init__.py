"""pyro_sparsegen: sparse latent generator models with spike-and-slab priors, in Pyro."""

__version__ = "0.1.0"

from . import schedules
from .distributions import SpikeAndSlab
from .kernels import ShortRunLangevin, langevin_init, langevin_step
from .model import SparseGenerator
from .networks import ConvGenerator, MLPGenerator

__all__ = [
    "ConvGenerator", "MLPGenerator", "ShortRunLangevin", "SparseGenerator", "SpikeAndSlab",
    "langevin_init", "langevin_step", "schedules",
]
