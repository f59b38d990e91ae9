"""The kernel's transition bound to one target, eager or through a graph derived from it.

Running a Pyro model through its effect handlers at every Langevin step costs a fixed amount
of Python per call (on a CPU about as much as a small generator's step). So the first time a
target runs, its initial evaluation and its whole transition (proposal, the model's log
density and gradient, accept/reject) are traced once with ``make_fx`` into an aten graph:
the model's own computation, replayed without Python. Tensors the model reads from outside
(parameters, the package's annealed prior buffers) stay live references, so optimiser steps
and schedule moves are seen; what the model computes from constants alone is folded once, and
what it computes from those live tensors alone (a weight parametrisation, the prior's
constants) is hoisted out of the step and computed once per run.

The derived graph is checked against the model's trace (the source of truth) when it is
built, at two random points (value and gradient, relative 1e-6 in float64, 1e-4 in float32)
and for one transition, and again at the start of the first runs and then of every 8th run:
a model that reads Python state that changes between calls (which a graph cannot see) is
caught there; the run is redone through the trace, the graph is derived again, and after a
second disagreement the target runs through the trace for good, with one warning. A model
that cannot be traced runs through the trace as well (one warning saying why).

With ``compile=True`` the derived graphs are compiled by ``torch.compile`` once a target has
run three times (a one-off batch shape is not worth a compile); random numbers are inputs, so
a compiled step draws exactly what the eager one draws.
"""

import warnings

import pyro
import torch
from torch.utils import _pytree as pytree

from . import tempering
from .core import langevin_init, langevin_step
from .graph import derive, hoist_invariants, mismatch, outputs_close
from ..errors import first_line
from ..runtime import forked_rng

CHECK_FIRST, CHECK_EVERY = 3, 8
COMPILE_AFTER = 3  # runs of a target before compile=True compiles it (one-off shapes stay)


class DerivationWarning(UserWarning):
    """The derived graph of a model's density could not be used; it runs through Pyro."""


def _split_args(args, kwargs):
    """``(tensors, rebuild)``: the tensor leaves of the model's arguments, and a function
    putting new tensors of the same structure back."""
    leaves, spec = pytree.tree_flatten((tuple(args), dict(kwargs)))
    slots = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]

    def rebuild(tensors):
        filled = list(leaves)
        for i, t in zip(slots, tensors):
            filled[i] = t
        return pytree.tree_unflatten(filled, spec)

    return [leaves[i] for i in slots], rebuild


