"""Inference: short-run Langevin dynamics for any Pyro model with continuous latents.

One file, one job:

- :mod:`.core` — the functional core: :class:`LangevinState`, :class:`Density`,
  :func:`langevin_init`, :func:`langevin_step` (the chains' step, the spike/slab crossing
  move, the global block's step), pure functions on batched tensors;
- :mod:`.sites` — a Pyro model's sites: which are latent, their log densities, their
  dependencies, the choice of the chain plate;
- :mod:`.target` — a Pyro model as the core's density: site layout, transforms and Jacobians,
  the chain plate, the global block (:class:`ModelTarget`);
- :mod:`.transition` — the transition bound to a target (:class:`Transition`), eager through
  the model's trace or through a graph derived from it once (:mod:`.graph`) and checked
  against it, optionally compiled (``infer.derived`` and ``Dynamics`` are its former names);
- :mod:`.adaptation` — vectorised dual-averaging step-size adaptation;
- :mod:`.tempering` — replica exchange: the swap step, the ladder's adaptation, round trips, the
  stepping-stone evidence; :mod:`.chains` — the replica chains' run (``sample_chains``);
- :mod:`.kernel` — :class:`ShortRunLangevin` and the fast calls; :mod:`.contract` — its
  ``MCMCKernel`` side.
"""

from .adaptation import DualAveraging, dual_averaging_final, dual_averaging_init, \
    dual_averaging_update
from .core import (Density, LangevinInfo, LangevinState, Options, Randoms, density_from_log_prob,
                   draw_randoms, langevin_init, langevin_step)
from .transition import DerivationWarning, Transition
from .kernel import RunStats, ShortRunLangevin
from .target import ModelTarget, PotentialTarget



def __getattr__(name):
    """``Dynamics``, the former name of :class:`Transition`: a deprecated alias."""
    from ..errors import moved

    return moved(__name__, name, {"Dynamics": (f"{__name__}.transition", "Transition")})


__all__ = ["Density", "DerivationWarning", "DualAveraging", "LangevinInfo",
           "LangevinState", "ModelTarget", "Options", "PotentialTarget", "Randoms", "RunStats",
           "ShortRunLangevin", "Transition", "density_from_log_prob", "draw_randoms",
           "dual_averaging_final", "dual_averaging_init", "dual_averaging_update", "langevin_init",
           "langevin_step"]
