"""The kernel's dynamics bound to one target, eager or through a graph derived from it.

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
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree as pytree

from .core import langevin_init, langevin_step
from ..runtime import forked_rng

CHECK_FIRST, CHECK_EVERY = 3, 8
COMPILE_AFTER = 3  # runs of a target before compile=True compiles it (one-off shapes stay)


class DerivationWarning(UserWarning):
    """The derived graph of a model's density could not be used; it runs through Pyro."""


def _one_line(error):
    """``Type: first line of the message`` (at most 160 characters of it)."""
    text = str(error).strip()
    message = text.splitlines()[0] if text else type(error).__name__
    return f"{type(error).__name__}: {message[:160]}"


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


def _impure(target):
    tags = getattr(target, "tags", ())
    schema = getattr(target, "_schema", None)
    return torch.Tag.nondeterministic_seeded in tags or (schema is not None and schema.is_mutable)


def fold_constants(gm):
    """Evaluate once what depends only on constants created inside the traced function
    (``lift_fresh_copy`` of a literal, ``full``, ``arange``, ...) and not on inputs, live
    attributes or random draws; returns ``gm`` (recompiled)."""
    graph = gm.graph
    lift = torch.ops.aten.lift_fresh_copy.default
    foldable, values = set(), {}
    for node in graph.nodes:
        if node.op != "call_function" or _impure(node.target):
            continue
        inputs = node.all_input_nodes
        fresh = node.target is lift and inputs and inputs[0].op == "get_attr"
        if fresh or all(n in foldable for n in inputs):
            foldable.add(node)
    if not foldable:
        return gm

    def value(arg):
        return values[arg] if isinstance(arg, torch.fx.Node) else arg

    frontier = [n for n in foldable if any(u not in foldable for u in n.users)]
    if not frontier:
        return gm
    with torch.no_grad():
        for node in graph.nodes:
            if node not in foldable:
                continue
            if node.target is lift:
                values[node] = node.target(getattr(gm, node.args[0].target))
                continue
            args = pytree.tree_map(value, node.args)
            kwargs = pytree.tree_map(value, node.kwargs)
            values[node] = node.target(*args, **kwargs)
    for i, node in enumerate(frontier):
        result = values[node]
        if not isinstance(result, torch.Tensor):
            continue
        name = f"_folded_{i}"
        gm.register_buffer(name, result, persistent=False)
        with graph.inserting_before(node):
            attr = graph.get_attr(name)
        node.replace_all_uses_with(attr)
    graph.eliminate_dead_code()
    gm.recompile()
    return gm


def derive(fn, example_inputs, model=None):
    """``make_fx`` of ``fn`` at ``example_inputs`` (a tuple of pytrees), dead code removed and
    constants folded. The trace runs the function once, under a forked RNG (of the devices
    of the inputs and of ``model``'s parameters)."""
    def traced(*inputs):  # a plain function (make_fx reads the signature of methods wrongly)
        return fn(*inputs)

    with forked_rng(example_inputs, model), pyro.validation_enabled(False):
        gm = make_fx(traced)(*example_inputs)
    _drop_detach(gm.graph)
    _drop_identities(gm.graph)
    _merge_attributes(gm.graph)
    try:  # common subexpressions: e.g. a distribution's terms computed by two of its methods
        from torch._functorch.compile_utils import fx_graph_cse

        graph = fx_graph_cse(gm.graph)
        graph._codegen = gm.graph._codegen  # keeps the pytree calling convention
        gm.graph = graph
    except Exception:  # noqa: BLE001 - an optimisation only
        pass
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return fold_constants(gm)


def _is_view(target):
    schema = getattr(target, "_schema", None)
    return schema is not None and any(r.alias_info is not None for r in schema.returns)


def hoist_invariants(gm):
    """Split off what a transition computes from live attributes alone (the generator's
    parameters, the prior's buffers): e.g. a weight parametrisation, a softplus of a learned
    scale. Those values cannot change within a run, so they are computed once per run by the
    returned ``refresh()`` (into buffers of ``gm`` that replace them in its graph) instead of
    at every step. Views stay in the graph (they cost nothing and a copy of one would).

    :return: ``(gm, refresh)``; ``refresh`` is ``None`` when there is nothing to hoist.
    """
    graph = gm.graph
    invariant = set()
    for node in graph.nodes:
        if node.op == "get_attr" or node.op == "call_function" and not _impure(node.target) and \
                not _is_view(node.target) and node.all_input_nodes and \
                all(n in invariant for n in node.all_input_nodes):
            invariant.add(node)
    # (a value the step returns is not hoisted: the caller would hold a buffer that the next
    # run's refresh overwrites)
    frontier = [n for n in graph.nodes if n in invariant and n.op == "call_function" and
                isinstance(n.meta.get("val"), torch.Tensor) and
                any(u not in invariant for u in n.users) and
                not any(u.op == "output" for u in n.users)]
    if not frontier:
        return gm, None
    prelude, copies = torch.fx.Graph(), {}
    for node in graph.nodes:
        if node in invariant:
            copies[node] = prelude.node_copy(node, lambda n: copies[n])
    prelude.output(tuple(copies[n] for n in frontier))
    prelude.eliminate_dead_code()
    compute = torch.fx.GraphModule(gm, prelude)  # the same live attributes as gm
    with torch.no_grad():
        values = compute()
    buffers = []
    for i, (node, value) in enumerate(zip(frontier, values)):
        name = f"_hoisted_{i}"
        gm.register_buffer(name, value.clone(), persistent=False)
        buffers.append(getattr(gm, name))
        with graph.inserting_before(node):
            attr = graph.get_attr(name)
        attr.meta = dict(node.meta)
        node.replace_all_uses_with(attr)
    graph.eliminate_dead_code()
    gm.recompile()

    def refresh():
        with torch.no_grad():
            for buffer, value in zip(buffers, compute()):
                buffer.copy_(value)

    return gm, refresh


