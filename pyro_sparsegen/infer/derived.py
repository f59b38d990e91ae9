"""The former name of :mod:`pyro_sparsegen.infer.transition` (and :mod:`.graph`): a deprecated
alias module, kept for one release (importing it warns)."""

import warnings

from .graph import derive, fold_constants, hoist_invariants, mismatch, outputs_close
from .transition import CHECK_EVERY, CHECK_FIRST, COMPILE_AFTER, DerivationWarning, Transition

warnings.warn("pyro_sparsegen.infer.derived is deprecated: use pyro_sparsegen.infer.transition "
              "(Dynamics is Transition)", DeprecationWarning, stacklevel=2)
Dynamics = Transition

__all__ = ["CHECK_EVERY", "CHECK_FIRST", "COMPILE_AFTER", "DerivationWarning", "Dynamics",
           "Transition", "derive", "fold_constants", "hoist_invariants", "mismatch",
           "outputs_close"]
