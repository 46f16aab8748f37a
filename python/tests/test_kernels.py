"""Quantize / dequantize / fake-quantize against a NumPy statement of PyTorch's semantics."""

import numpy as np
import pytest

import qnumeric as qn

RNG = np.random.default_rng(7)


def ref_quantize(x, scale, zp, lo, hi):
    inv = np.float32(1.0) / np.float32(scale)
    return np.clip(np.rint(x.astype(np.float32) * inv) + zp, lo, hi)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_quantize_matches_the_reference_formula(dtype):
    x = (RNG.standard_normal((64, 33)) * 3).astype(dtype)
    q = qn.quantize(x, 0.02, 128)
    assert q.dtype == np.uint8 and q.shape == x.shape
    np.testing.assert_array_equal(q, ref_quantize(x, 0.02, 128, 0, 255).astype(np.uint8))


@pytest.mark.parametrize(
    "dtype,npdtype,lo,hi",
    [("qint8", np.int8, -128, 127), ("qint32", np.int32, -(2**31), 2**31 - 1), ("int16", np.int16, -32768, 32767), ("uint16", np.uint16, 0, 65535)],
)
def test_quantize_storage_follows_the_dtype(dtype, npdtype, lo, hi):
    x = (RNG.standard_normal(1000) * 50).astype(np.float32)
    q = qn.quantize(x, 0.1, 0, dtype)
    assert q.dtype == npdtype
    np.testing.assert_array_equal(q, ref_quantize(x, 0.1, 0, lo, hi).astype(npdtype))


def test_ties_to_even_saturating_to_the_storage_range_as_pytorch():
    # PyTorch's quantize_per_tensor saturates to the dtype's storage range, whatever range
    # the parameters were chosen for; fake_quantize clamps to quant_min..quant_max.
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 100.0, -100.0, 1000.0], np.float32)
    q = qn.quantize(x, 1.0, 0, "qint8", quant_min=-3, quant_max=3)
    np.testing.assert_array_equal(q, np.array([0, 2, 2, 0, -2, 100, -100, 127], np.int8))
    f = qn.fake_quantize(x, 1.0, 0, -3, 3)
    np.testing.assert_array_equal(f, np.array([0, 2, 2, 0, -2, 3, -3, 3], np.float32))


def test_strided_and_fortran_views_are_read_in_place():
    x = (RNG.standard_normal((40, 50)) * 2).astype(np.float32)
    for v in (x[::2, 1::3], x.T, np.asfortranarray(x)):
        np.testing.assert_array_equal(qn.quantize(v, 0.05, 100), ref_quantize(v, 0.05, 100, 0, 255).astype(np.uint8))


def test_dequantize_round_trip_and_dtype_inference():
    q = RNG.integers(0, 256, (17, 9), dtype=np.uint8)
    d = qn.dequantize(q, 0.5, 10)
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d, (q.astype(np.float32) - 10) * np.float32(0.5))
    s = RNG.integers(-128, 128, 50, dtype=np.int8)
    np.testing.assert_array_equal(qn.dequantize(s, 0.25, -3), (s.astype(np.float32) + 3) * np.float32(0.25))


def test_fake_quantize_keeps_the_dtype_and_equals_dequantize_of_quantize():
    x = (RNG.standard_normal((8, 128)) * 4).astype(np.float32)
    f = qn.fake_quantize(x, 0.03, 120, 0, 255)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f, qn.dequantize(qn.quantize(x, 0.03, 120), 0.03, 120))
    assert qn.fake_quantize(x.astype(np.float64), 0.03, 120).dtype == np.float64
    assert qn.fake_quantize(x.astype(np.float16), 0.03, 120).dtype == np.float16


def test_fake_quantize_backward_is_straight_through_inside_the_range():
    x = np.array([-10.0, -1.0, 0.0, 1.0, 10.0], np.float32)
    dy = np.ones_like(x)
    g = qn.fake_quantize_backward(x, dy, 0.1, 0, -20, 20)
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 0])


def test_per_channel_matches_per_tensor_on_each_channel():
    x = (RNG.standard_normal((6, 10, 3)) * 2).astype(np.float32)
    scales = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    zps = [0, 1, -1, 2, -2, 3, -3, 4, -4, 5]
    q = qn.quantize_per_channel(x, scales, zps, axis=1)
    assert q.dtype == np.int8
    f = qn.fake_quantize_per_channel(x, scales, zps, axis=1)
    d = qn.dequantize_per_channel(q, scales, zps, axis=1)
    for c in range(10):
        np.testing.assert_array_equal(q[:, c], qn.quantize(np.ascontiguousarray(x[:, c]), scales[c], zps[c], "qint8"))
        np.testing.assert_array_equal(f[:, c], d[:, c])


def test_choose_qparams_is_pytorchs():
    p = qn.choose_qparams(-1.0, 3.0)
    assert p.dtype == "quint8" and (p.quant_min, p.quant_max) == (0, 255)
    assert p.scale == pytest.approx(4.0 / 255.0, rel=1e-7)
    assert p.zero_point == 64
    s = qn.choose_qparams(-1.0, 3.0, "qint8", "per_tensor_symmetric")
    assert s.zero_point == 0 and s.scale == pytest.approx(3.0 / 127.5, rel=1e-6)
    r = qn.choose_qparams(0.0, 1.0, reduce_range=True)
    assert (r.quant_min, r.quant_max) == (0, 127)


def test_qparams_objects():
    p = qn.QParams(0.5, 3, "qint8")
    assert (p.scale, p.zero_point, p.dtype) == (0.5, 3, "qint8")
    import pickle

    assert pickle.loads(pickle.dumps(p)) == p
    pc = qn.PerChannelQParams([0.1, 0.2], [0, 1], axis=1)
    assert len(pc) == 2 and pc.axis == 1 and pc.zero_points == [0, 1]


def test_metrics_against_numpy():
    x = RNG.standard_normal(10_000)
    y = x + RNG.standard_normal(10_000) * 0.01
    noise = np.sum((x - y) ** 2)
    assert qn.sqnr(x, y) == pytest.approx(10 * np.log10(np.sum(x**2) / noise), rel=1e-12)
    assert qn.mse(x, y) == pytest.approx(noise / x.size, rel=1e-12)
    assert qn.max_abs_error(x, y) == pytest.approx(np.max(np.abs(x - y)))
    assert qn.cosine_similarity(x, y) == pytest.approx(x @ y / np.linalg.norm(x) / np.linalg.norm(y), rel=1e-12)
    assert qn.normalized_l2_error(x, y) == pytest.approx(np.linalg.norm(x - y) / np.linalg.norm(x), rel=1e-12)
    assert qn.sqnr(x, x) == float("inf")


def test_large_arrays_release_the_gil():
    import threading

    x = RNG.standard_normal(2_000_000).astype(np.float32)
    out = {}

    def work(i):
        out[i] = qn.fake_quantize(x, 0.01, 128)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    np.testing.assert_array_equal(out[0], out[1])