def _merge_attributes(graph):
    """One ``get_attr`` node per attribute (a trace loads a constant anew at every use, which
    hides the repeated computations on it from common-subexpression elimination)."""
    first = {}
    for node in list(graph.nodes):
        if node.op != "get_attr":
            continue
        if node.target in first:
            node.replace_all_uses_with(first[node.target])
            graph.erase_node(node)
        else:
            first[node.target] = node


def _drop_detach(graph):
    """``detach`` is the identity in the graph's replay (it runs without autograd)."""
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.detach.default:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


_aten = torch.ops.aten
_VIEWS = {_aten.expand.default, _aten.view.default, _aten.reshape.default,
          _aten._unsafe_view.default, _aten.alias.default}
_NEUTRAL = {_aten.mul.Tensor: 1, _aten.mul.Scalar: 1, _aten.div.Tensor: 1, _aten.div.Scalar: 1,
            _aten.add.Tensor: 0, _aten.add.Scalar: 0, _aten.sub.Tensor: 0, _aten.sub.Scalar: 0,
            _aten.pow.Tensor_Scalar: 1}


def _drop_identities(graph):
    """Remove what a trace leaves that does nothing: views to the same shape, ``x * 1``,
    ``x + 0``, ``x ** 1`` (same shape and dtype as ``x``)."""
    for node in list(graph.nodes):
        if node.op != "call_function" or not node.args or \
                not isinstance(node.args[0], torch.fx.Node):
            continue
        source, out = node.args[0].meta.get("val"), node.meta.get("val")
        if not (isinstance(source, torch.Tensor) and isinstance(out, torch.Tensor)) or \
                source.shape != out.shape or source.dtype != out.dtype:
            continue
        neutral = _NEUTRAL.get(node.target)
        if node.target in _VIEWS or (
                neutral is not None and len(node.args) == 2 and not node.kwargs and
                isinstance(node.args[1], (int, float)) and node.args[1] == neutral):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


def _tolerance(dtype):
    return 1e-6 if dtype == torch.float64 else 1e-4


def outputs_close(a, b):
    """Whether two pytrees of tensors agree (relative to each tensor's magnitude)."""
    la, lb = pytree.tree_leaves(a), pytree.tree_leaves(b)
    if len(la) != len(lb):
        return False
    for x, y in zip(la, lb):
        if not isinstance(x, torch.Tensor):
            if x != y:
                return False
            continue
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.dtype == torch.bool or not x.is_floating_point():
            if not torch.equal(x, y):
                return False
            continue
        rtol = _tolerance(x.dtype)
        scale = y.abs().max() if y.numel() else 0.0
        finite = torch.isfinite(y)
        if not torch.equal(finite, torch.isfinite(x)):
            return False
        if not torch.allclose(x[finite], y[finite], rtol=rtol, atol=rtol * float(scale) + 1e-30):
            return False
    return True


