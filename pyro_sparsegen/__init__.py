"""pyro_sparsegen: sparse latent generator models with spike-and-slab priors, in Pyro.

The public API: the prior (:class:`SpikeAndSlab`, :mod:`schedules`, :class:`Annealed`), the
generator networks, the Pyro model (:class:`SparseGenerator`, or any Pyro function following
the generator convention, :class:`FunctionModel`), inference (:class:`ShortRunLangevin`,
:mod:`infer`), learning (:class:`ABP`; :class:`TrainConfig`, :func:`train`, :func:`load_run`),
data (:func:`load_data`), codes (:class:`CodeInference`, :func:`make_inference`,
:func:`infer_codes`), the ArviZ analyses (:mod:`diagnostics`, :mod:`plots`) and the paper's
protocols (:mod:`evaluation`).
"""

from .version import VERSION as __version__

from . import checkpoint, diagnostics, infer, plots, schedules
from .abp import ABP, StepResult, TrainingError
from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig, likelihood_scale
from .data import DataError, ImageData, load_data
from .distributions import SpikeAndSlab
from .encoding import CodeInference, infer_codes, load_codes, make_inference, save_codes
from .infer import LangevinInfo, LangevinState, ShortRunLangevin, langevin_init, langevin_step
from .model import FunctionModel, SparseGenerator
from .networks import ConvGenerator, MLPGenerator
from .schedules import Annealed
from . import builders, loop, monitor, runtime, training
from .builders import load_run
from .monitor import evaluate
from .training import train

from . import baselines, evaluation

# the names of the previous layout: deprecated aliases for one release
_MOVED = {"Encoder": ("pyro_sparsegen.encoding", "CodeInference"),
          "make_encoder": ("pyro_sparsegen.encoding", "make_inference"),
          "encode_dataset": ("pyro_sparsegen.encoding", "infer_codes")}


def __getattr__(name):
    from .errors import moved

    return moved(__name__, name, _MOVED)


__all__ = [
    "ABP", "Annealed", "CheckpointError", "CodeInference", "ConfigError", "ConvGenerator",
    "DataError", "FunctionModel", "ImageData", "LangevinInfo", "LangevinState",
    "MLPGenerator", "ShortRunLangevin", "SparseGenerator", "SpikeAndSlab", "StepResult",
    "TrainConfig", "TrainingError", "__version__", "baselines", "builders", "checkpoint",
    "diagnostics", "evaluate", "evaluation", "infer", "infer_codes",
    "langevin_init", "langevin_step", "likelihood_scale", "load_codes", "load_data", "load_run",
    "loop", "make_inference", "monitor", "plots", "runtime", "save_codes",
    "schedules", "train", "training",
]
