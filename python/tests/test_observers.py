"""Observers: PyTorch's parameters, merging shards equals one pass, state through JSON and
pickle (what Dask and Ray use to move them between workers)."""

import copy
import pickle

import numpy as np
import pytest

import qnumeric as qn

RNG = np.random.default_rng(3)
BATCHES = [(RNG.standard_normal((32, 16)) * (1 + i)).astype(np.float32) for i in range(6)]

FACTORIES = {
    "minmax": lambda: qn.MinMaxObserver(),
    "minmax_reduce": lambda: qn.MinMaxObserver(reduce_range=True),
    "per_channel": lambda: qn.PerChannelMinMaxObserver(ch_axis=1),
    "histogram": lambda: qn.HistogramObserver(bins=256),
    "percentile": lambda: qn.PercentileObserver(99.9),
    "mse": lambda: qn.MseObserver(),
    "entropy": lambda: qn.EntropyObserver(),
    "fixed": lambda: qn.FixedQParamsObserver(1.0 / 256, 0),
}


def test_minmax_is_pytorchs():
    o = qn.MinMaxObserver()
    for b in BATCHES:
        o.observe(b)
    lo = min(float(b.min()) for b in BATCHES)
    hi = max(float(b.max()) for b in BATCHES)
    assert o.min_max == (pytest.approx(lo), pytest.approx(hi))
    p = o.qparams()
    expected = qn.choose_qparams(lo, hi)
    assert (p.scale, p.zero_point) == (expected.scale, expected.zero_point)


def test_moving_average():
    o = qn.MinMaxObserver(averaging_constant=0.5)
    o.observe(np.array([0.0, 2.0], np.float32))
    o.observe(np.array([0.0, 4.0], np.float32))
    assert o.min_max == (0.0, 3.0)
    assert o.name == "MovingAverageMinMaxObserver"


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_merged_shards_equal_one_pass(kind):
    whole = FACTORIES[kind]()
    for b in BATCHES:
        whole.observe(b)
    shards = [FACTORIES[kind]() for _ in range(3)]
    for i, b in enumerate(BATCHES):
        shards[i % 3].observe(b)
    merged = shards[0]
    for s in shards[1:]:
        merged.merge(s)
    if kind == "histogram":
        # PyTorch's HistogramObserver re-bins as its range grows: its merge is PyTorch's
        # approximate combine (exact only when the shards saw the same range).
        a, b = merged.qparams(), whole.qparams()
        assert a.scale == pytest.approx(b.scale, rel=0.05)
        return
    # running min/max, fixed, and the calibrators on the exact streaming histogram: the
    # merged state is the one pass's, bit for bit
    assert merged == whole
    assert merged.qparams() == whole.qparams()


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_state_round_trips(kind):
    o = FACTORIES[kind]()
    for b in BATCHES[:3]:
        o.observe(b)
    for back in (
        type(o).from_json(o.to_json()),
        pickle.loads(pickle.dumps(o)),
        copy.deepcopy(o),
        o.copy(),
    ):
        assert back == o
        assert back.qparams() == o.qparams()
    assert len(o.to_json()) < 40_000


def test_state_is_validated_on_load():
    o = qn.MinMaxObserver()
    o.observe(BATCHES[0])
    state = o.to_json()
    for bad in (state.replace('"eps":1.1920929e-7', '"eps":-1.0'), state.replace('"min_max":[', '"min_max":[9.0,9.0]] , "x":[')):
        assert bad != state
        with pytest.raises(qn.QnumericError):
            qn.MinMaxObserver.from_json(bad)


def test_merge_with_itself_does_not_crash():
    o = qn.MinMaxObserver()
    o.observe(BATCHES[0])
    before = o.qparams()
    o.merge(o)
    assert o.qparams() == before


def test_observers_accept_every_float_dtype():
    for dt in (np.float32, np.float64, np.float16):
        o = qn.HistogramObserver()
        o.observe(BATCHES[0].astype(dt))
        o.qparams()


def test_dynamic_observer_keeps_the_last_batch():
    o = qn.DynamicObserver()
    o.observe(np.array([-1.0, 1.0], np.float32))
    o.observe(np.array([0.0, 2.0], np.float32))
    assert o.qparams() == qn.choose_qparams(0.0, 2.0)