def _mismatch(a, b):
    """A device tensor: ``True`` where two pytrees disagree (no host read)."""
    bad = None
    for x, y in zip(pytree.tree_leaves(a), pytree.tree_leaves(b)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            continue
        rtol = _tolerance(x.dtype)
        diff = (x - y).abs() > rtol * (y.abs() + y.abs().amax() if y.numel() else 0.0) + 1e-30
        differ = (diff & torch.isfinite(y)).any() | (torch.isfinite(x) != torch.isfinite(y)).any()
        bad = differ if bad is None else bad | differ
    return torch.zeros((), dtype=torch.bool) if bad is None else bad


class Dynamics:
    """``init(position, glob) -> state`` and ``step(state, randoms, step_size,
    global_step_size) -> (state, info)`` of one target under fixed settings.

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

    # -- the model's own evaluation (the source of truth) --
    def density_fn(self, args, kwargs):
        target = self.target

        def density(position, glob):
            return target.density(position, glob, args, kwargs, curvature=self._curvature,
                                  crossing=self._crossing)

        return density

    def bind(self, args, kwargs):
        """Use these model arguments (same structure and shapes) from now on."""
        self._tensors, self._rebuild = _split_args(args, kwargs)

    def _eager_init(self, position, glob, tensors):
        args, kwargs = self._rebuild(tensors)
        with pyro.validation_enabled(False):
            return langevin_init(position, self.density_fn(args, kwargs), glob)

    def _eager_step(self, state, randoms, step_size, global_step_size, tensors):
        args, kwargs = self._rebuild(tensors)
        with pyro.validation_enabled(False):
            return langevin_step(state, self.density_fn(args, kwargs), step_size, randoms,
                                 self.options, global_step_size=global_step_size)

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

    def _derive(self, state, randoms, step_size, global_step_size):
        tensors = list(self._tensors)
        try:
            model = getattr(self.target, "model", None)
            graph_init = derive(self._eager_init, (state.position, state.glob, tensors), model)
            graph_step = derive(self._eager_step,
                                (state, randoms, step_size, global_step_size, tensors), model)
            graph_step, refresh = hoist_invariants(graph_step)
        except Exception as e:  # noqa: BLE001 - any tracing failure means: run eagerly
            self._give_up(f"the model's density could not be traced into a graph "
                          f"({_one_line(e)})")
            return
        if not self._validate(graph_init, graph_step, state, randoms, step_size,
                              global_step_size, tensors):
            self._give_up("the graph traced from the model disagrees with the model's own "
                          "trace (the model's density depends on Python state a graph cannot "
                          "see)")
            return
        self.graph_init, self.graph_step, self._refresh = graph_init, graph_step, refresh
        self.runs = 0  # a fresh graph is checked on its first runs again
        self.compiled = False

    def _compile(self, state, randoms, step_size, global_step_size, tensors):
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
                init(state.position, state.glob, tensors)
                step(state, randoms, step_size, global_step_size, tensors)
        except Exception as e:  # noqa: BLE001 - any compiler failure means: run the graph
            warnings.warn(f"ShortRunLangevin(compile=True): the step could not be compiled "
                          f"({_one_line(e)}); running the derived graph uncompiled",
                          DerivationWarning, stacklevel=5)
            return
        self.compile_seconds = time.perf_counter() - tick
        self.graph_init, self.graph_step = init, step
        self.compiled = True

    def _validate(self, graph_init, graph_step, state, randoms, step_size, global_step_size,
                  tensors):
        """The graph against the trace at two random points and for one transition."""
        model = getattr(self.target, "model", None)
        with forked_rng(state.position, model), torch.no_grad():
            torch.manual_seed(0)
            for _ in range(2):
                position = state.position + torch.randn_like(state.position)
                glob = state.glob + torch.randn_like(state.glob)
                if not outputs_close(graph_init(position, glob, tensors),
                                     self._eager_init(position, glob, tensors)):
                    return False
            inputs = (state, randoms, step_size, global_step_size, tensors)
            return outputs_close(graph_step(*inputs), self._eager_step(*inputs))

    # -- use --
    def init(self, position, glob):
        if self.graph_init is not None:
            with torch.no_grad():
                return self.graph_init(position, glob, self._tensors)
        return self._eager_init(position, glob, self._tensors)

    def refresh(self):
        """Recompute what the step graph hoisted from the parameters (see
        :func:`hoist_invariants`): at the start of every run, after any optimiser step."""
        if self.graph_step is not None and self._refresh is not None:
            self._refresh()

    def begin(self, position, glob):
        """The state a run starts from, and ``mismatch`` (a device bool, or ``None`` when this
        run is not checked): on the first runs of a derived graph and then every 8th, its
        initial evaluation is compared with the model's own."""
        self.runs += 1
        self.refresh()
        checked = self.graph_init is not None and (
            self.runs <= CHECK_FIRST or self.runs % CHECK_EVERY == 0)
        if not checked:
            return self.init(position, glob), None
        eager = self._eager_init(position, glob, self._tensors)
        with torch.no_grad():
            graph = self.graph_init(position, glob, self._tensors)
        return eager, _mismatch(graph, eager)

    def mismatch_found(self):
        """The graph disagreed with the trace during a run: derive it again, and after a
        second time give up on it."""
        self.mismatches += 1
        self.graph_init = self.graph_step = None
        if self.mismatches >= 2:
            self._give_up("the graph derived from the model went stale twice (the model's "
                          "density depends on Python state that changes between calls)")

    def step(self, state, randoms, step_size, global_step_size):
        if self.graph_step is None and self.want_graph and self.failed is None:
            self._derive(state, randoms, step_size, global_step_size)
        elif self.compile and not self.compiled and self.graph_step is not None and \
                self.runs >= COMPILE_AFTER:
            self.compiled = True  # tried once, whatever happens
            self._compile(state, randoms, step_size, global_step_size, self._tensors)
        if self.graph_step is not None:
            with torch.no_grad():
                return self.graph_step(state, randoms, step_size, global_step_size,
                                       self._tensors)
        return self._eager_step(state, randoms, step_size, global_step_size, self._tensors)
