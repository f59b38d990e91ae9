"""pyro_sparsegen: sparse latent generator models with spike-and-slab priors, in Pyro.

The public API: the prior (:class:`SpikeAndSlab`, :mod:`schedules`), the generator networks,
the Pyro model (:class:`SparseGenerator`), the inference kernel (:class:`ShortRunLangevin`),
training (:class:`TrainConfig`, :func:`train`, :func:`load_run`), data (:func:`load_data`),
codes (:func:`encode_dataset`) and the ArviZ analyses (:mod:`diagnostics`, :mod:`plots`).
"""

__version__ = "0.1.0"

from . import checkpoint, diagnostics, infer, plots, schedules
from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig
from .data import DataError, ImageData, load_data
from .distributions import SpikeAndSlab
from .encoding import encode_dataset, load_codes, save_codes
from .infer import LangevinInfo, LangevinState, ShortRunLangevin, langevin_init, langevin_step
from .model import SparseGenerator
from .networks import ConvGenerator, MLPGenerator
from .training import Encoder, TrainingError, evaluate, load_run, make_encoder, train

from . import baselines  # noqa: E402  (builds on the modules above)

__all__ = [
    "CheckpointError", "ConfigError", "baselines", "ConvGenerator", "DataError", "Encoder", "ImageData",
    "LangevinInfo", "LangevinState", "MLPGenerator", "ShortRunLangevin", "SparseGenerator",
    "SpikeAndSlab", "TrainConfig", "TrainingError", "checkpoint", "diagnostics", "infer",
    "encode_dataset", "evaluate", "langevin_init", "langevin_step", "load_codes", "load_data",
    "load_run", "make_encoder", "plots", "save_codes", "schedules", "train",
]
