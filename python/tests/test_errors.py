"""Every exception class, raised by the call a user would make, with the crate's message."""

import numpy as np
import pytest

import qnumeric as qn

X = np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6)


def test_every_class_is_a_qnumeric_error_and_a_value_error():
    for name in [
        "NonFiniteError", "InvalidScaleError", "ZeroPointError", "QuantRangeError", "AxisError",
        "ShapeError", "UnsupportedError", "ParameterError", "EmptyError", "NotFoundError",
        "IncompatibleError", "FormatError", "RangeOverflowError", "DumpIOError",
    ]:
        cls = getattr(qn, name)
        assert issubclass(cls, qn.QnumericError) and issubclass(cls, ValueError)


@pytest.mark.parametrize(
    "call,cls,text",
    [
        (lambda: qn.quantize(np.array([1.0, np.nan], np.float32), 0.1, 0), qn.NonFiniteError, "NaN in the input at flat index 1"),
        (lambda: qn.sqnr(np.array([1.0, np.inf]), np.array([1.0, 2.0])), qn.NonFiniteError, "infinite"),
        (lambda: qn.quantize(X, 0.0, 0), qn.InvalidScaleError, "invalid scale 0"),
        (lambda: qn.quantize(X, -1.0, 0), qn.InvalidScaleError, "invalid scale"),
        (lambda: qn.quantize(X, float("nan"), 0), qn.InvalidScaleError, "invalid scale"),
        (lambda: qn.quantize(X, 1e-40, 0), qn.InvalidScaleError, "invalid scale"),
        (lambda: qn.quantize(X, 0.1, 300), qn.ZeroPointError, "zero point 300 outside"),
        (lambda: qn.fake_quantize(X, 0.1, 0, 10, 5), qn.QuantRangeError, "invalid quantization range"),
        (lambda: qn.quantize(X, 0.1, 0, "qint8", quant_min=-500), qn.QuantRangeError, "invalid quantization range"),
        (lambda: qn.quantize_per_channel(X, [0.1] * 6, [0] * 6, axis=5), qn.AxisError, "axis 5 out of range"),
        (lambda: qn.quantize_per_channel(X, [0.1] * 5, [0] * 5, axis=1), qn.ShapeError, "expected 6"),
        (lambda: qn.sqnr(X, X[:, :3].copy()), qn.ShapeError, "shape mismatch"),
        (lambda: qn.sqnr(np.zeros(0, np.float32), np.zeros(0, np.float32)), qn.EmptyError, "empty input"),
        (lambda: qn.MinMaxObserver().qparams(), qn.EmptyError, "no data observed yet"),
        (lambda: qn.MinMaxObserver(averaging_constant=2.0), qn.ParameterError, "averaging"),
        (lambda: qn.PercentileObserver(percentile=150.0), qn.ParameterError, "percentile"),
        (lambda: qn.MinMaxObserver(dtype="qint9"), qn.FormatError, "unknown quantized dtype `qint9`"),
        (lambda: qn.MinMaxObserver(qscheme="per_channel_affine"), qn.UnsupportedError, "unsupported"),
        (lambda: qn.choose_qparams(-1e38, 3e38), qn.RangeOverflowError, "overflows f32"),
        (lambda: qn.MinMaxObserver.from_json("{not json"), qn.FormatError, "from_json"),
        (lambda: qn.diagnose_dumps("/nonexistent/a.safetensors", "/nonexistent/b.safetensors"), qn.DumpIOError, "/nonexistent/a.safetensors"),
    ],
)
def test_error_class_and_message(call, cls, text):
    with pytest.raises(cls) as info:
        call()
    assert text in str(info.value)
    assert isinstance(info.value.kind, str) and info.value.kind


def test_merging_incompatible_observers():
    a = qn.MinMaxObserver()
    b = qn.MinMaxObserver(dtype="qint8", qscheme="per_tensor_symmetric")
    a.observe(X)
    b.observe(X)
    with pytest.raises(qn.IncompatibleError):
        a.merge(b)


def test_not_found_in_a_dump(tmp_path):
    from conftest import write_safetensors

    f, q = tmp_path / "f.safetensors", tmp_path / "q.safetensors"
    write_safetensors(f, {"a": X}, {"order": "a"})
    write_safetensors(q, {"a": X}, {"order": "a"})
    with pytest.raises(qn.FormatError):
        qn.DumpReader(str(f), str(q)).read("a", side="left")


def test_corrupt_dump(tmp_path):
    f = tmp_path / "f.safetensors"
    f.write_bytes(b"\xff" * 64)
    with pytest.raises(qn.FormatError):
        qn.compare_dumps(str(f), str(f))


@pytest.mark.parametrize(
    "call",
    [
        lambda: qn.quantize([1.0, 2.0], 0.1, 0),
        lambda: qn.quantize(np.arange(4), 0.1, 0),
        lambda: qn.dequantize(np.zeros(3, np.float32), 0.1, 0),
        lambda: qn.sqnr(X, X.astype(np.float64)),
        lambda: qn.MinMaxObserver().observe("text"),
        lambda: qn.fake_quantize_backward(X, X.astype(np.float64), 0.1, 0),
    ],
)
def test_wrong_types_are_type_errors(call):
    with pytest.raises(TypeError):
        call()
