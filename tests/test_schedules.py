"""Tests for pyro_sparsegen.schedules (annealing the prior over training iterations)."""

import json
import math

import pytest

from pyro_sparsegen import schedules
from pyro_sparsegen.schedules import Curve, PriorParams, Schedule

KINDS = ("linear", "cosine", "exponential")


# ---- curves ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("initial,final", [(1.0, 0.01), (0.1, 1.0)])
def test_curve_endpoints(kind, initial, final):
    c = Curve(kind, initial, final, start=10, stop=110)
    for t in (0, 5, 10):
        assert c(t) == initial
    for t in (110, 111, 10_000):
        assert c(t) == final


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("initial,final", [(1.0, 0.01), (0.1, 1.0)])
def test_curve_is_monotone(kind, initial, final):
    c = Curve(kind, initial, final, start=3, stop=53)
    values = [c(t) for t in range(0, 60)]
    steps = [b - a for a, b in zip(values, values[1:])]
    if final < initial:
        assert all(s <= 0 for s in steps)
    else:
        assert all(s >= 0 for s in steps)
    assert len(set(values[3:54])) == 51  # strictly moving during the transition
    assert all(min(initial, final) <= v <= max(initial, final) for v in values)


def test_curve_shapes_at_the_midpoint():
    initial, final = 1.0, 0.01
    assert Curve("linear", initial, final, 0, 100)(50) == pytest.approx((initial + final) / 2)
    assert Curve("cosine", initial, final, 0, 100)(50) == pytest.approx((initial + final) / 2)
    assert Curve("exponential", initial, final, 0, 100)(50) == pytest.approx(
        math.sqrt(initial * final))
    # a quarter of the way: cosine is still near the start, exponential already far down
    assert Curve("linear", initial, final, 0, 100)(25) == pytest.approx(0.7525)
    assert Curve("cosine", initial, final, 0, 100)(25) == pytest.approx(
        final + 0.5 * (initial - final) * (1 + math.cos(math.pi / 4)))
    assert Curve("exponential", initial, final, 0, 100)(25) == pytest.approx(0.01 ** 0.25)


def test_constant_curve_ignores_final():
    c = Curve("constant", 0.3, 0.9, start=0, stop=100)
    assert c.final == 0.3
    assert {c(t) for t in (0, 50, 1000)} == {0.3}


def test_zero_length_transition_jumps():
    c = Curve("linear", 1.0, 0.1, start=5, stop=5)
    assert c(5) == 1.0 and c(6) == 0.1


# ---- schedules -------------------------------------------------------------------------------


def test_schedule_returns_prior_params():
    s = Schedule(Curve("linear", 1.0, 0.1, 0, 10), 2.0, Curve("cosine", 1.0, 0.1, 0, 10))
    p = s(0)
    assert isinstance(p, PriorParams)
    assert p == (1.0, 2.0, 1.0)
    assert s(10) == (0.1, 2.0, 0.1)
    assert s(5).slab_weight == pytest.approx(0.55)
    assert s(5).spike_scale == pytest.approx(0.55)


def test_warmup_keeps_the_prior_dense_then_starts_the_curves():
    s = Schedule(Curve("linear", 0.5, 0.1, start=0, stop=10), 1.0,
                 Curve("linear", 0.4, 0.2, start=0, stop=10), warmup=20)
    for t in range(20):
        assert s(t) == (1.0, 1.0, 0.4)
    assert s(20) == (0.5, 1.0, 0.4)  # curves are evaluated at iteration - warmup
    assert s(25).slab_weight == pytest.approx(0.3)
    assert s(25).spike_scale == pytest.approx(0.3)
    assert s(30) == (0.1, 1.0, 0.2)
    assert s.end == 30


