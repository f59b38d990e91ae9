"""The former name of :mod:`pyro_sparsegen.infer.transition` (and :mod:`.graph`), kept so that
existing imports work: ``Dynamics`` is :class:`~pyro_sparsegen.infer.transition.Transition`."""

from .graph import derive, fold_constants, hoist_invariants, mismatch, outputs_close
from .transition import CHECK_EVERY, CHECK_FIRST, COMPILE_AFTER, DerivationWarning, Transition

Dynamics = Transition

__all__ = ["CHECK_EVERY", "CHECK_FIRST", "COMPILE_AFTER", "DerivationWarning", "Dynamics",
           "Transition", "derive", "fold_constants", "hoist_invariants", "mismatch",
           "outputs_close"]
