"""pyro_sparsegen: sparse latent generator models with spike-and-slab priors, in Pyro.

The public API: the prior (:class:`SpikeAndSlab`, :mod:`schedules`, :class:`Annealed`), the
generator networks, the Pyro model (:class:`SparseGenerator`, or any Pyro function following
the generator convention, :class:`FunctionModel`), inference (:class:`ShortRunLangevin`,
:mod:`infer`), learning (:class:`ABP`; :class:`TrainConfig`, :func:`train`, :func:`load_run`),
data (:func:`load_data`), codes (:func:`encode_dataset`), the ArviZ analyses
(:mod:`diagnostics`, :mod:`plots`) and the paper's protocols (:mod:`evaluation`).
"""

__version__ = "0.2.0"

from . import checkpoint, diagnostics, infer, plots, schedules
from .abp import ABP, StepResult, TrainingError
from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig, likelihood_scale
from .data import DataError, ImageData, load_data
from .distributions import SpikeAndSlab
from .encoding import encode_dataset, load_codes, save_codes
from .infer import LangevinInfo, LangevinState, ShortRunLangevin, langevin_init, langevin_step
from .model import FunctionModel, SparseGenerator
from .networks import ConvGenerator, MLPGenerator
from .schedules import Annealed
from . import training
from .training import Encoder, evaluate, load_run, make_encoder, train

from . import baselines, evaluation

# the names of the next layout (the run-layer rebuild makes the old ones deprecated aliases)
CodeInference, make_inference, infer_codes = Encoder, make_encoder, encode_dataset

__all__ = [
    "ABP", "Annealed", "CheckpointError", "CodeInference", "ConfigError", "ConvGenerator",
    "DataError", "Encoder", "FunctionModel", "ImageData", "LangevinInfo", "LangevinState",
    "MLPGenerator", "ShortRunLangevin", "SparseGenerator", "SpikeAndSlab", "StepResult",
    "TrainConfig", "TrainingError", "baselines", "checkpoint", "diagnostics", "encode_dataset",
    "evaluate", "evaluation", "infer", "infer_codes", "langevin_init", "langevin_step",
    "likelihood_scale", "load_codes", "load_data", "load_run", "make_encoder",
    "make_inference", "plots", "save_codes", "schedules", "train", "training",
]
