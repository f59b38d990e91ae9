"""Graphs derived from a function by ``make_fx``, made lean, and compared with their source.

:func:`derive` traces a function of tensors into an aten graph (dead code removed, common
subexpressions merged, constants folded by :func:`fold_constants`); :func:`hoist_invariants`
moves what depends on live attributes alone out of the step into a per-run ``refresh``;
:func:`outputs_close` and :func:`mismatch` compare a graph's outputs with its source's (the
latter as a device flag, without a host read).
"""

import pyro
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree as pytree

from ..runtime import forked_rng


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


def mismatch(a, b):
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
