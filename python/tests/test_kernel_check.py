"""The kernel check with Python kernels: a right one passes, a wrong one is caught and shrunk,
a raising one fails its cases without stopping the check."""

import numpy as np
import pytest

import qnumeric as qn


def numpy_quantize(inputs):
    x = inputs["x"].astype(np.float32)
    inv = np.float32(1.0) / np.float32(inputs["output_scale"])
    return np.clip(np.rint(x * inv) + inputs["output_zero_point"], 0, 255).astype(np.uint8)


def numpy_linear(inputs):
    x = inputs["x"].astype(np.float32)
    xs, xz = inputs["x_scale"], inputs["x_zero_point"]
    w = inputs["weight"].astype(np.float32)
    if "weight_scales" in inputs:
        ws = np.array(inputs["weight_scales"], np.float32)[:, None]
        wz = np.array(inputs["weight_zero_points"], np.float32)[:, None]
    else:
        ws, wz = inputs["weight_scale"], inputs["weight_zero_point"]
    xf = (x - xz) * np.float32(xs)
    wf = (w - wz) * ws
    y = xf.astype(np.float64) @ wf.T.astype(np.float64)
    if inputs["bias"] is not None:
        y = y + inputs["bias"]
    y = y.astype(np.float32)
    return np.clip(np.rint(y / np.float32(inputs["output_scale"])) + inputs["output_zero_point"], 0, 255).astype(np.uint8)


def test_a_right_quantize_kernel_is_exact():
    r = qn.check_kernel(numpy_quantize, op="quantize")
    assert r.verdict(max_abs_diff=0, max_off_by_one_fraction=0, max_abs_mean_diff=0) == "exact"
    assert r.exact and r.first_failure is None and r.minimal_case is None
    assert "total" in str(r)


def test_a_float_linear_kernel_is_within_tolerance():
    r = qn.check_kernel(numpy_linear, op="linear", cases_per_kind=4)
    assert r.verdict() in ("exact", "within-tolerance"), str(r)


def test_an_off_by_one_kernel_is_caught_and_shrunk():
    def wrong(inputs):
        q = numpy_quantize(inputs).astype(np.int32)
        return np.clip(q + (q % 7 == 0), 0, 255).astype(np.uint8)

    r = qn.check_kernel(wrong, op="quantize")
    assert r.verdict(max_abs_diff=0, max_off_by_one_fraction=0, max_abs_mean_diff=0) == "mismatch"
    assert not r.exact
    assert r.minimal_case is not None and "KernelInputs::Quantize" in r.minimal_case
    m = r.minimal
    np.testing.assert_array_equal(wrong(m["inputs"]), m["kernel"])
    np.testing.assert_array_equal(numpy_quantize(m["inputs"]), m["reference"])
    d = r.to_dict()
    assert d["total"]["values"] > 0


def test_a_raising_or_wrong_typed_kernel_fails_its_cases():
    def raising(inputs):
        raise RuntimeError("backend refused")

    r = qn.check_kernel(raising, op="quantize", cases_per_kind=2)
    assert r.verdict() == "mismatch"
    assert "backend refused" in r.first_failure

    r = qn.check_kernel(lambda i: numpy_quantize(i).astype(np.int16), op="quantize", cases_per_kind=2)
    assert r.verdict() == "mismatch" and "uint8" in r.first_failure


def test_keyboard_interrupt_propagates():
    def interrupt(inputs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        qn.check_kernel(interrupt, op="quantize", cases_per_kind=1)


def test_bad_arguments():
    with pytest.raises(qn.RangeOverflowError):
        qn.check_kernel(numpy_quantize, op="quantize", cases_per_kind=10**15)
    with pytest.raises(qn.FormatError):
        qn.check_kernel(numpy_quantize, op="matmul")
    with pytest.raises(qn.ParameterError):
        qn.check_kernel(numpy_quantize, op="quantize").verdict(max_off_by_one_fraction=2.0)