def test_authors_preset():
    warmup, decay, floor = 7, 0.033, 0.001
    s = schedules.authors(warmup, decay_per_iteration=decay, floor=floor)
    assert all(s(t) == (1.0, 1.0, 0.1) for t in range(warmup + 1))
    weights = [s(t).slab_weight for t in range(warmup, warmup + 60)]
    reached = math.ceil((1 - floor) / decay)
    # linear decay, about `decay` per iteration, reaching the floor and staying there
    steps = [a - b for a, b in zip(weights, weights[1:reached + 1])]
    assert all(s_ == pytest.approx(steps[0], rel=1e-9) for s_ in steps)
    assert 0 < steps[0] <= decay and steps[0] == pytest.approx(decay, rel=0.05)
    assert weights[reached] == pytest.approx(floor)
    assert all(w == pytest.approx(floor) for w in weights[reached:])
    assert weights[reached - 1] > floor
    assert all(s(t).spike_scale == 0.1 and s(t).slab_scale == 1.0 for t in range(0, 100, 7))


def test_constant_and_dense_presets():
    c = schedules.constant(slab_weight=0.2, slab_scale=1.5, spike_scale=0.05)
    assert c(0) == c(10_000) == (0.2, 1.5, 0.05)
    assert not c.is_dense
    assert schedules.constant().is_dense  # w = 1
    assert schedules.dense(2.0)(123) == (1.0, 2.0, 2.0)
    assert schedules.dense().is_dense


def test_spike_shrink_preset():
    s = schedules.spike_shrink(slab_weight=0.1, initial_spike=1.0, final_spike=0.1,
                               iterations=100)
    spikes = [s(t).spike_scale for t in range(0, 120)]
    assert spikes[0] == 1.0 and spikes[100] == pytest.approx(0.1) and spikes[-1] == 0.1
    assert all(b <= a for a, b in zip(spikes, spikes[1:]))
    assert {s(t).slab_weight for t in range(0, 120, 10)} == {0.1}
    assert {s(t).slab_scale for t in range(0, 120, 10)} == {1.0}
    assert not s.is_dense


def test_is_dense():
    assert Schedule(1.0, 1.0, 0.1).is_dense
    assert Schedule(0.1, 0.5, 0.5).is_dense
    assert not Schedule(Curve("linear", 1.0, 0.1, 0, 10), 1.0, 0.1).is_dense


# ---- serialisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", [
    schedules.authors(20),
    schedules.constant(0.3),
    schedules.spike_shrink(kind="cosine", warmup=5),
    Schedule(Curve("exponential", 1.0, 0.01, 3, 40), Curve("linear", 1.0, 2.0, 0, 10),
             Curve("cosine", 0.5, 0.05, 2, 30), warmup=4),
])
def test_dict_round_trip(schedule):
    data = schedule.to_dict()
    data = json.loads(json.dumps(data))  # a plain dict of plain values (as in a checkpoint)
    again = Schedule.from_dict(data)
    assert again == schedule
    assert [again(t) for t in range(0, 80, 3)] == [schedule(t) for t in range(0, 80, 3)]


def test_from_dict_accepts_numbers_for_constants():
    s = Schedule.from_dict({"slab_weight": 0.2, "spike_scale": 0.05})
    assert s(0) == (0.2, 1.0, 0.05)


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="linear", initial=1.0, final=0.1, start=10, stop=5), "before its start"),
    (dict(kind="sigmoid", initial=1.0, final=0.1, start=0, stop=5), "kind"),
    (dict(kind="exponential", initial=1.0, final=0.0, start=0, stop=5), "positive"),
    (dict(kind="linear", initial=math.nan, final=0.1, start=0, stop=5), "finite"),
    (dict(kind="linear", initial=1.0, final=math.inf, start=0, stop=5), "finite"),
    (dict(kind="linear", initial=1.0, final=0.1, start=-1, stop=5), "start"),
    (dict(kind="linear", initial=1.0, final=0.1, start=0, stop=2.5), "stop"),
    (dict(kind="linear", initial=1.0, final=0.1, start=True, stop=5), "start"),
])
def test_curve_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Curve(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(slab_weight=1.5), "slab_weight"),
    (dict(slab_weight=-0.1), "slab_weight"),
    (dict(slab_weight=Curve("linear", 1.0, -0.5, 0, 10)), "slab_weight"),
    (dict(slab_scale=0.0), "slab_scale"),
    (dict(spike_scale=-0.1), "spike_scale"),
    (dict(spike_scale=Curve("linear", 1.0, 0.0, 0, 10)), "spike_scale"),
    (dict(slab_weight="0.5"), "slab_weight"),
    (dict(warmup=-1), "warmup"),
    (dict(warmup=1.5), "warmup"),
])
def test_schedule_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Schedule(**kwargs)