class Transition:
    """The kernel's transition bound to one target under fixed settings (formerly
    ``Dynamics``): ``init(position, global_position) -> state`` and ``step(state, randoms,
    step_size, global_step_size) -> (state, info)``, eager through the model's trace or through
    a graph derived from it (see the module's text).

    Tempered (``options.tempered``): ``init(position, global_position, beta)`` with ``beta``
    ``[*R, N]`` the rows' inverse temperatures, and ``step(..., ladder=Ladder)`` ends with a
    swap between adjacent levels (:func:`~pyro_sparsegen.infer.tempering.swap_levels`),
    returning ``(state, info, swap_info)``. The betas are inputs of the derived graph: a new
    ladder needs no new graph.

    :param target: a :class:`~pyro_sparsegen.infer.target.ModelTarget` (or potential target).
    :param options: :class:`~pyro_sparsegen.infer.core.Options`.
    :param bool derive: derive a graph of the dynamics (else always run through the trace).
    :param bool compile: compile the derived transition with ``torch.compile``.
    """

    def __init__(self, target, options, *, derive=True, compile=False):
        self.target, self.options = target, options
        self.want_graph = derive or compile
        self.compile = compile
        self.graph_init = self.graph_step = None
        self._refresh = None  # recomputes the step graph's hoisted invariants (once per run)
        self.failed = None  # why the graph is not used (a string), once given up
        self.runs = 0
        self.mismatches = 0
        self.compiled = False
        self.compile_seconds = None
        self._tensors, self._rebuild = _split_args(target.args, target.kwargs)
        self._curvature = options.precondition
        self._crossing = options.crossing
        self._layout = None  # which random inputs the derived step graph was traced with

    # -- the model's own evaluation (the source of truth) --
    def density_fn(self, args, kwargs, beta=None):
        """``density(position, global_position) -> Density`` through the model's trace
        (tempered at ``beta`` ``[*R, N]`` when given)."""
        target = self.target
        extra = {} if beta is None else {"beta": beta}

        def density(position, global_position):
            return target.density(position, global_position, args, kwargs,
                                  curvature=self._curvature, crossing=self._crossing, **extra)

        return density

    def bind(self, args, kwargs):
        """Use these model arguments (same structure and shapes) from now on."""
        self._tensors, self._rebuild = _split_args(args, kwargs)

    def bound_density(self):
        """The target's density function at the bound arguments: ``(position,
        global_position) -> Density``."""
        return self.density_fn(*self._rebuild(self._tensors))
    def _eager_init(self, position, global_position, tensors, beta=None):
        args, kwargs = self._rebuild(tensors)
        with pyro.validation_enabled(False):
            return langevin_init(position, self.density_fn(args, kwargs, beta), global_position)

    def _eager_step(self, state, randoms, step_size, global_step_size, tensors, ladder=None):
        args, kwargs = self._rebuild(tensors)
        beta = None if ladder is None else \
            tempering.rows(ladder.beta, state.position.shape[0] // ladder.beta.shape[0])
        if ladder is not None and ladder.prior is not None:
            fresh, fresh_rows = tempering.prior_refresh(state.position, ladder)
            randoms = randoms._replace(fresh=fresh, fresh_rows=fresh_rows)
        with pyro.validation_enabled(False):
            state, info = langevin_step(state, self.density_fn(args, kwargs, beta), step_size,
                                        randoms, self.options,
                                        global_step_size=global_step_size)
        if ladder is None:
            return state, info
        state, swap = tempering.swap_levels(state, ladder)
        return state, info, swap

    def _init_inputs(self, position, global_position, tensors, beta):
        return (position, global_position, tensors) + ((beta,) if self.options.tempered else ())

    def _step_inputs(self, state, randoms, step_size, global_step_size, tensors, ladder):
        return (state, randoms, step_size, global_step_size, tensors) + \
            ((ladder,) if self.options.tempered else ())

    # -- derivation --
    @property
    def using_graph(self):
        return self.graph_step is not None

    def _give_up(self, why):
        self.graph_init = self.graph_step = None
        if self.failed is None:
            warnings.warn(f"ShortRunLangevin: {why}; evaluating the model through Pyro at "
                          "every step (slower)", DerivationWarning, stacklevel=4)
        self.failed = why

    def _derive(self, state, randoms, step_size, global_step_size, ladder):
        tensors = list(self._tensors)
        beta = None if ladder is None else \
            tempering.rows(ladder.beta, state.position.shape[0] // ladder.beta.shape[0])
        try:
            model = getattr(self.target, "model", None)
            graph_init = derive(self._eager_init, self._init_inputs(
                state.position, state.global_position, tensors, beta), model)
            graph_step = derive(self._eager_step, self._step_inputs(
                state, randoms, step_size, global_step_size, tensors, ladder), model)
            graph_step, refresh = hoist_invariants(graph_step)
        except Exception as e:  # noqa: BLE001 - any tracing failure means: run eagerly
            self._give_up(f"the model's density could not be traced into a graph "
                          f"({type(e).__name__}: {first_line(e)[:160]})")
            return
        if not self._validate(graph_init, graph_step, state, randoms, step_size,
                              global_step_size, tensors, ladder, beta):
            self._give_up("the graph traced from the model disagrees with the model's own "
                          "trace (the model's density depends on Python state a graph cannot "
                          "see)")
            return
        self.graph_init, self.graph_step, self._refresh = graph_init, graph_step, refresh
        self.runs = 0  # a fresh graph is checked on its first runs again
        self.compiled = False

    def _compile(self, state, randoms, step_size, global_step_size, tensors, ladder):
        """``torch.compile`` the derived graphs (shapes fixed: a new batch size is a new
        target); the schedule's moves are in-place updates of live tensors, no recompile."""
        import time

        # on a CPU the C++ wrapper saves the Python call of every fused kernel
        options = {"cpp_wrapper": True} if state.position.device.type == "cpu" else {}
        tick = time.perf_counter()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # torch's compiler stack imports deprecated parts of itself: not the user's
                warnings.simplefilter("ignore", DeprecationWarning)
                init = torch.compile(self.graph_init, dynamic=False, options=options)
                step = torch.compile(self.graph_step, dynamic=False, options=options)
                beta = None if ladder is None else tempering.rows(
                    ladder.beta, state.position.shape[0] // ladder.beta.shape[0])
                init(*self._init_inputs(state.position, state.global_position, tensors, beta))
                step(*self._step_inputs(state, randoms, step_size, global_step_size, tensors,
                                        ladder))
        except Exception as e:  # noqa: BLE001 - any compiler failure means: run the graph
            warnings.warn(f"ShortRunLangevin(compile=True): the step could not be compiled "
                          f"({type(e).__name__}: {first_line(e)[:160]}); running the derived "
                          "graph uncompiled",
                          DerivationWarning, stacklevel=5)
            return
        self.compile_seconds = time.perf_counter() - tick
        self.graph_init, self.graph_step = init, step
        self.compiled = True

    def _validate(self, graph_init, graph_step, state, randoms, step_size, global_step_size,
                  tensors, ladder=None, beta=None):
        """The graph against the trace at two random points and for one transition."""
        model = getattr(self.target, "model", None)
        with forked_rng(state.position, model), torch.no_grad():
            torch.manual_seed(0)
            for _ in range(2):
                position = state.position + torch.randn_like(state.position)
                g = state.global_position + torch.randn_like(state.global_position)
                inputs = self._init_inputs(position, g, tensors, beta)
                if not outputs_close(graph_init(*inputs), self._eager_init(*inputs)):
                    return False
            inputs = self._step_inputs(state, randoms, step_size, global_step_size, tensors,
                                       ladder)
            return outputs_close(graph_step(*inputs), self._eager_step(*inputs))

    # -- use --
    def init(self, position, global_position, beta=None):
        """The state at a position (tempered at ``beta`` ``[*R, N]``)."""
        inputs = self._init_inputs(position, global_position, self._tensors, beta)
        if self.graph_init is not None:
            with torch.no_grad():
                return self.graph_init(*inputs)
        return self._eager_init(*inputs)

    def refresh(self):
        """Recompute what the step graph hoisted from the parameters (see
        :func:`hoist_invariants`): at the start of every run, after any optimiser step."""
        if self.graph_step is not None and self._refresh is not None:
            self._refresh()

    def begin(self, position, global_position, beta=None):
        """The state a run starts from, and ``mismatch`` (a device bool, or ``None`` when this
        run is not checked): on the first runs of a derived graph and then every 8th, its
        initial evaluation is compared with the model's own."""
        self.runs += 1
        self.refresh()
        checked = self.graph_init is not None and (
            self.runs <= CHECK_FIRST or self.runs % CHECK_EVERY == 0)
        if not checked:
            return self.init(position, global_position, beta), None
        inputs = self._init_inputs(position, global_position, self._tensors, beta)
        eager = self._eager_init(*inputs)
        with torch.no_grad():
            graph = self.graph_init(*inputs)
        return eager, mismatch(graph, eager)

    def start(self, position, global_position, beta=None):
        """The state a run starts from, with :meth:`begin`'s check acted on at once: when the
        derived graph disagrees with the model's trace it is derived again (see
        :meth:`mismatch_found`) and the state is the model's own evaluation. A checked run reads
        one flag from the device; the others read nothing."""
        state, flag = self.begin(position, global_position, beta)
        if flag is not None and bool(flag):
            self.mismatch_found()
            state = self.init(position, global_position, beta)
        return state

    def mismatch_found(self):
        """The graph disagreed with the trace during a run: derive it again, and after a
        second time give up on it."""
        self.mismatches += 1
        self.graph_init = self.graph_step = None
        if self.mismatches >= 2:
            self._give_up("the graph derived from the model went stale twice (the model's "
                          "density depends on Python state that changes between calls)")

    def step(self, state, randoms, step_size, global_step_size, ladder=None):
        """One transition (and, tempered, one swap step); see the class's text. A graph is
        traced for one layout of the random inputs (which moves are on): another layout (e.g.
        the pair move's learned pick arriving mid-run) is traced anew."""
        layout = tuple(r is None for r in randoms) + \
            (None if ladder is None else ladder.prior is None,)
        if self.graph_step is not None and layout != self._layout:
            self.graph_init = self.graph_step = None
            self.compiled = False
        if self.graph_step is None and self.want_graph and self.failed is None:
            self._layout = layout
            self._derive(state, randoms, step_size, global_step_size, ladder)
        elif self.compile and not self.compiled and self.graph_step is not None and \
                self.runs >= COMPILE_AFTER:
            self.compiled = True  # tried once, whatever happens
            self._compile(state, randoms, step_size, global_step_size, self._tensors, ladder)
        inputs = self._step_inputs(state, randoms, step_size, global_step_size, self._tensors,
                                   ladder)
        if self.graph_step is not None:
            with torch.no_grad():
                return self.graph_step(*inputs)
        return self._eager_step(*inputs)
