"""Annealing schedules for the spike-and-slab prior, indexed by training iteration.

A :class:`Schedule` holds one :class:`Curve` for each prior parameter (``slab_weight``,
``slab_scale``, ``spike_scale``) and an optional warm-up during which the prior is dense
(``slab_weight = 1``). Evaluated at an iteration it returns :class:`PriorParams`.

Example::

    >>> s = Schedule(slab_weight=Curve("linear", 1.0, 0.01, start=0, stop=1000), warmup=200)
    >>> s(0).slab_weight, s(1200).slab_weight
    (1.0, 0.01)
"""

import dataclasses
import math
import numbers
import weakref
from typing import NamedTuple, Union

KINDS = ("constant", "linear", "cosine", "exponential")

# (lower bound, upper bound, lower bound included) for each prior parameter.
_RANGES = {
    "slab_weight": (0.0, 1.0, True),
    "slab_scale": (0.0, math.inf, False),
    "spike_scale": (0.0, math.inf, False),
}


class PriorParams(NamedTuple):
    slab_weight: float
    slab_scale: float
    spike_scale: float


@dataclasses.dataclass(frozen=True)
class Curve:
    """One parameter's path: ``initial`` until ``start``, ``final`` from ``stop`` on.

    :param kind: ``"constant"``, ``"linear"``, ``"cosine"`` or ``"exponential"``
        (geometric interpolation; both ends must be positive).
    :param initial: value at and before ``start``.
    :param final: value at and after ``stop`` (ignored for ``"constant"``).
    :param start: first iteration of the transition (counted after the schedule's warm-up).
    :param stop: iteration at which ``final`` is reached; ``stop >= start``.
    """

    kind: str = "constant"
    initial: float = 1.0
    final: float = None
    start: int = 0
    stop: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"curve kind must be one of {KINDS}, got {self.kind!r}")
        final = self.initial if self.final is None or self.kind == "constant" else self.final
        object.__setattr__(self, "final", float(final))
        object.__setattr__(self, "initial", float(self.initial))
        for name in ("initial", "final"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"curve {name} must be finite, got {getattr(self, name)}")
        for name in ("start", "stop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not float(value).is_integer() or value < 0:
                raise ValueError(f"curve {name} must be a non-negative integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.stop < self.start:
            raise ValueError(f"curve stop ({self.stop}) lies before its start ({self.start})")
        if self.kind == "exponential" and (self.initial <= 0 or self.final <= 0):
            raise ValueError("an exponential curve needs positive initial and final values, "
                             f"got {self.initial} and {self.final}")

    def __call__(self, iteration):
        if self.kind == "constant" or iteration <= self.start:
            return self.initial
        if iteration >= self.stop:
            return self.final
        frac = (iteration - self.start) / (self.stop - self.start)
        if self.kind == "linear":
            return self.initial + frac * (self.final - self.initial)
        if self.kind == "cosine":
            return self.final + 0.5 * (self.initial - self.final) * (1 + math.cos(math.pi * frac))
        return self.initial * (self.final / self.initial) ** frac


CurveLike = Union[Curve, float, int]


def _as_curve(name, value):
    if isinstance(value, Curve):
        curve = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        curve = Curve("constant", float(value))
    else:
        raise ValueError(f"{name} must be a number or a Curve, got {value!r}")
    low, high, closed = _RANGES[name]
    for end in (curve.initial, curve.final):
        if end > high or (end < low if closed else end <= low):
            interval = f"[{low}, {high}]" if closed else f"({low}, {high})"
            raise ValueError(f"{name} must stay in {interval}, but its curve reaches {end}")
    return curve


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The prior's parameters as a function of the training iteration.

    :param slab_weight: a :class:`Curve` or a constant.
    :param slab_scale: a :class:`Curve` or a constant.
    :param spike_scale: a :class:`Curve` or a constant.
    :param warmup: iterations at the start during which ``slab_weight`` is 1 (a dense
        Gaussian prior with the slab's scale); the curves are evaluated at
        ``iteration - warmup``.
    """

    slab_weight: CurveLike = 1.0
    slab_scale: CurveLike = 1.0
    spike_scale: CurveLike = 0.1
    warmup: int = 0

    def __post_init__(self):
        for name in _RANGES:
            object.__setattr__(self, name, _as_curve(name, getattr(self, name)))
        if isinstance(self.warmup, bool) or not float(self.warmup).is_integer() or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative integer, got {self.warmup!r}")
        object.__setattr__(self, "warmup", int(self.warmup))

    def __call__(self, iteration):
        if isinstance(iteration, bool) or not float(iteration).is_integer() or iteration < 0:
            raise ValueError(f"iteration must be a non-negative integer, got {iteration!r}")
        t = int(iteration) - self.warmup
        weight = 1.0 if t < 0 else self.slab_weight(t)
        return PriorParams(weight, self.slab_scale(max(t, 0)), self.spike_scale(max(t, 0)))

    @property
    def is_dense(self):
        """True when every iteration gives a plain Gaussian prior."""
        w, s1, s0 = self.slab_weight, self.slab_scale, self.spike_scale
        always_slab = w.initial == 1.0 and w.final == 1.0
        same = s1 == s0 or (s1.kind == s0.kind == "constant" and s1.initial == s0.initial)
        return always_slab or same

    @property
    def end(self):
        """The first iteration after which nothing changes any more."""
        return self.warmup + max(c.stop for c in (self.slab_weight, self.slab_scale,
                                                  self.spike_scale))

    def to_dict(self):
        out = {name: dataclasses.asdict(getattr(self, name)) for name in _RANGES}
        out["warmup"] = self.warmup
        return out

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise ValueError(f"a schedule must be a dict, got {type(data).__name__}")
        unknown = set(data) - set(_RANGES) - {"warmup"}
        if unknown:
            raise ValueError(f"unknown schedule keys: {sorted(unknown)}")
        kwargs = {}
        for name, value in data.items():
            if name == "warmup":
                kwargs[name] = value
            elif isinstance(value, dict):
                bad = set(value) - {f.name for f in dataclasses.fields(Curve)}
                if bad:
                    raise ValueError(f"unknown keys in curve {name!r}: {sorted(bad)}")
                kwargs[name] = Curve(**value)
            else:
                kwargs[name] = value
        return cls(**kwargs)


def constant(slab_weight=1.0, slab_scale=1.0, spike_scale=0.1):
    """A fixed prior (``slab_weight=1``: the dense Gaussian prior of classic ABP)."""
    return Schedule(slab_weight, slab_scale, spike_scale)


def dense(scale=1.0):
    """The dense N(0, scale²) prior of classic alternating back-propagation."""
    return Schedule(1.0, scale, scale)


def authors(warmup_iterations, decay_per_iteration=0.033, floor=0.001):
    """The authors' recipe: ``w = 1`` for the warm-up, then ``w`` falls linearly by
    ``decay_per_iteration`` per iteration to ``floor``; ``s_spike = 0.1``, ``s_slab = 1``."""
    if not decay_per_iteration > 0:
        raise ValueError(f"decay_per_iteration must be positive, got {decay_per_iteration}")
    if not 0 <= floor < 1:
        raise ValueError(f"floor must lie in [0, 1), got {floor}")
    stop = math.ceil((1.0 - floor) / decay_per_iteration)
    return Schedule(Curve("linear", 1.0, floor, start=0, stop=stop), 1.0, 0.1,
                    warmup=warmup_iterations)


def spike_shrink(slab_weight=0.1, initial_spike=1.0, final_spike=0.1, iterations=1000,
                 kind="exponential", warmup=0):
    """``w`` fixed, the spike narrowing from ``initial_spike`` (dense when equal to the
    slab's scale 1) to ``final_spike`` over ``iterations``."""
    return Schedule(slab_weight, 1.0, Curve(kind, initial_spike, final_spike, 0, iterations),
                    warmup=warmup)


# ------------------------------------------------------------------------------------------
# The hook through which a plain Pyro function model reads the learner's annealing position.

_POSITION = [0]
_LIVE = weakref.WeakSet()


def set_iteration(iteration):
    """Move every :class:`Annealed` to ``iteration`` (the learner calls this each step)."""
    if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral) or \
            iteration < 0:
        raise ValueError(f"iteration must be a non-negative integer, got {iteration!r}")
    _POSITION[0] = int(iteration)
    for annealed in list(_LIVE):
        annealed._refresh()


def current_iteration():
    """The learner's annealing position (a Python int: read it for logging, not inside a
    model's density — there use :class:`Annealed`, whose tensors the kernel's derived graph
    follows)."""
    return _POSITION[0]


class Annealed:
    """A schedule's prior parameters at the learner's position, as live 0-dim tensors: the
    hook a plain Pyro function model reads its annealed prior through::

        annealed = psg.schedules.Annealed(schedule)          # once, next to the model

        def model(x=None, num_images=None):
            w, slab, spike = annealed                         # tensors, moved in place
            ...

    :class:`~pyro_sparsegen.ABP` (and so :func:`~pyro_sparsegen.train`) calls
    :func:`set_iteration` after every step, which updates the tensors in place (no new
    tensors, so a graph derived from the model keeps following them).

    :attr:`ended` (a 0-dim bool tensor, live as well) turns true once the annealing has
    ended (position ≥ ``schedule.end``): the hand-over point of a learned prior, which
    selects with ``torch.where(annealed.ended, learned, w)`` (the learned value gets no
    gradient before, so an optimizer leaves it at its initial value).

    :param Schedule schedule: the annealing schedule.
    :param device, dtype: of the tensors (default: torch's defaults); :meth:`to` moves them.
    """

    def __init__(self, schedule, *, device=None, dtype=None):
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        import torch

        self.schedule = schedule
        self.state = torch.empty(3, device=device, dtype=dtype or torch.get_default_dtype())
        #: a device flag: the schedule has reached its end (no host read to know it)
        self.ended = torch.zeros((), dtype=torch.bool, device=device)
        self._refresh()
        _LIVE.add(self)

    def _refresh(self):
        import torch

        with torch.no_grad():
            for i, value in enumerate(self.schedule(_POSITION[0])):
                self.state[i].fill_(value)
            self.ended.fill_(_POSITION[0] >= self.schedule.end)

    def to(self, *args, **kwargs):
        """Move the tensors (returns ``self``; the views handed out before are stale)."""
        self.state = self.state.to(*args, **kwargs)
        device = self.state.device
        self.ended = self.ended.to(device)
        return self

    @property
    def params(self):
        """``PriorParams`` of 0-dim tensors: ``slab_weight``, ``slab_scale``, ``spike_scale``."""
        return PriorParams(self.state[0], self.state[1], self.state[2])

    def __iter__(self):
        return iter(self.params)