@pytest.mark.parametrize("iteration", [-1, 1.5, True, math.nan])
def test_bad_iteration(iteration):
    with pytest.raises(ValueError, match="iteration"):
        schedules.constant()(iteration)


@pytest.mark.parametrize("data,match", [
    ([1.0, 1.0, 0.1], "dict"),
    ({"slab_weight": 0.5, "temperature": 2.0}, "unknown"),
    ({"slab_weight": {"kind": "linear", "initial": 1.0, "rate": 0.1}}, "unknown"),
    ({"slab_weight": {"kind": "linear", "initial": 1.0, "final": 0.1, "start": 5, "stop": 1}},
     "before its start"),
])
def test_from_dict_validation(data, match):
    with pytest.raises(ValueError, match=match):
        Schedule.from_dict(data)


@pytest.mark.parametrize("kwargs,match", [
    (dict(warmup_iterations=10, decay_per_iteration=0.0), "decay_per_iteration"),
    (dict(warmup_iterations=10, floor=1.0), "floor"),
    (dict(warmup_iterations=10, floor=-0.1), "floor"),
    (dict(warmup_iterations=-3), "warmup"),
])
def test_authors_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        schedules.authors(**kwargs)


# ---- the default preset's shape: dense share and slab scale ----------------------------------


def test_the_default_preset_takes_a_dense_share_and_a_slab_scale():
    from pyro_sparsegen.config import TrainConfig

    config = TrainConfig()
    config.optim.epochs = 10
    plain = config.build_schedule(40)  # 400 iterations
    assert plain.warmup == 120 and plain(0).slab_scale == 1.0  # 30 % dense by default
    v1 = TrainConfig.recipe("v1")
    v1.optim.epochs = 10
    assert v1.build_schedule(40).warmup == 40  # the first release's 10 %
    config.prior.dense_fraction, config.prior.slab_scale = 0.4, 1.5
    s = config.validate().build_schedule(40)
    assert s.warmup == 160  # 40 % of the run dense, then the same 50 % of annealing
    assert all(s(t) == (1.0, 1.5, 1.5) for t in (0, 60, 159))
    assert s(160).slab_weight == 1.0 and s(161).slab_weight < 1.0
    assert s.end == 160 + 200 and s(399) == pytest.approx((0.8, 1.5, 0.04))
    assert {s(t).slab_scale for t in range(0, 400, 13)} == {1.5}
    # the spike narrows from the slab's own scale
    assert s(170).spike_scale < 1.5 and s(170).spike_scale > plain(130).spike_scale


@pytest.mark.parametrize("changes, message", [
    ({"dense_fraction": 0.6}, "dense_fraction must lie in"),
    ({"dense_fraction": -0.1}, "dense_fraction must lie in"),
    ({"slab_scale": 0.0}, "slab_scale must be a positive"),
    ({"slab_scale": 2.0, "preset": "authors"}, "shapes the default and v1 presets only"),
    ({"dense_fraction": 0.2, "preset": "dense"}, "shapes the default and v1 presets only"),
])
def test_the_default_preset_shape_is_checked(changes, message):
    from pyro_sparsegen.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({"prior": changes})



def test_the_preset_function_refuses_what_its_preset_cannot_take():
    from pyro_sparsegen.config import ConfigError, preset_schedule

    with pytest.raises(ConfigError, match="shape the default and v1 presets only"):
        preset_schedule("authors", 100, 10, dense_fraction=0.3)
    with pytest.raises(ConfigError, match="must exceed the final spike scale"):
        preset_schedule("default", 100, 10, slab_scale=0.03)
    assert preset_schedule("default", 100, 10, slab_scale=0.05).slab_scale(0) == 0.05
