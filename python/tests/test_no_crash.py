"""A seeded random sweep over the NumPy entry points: every call returns or raises a
QnumericError (or a TypeError for an argument of the wrong type); none crashes the
interpreter or raises anything else. Hostile values: NaN, infinities, zero and subnormal
scales, huge zero points, empty and zero-sized arrays, odd axes and ranges."""

import math

import numpy as np
import pytest

import qnumeric as qn

SEEDS = range(int(__import__("os").environ.get("QNUMERIC_SWEEP", "300")))

FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-45, 1e-38, 3e38, -3e38, math.inf, -math.inf, math.nan, 0.1, 255.0, 1e9]
INTS = [0, 1, -1, 127, 128, -128, 255, 256, -129, 2**31 - 1, -(2**31), 2**40, -(2**40)]
DTYPES = ["quint8", "qint8", "qint32", "uint16", "int16", "quint4", "qint4"]


def array(rng):
    ndim = int(rng.integers(0, 4))
    shape = tuple(int(rng.integers(0, 5)) for _ in range(ndim))
    a = rng.standard_normal(shape) * float(rng.choice([1e-30, 1.0, 1e3, 1e30]))
    if a.size and rng.random() < 0.3:
        a.flat[int(rng.integers(0, a.size))] = rng.choice([math.nan, math.inf, -math.inf])
    with np.errstate(over="ignore"):
        return a.astype(rng.choice([np.float32, np.float64, np.float16]))


def pick(rng, xs):
    return xs[int(rng.integers(0, len(xs)))]


def sane_or_hostile(rng, sane, hostile):
    return pick(rng, sane) if rng.random() < 0.6 else pick(rng, hostile)


def calls(rng):
    x = array(rng)
    y = array(rng) if rng.random() < 0.3 else (x + x.dtype.type(0.01)).astype(x.dtype)
    s = sane_or_hostile(rng, [0.01, 0.1, 1.0, 0.5], FLOATS)
    z = sane_or_hostile(rng, [0, 1, 10, -3], INTS)
    lo, hi = (0, 255) if rng.random() < 0.5 else (pick(rng, INTS), pick(rng, INTS))
    d = pick(rng, DTYPES)
    axis = int(rng.integers(-4, 4))
    n = int(rng.integers(0, 5))
    if x.ndim and rng.random() < 0.6:
        axis = int(rng.integers(0, x.ndim))
        n = x.shape[axis]
    scales = [sane_or_hostile(rng, [0.01, 0.1, 1.0], FLOATS) for _ in range(n)]
    zps = [int(rng.integers(-300, 300)) if rng.random() < 0.3 else 0 for _ in range(n)]
    q8 = rng.integers(0, 256, x.shape, dtype=np.uint8) if x.ndim else np.uint8(3)
    return [
        lambda: qn.quantize(x, s, z, d),
        lambda: qn.quantize(x, s, z, d, quant_min=lo, quant_max=hi),
        lambda: qn.fake_quantize(x, s, z, lo, hi),
        lambda: qn.fake_quantize_backward(x, x, s, z, lo, hi),
        lambda: qn.dequantize(q8, s, z),
        lambda: qn.quantize_per_channel(x, scales, zps, axis, d),
        lambda: qn.fake_quantize_per_channel(x, scales, zps, axis, lo, hi),
        lambda: qn.dequantize_per_channel(q8, scales, zps, axis),
        lambda: qn.choose_qparams(s, pick(rng, FLOATS), d),
        lambda: qn.sqnr(x, y),
        lambda: qn.sqnr(x, x),
        lambda: qn.mse(x, x),
        lambda: qn.cosine_similarity(x, x),
        lambda: qn.max_abs_error(x, x),
        lambda: qn.normalized_l2_error(x, x),
        lambda: observe(qn.MinMaxObserver(dtype=d, quant_min=lo, quant_max=hi), x),
        lambda: observe(qn.PerChannelMinMaxObserver(ch_axis=axis), x),
        lambda: observe(qn.HistogramObserver(bins=n), x),
        lambda: observe(qn.PercentileObserver(percentile=s), x),
        lambda: observe(qn.MseObserver(dtype=d), x),
        lambda: observe(qn.EntropyObserver(), x),
        lambda: observe(qn.FixedQParamsObserver(s, z, d), x),
        lambda: observe(qn.MinMaxObserver(averaging_constant=s), x),
        lambda: log_round_trip(x, y, rng),
        lambda: qn.QParams(s, z, d, lo, hi),
        lambda: qn.PerChannelQParams(scales, zps, axis, d),
    ]


def log_round_trip(x, y, rng):
    log = qn.NumericLog()
    mask = None
    if x.ndim >= 2 and rng.random() < 0.5:
        mask = rng.random(x.shape[:2]) < 0.7
    log.push("a", x, y, mask=mask, sample_dims=int(rng.integers(0, 4)))
    other = qn.NumericLog.from_json(log.to_json())
    other.merge(log)
    log.merge(log)
    return other.report(log).to_json()


def observe(o, x):
    o.observe(x)
    o.observe(x)
    o.merge(type(o).from_json(o.to_json()))
    return o.qparams()


@pytest.mark.parametrize("seed", SEEDS)
def test_no_call_crashes(seed):
    rng = np.random.default_rng(seed)
    for call in calls(rng):
        try:
            call()
        except (qn.QnumericError, TypeError, OverflowError):
            # OverflowError: Python's own, for an integer argument beyond 64 bits.
            pass


@pytest.mark.parametrize("seed", range(40))
def test_corrupt_dump_files_are_typed_errors(tmp_path, seed):
    import struct

    from conftest import write_safetensors

    rng = np.random.default_rng(seed)
    f, q = tmp_path / "f.safetensors", tmp_path / "q.safetensors"
    write_safetensors(f, {"a": rng.standard_normal((4, 3)).astype(np.float32)}, {"order": "a"})
    write_safetensors(q, {"a": rng.standard_normal((4, 3)).astype(np.float32)}, {"order": "a"})
    raw = bytearray(q.read_bytes())
    kind = seed % 4
    if kind == 0:  # flipped bytes anywhere
        for _ in range(int(rng.integers(1, 8))):
            raw[int(rng.integers(0, len(raw)))] ^= int(rng.integers(1, 256))
    elif kind == 1:  # truncated
        raw = raw[: int(rng.integers(0, len(raw)))]
    elif kind == 2:  # a huge header length
        raw[:8] = struct.pack("<Q", int(rng.integers(1 << 20, 1 << 62)))
    else:  # absurd shapes in the header
        text = raw.decode("latin-1").replace("[4, 3]", f"[{2**40}, {2**40}]")
        raw = bytearray(text.encode("latin-1"))
    q.write_bytes(bytes(raw))
    for call in (
        lambda: qn.compare_dumps(str(f), str(q)),
        lambda: qn.diagnose_dumps(str(f), str(q)),
        lambda: qn.DumpReader(str(f), str(q)).read("a"),
    ):
        try:
            call()
        except qn.QnumericError:
            pass
