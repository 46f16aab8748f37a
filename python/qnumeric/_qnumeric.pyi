"""Type stubs of qnumeric's native module (the Rust crate through PyO3).

Float arrays are NumPy arrays of dtype float32, float64 or float16, read in place (any
strides); results are new NumPy arrays. Every error is a ``QnumericError`` subclass (a
``ValueError``) with the crate's message and a ``kind`` attribute naming the Rust variant;
an argument of the wrong Python type is a ``TypeError``.
"""

from os import PathLike
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
import numpy.typing as npt

__version__: str

FloatArray = npt.NDArray[Union[np.float32, np.float64, np.float16]]
IntArray = npt.NDArray[Union[np.uint8, np.int8, np.uint16, np.int16, np.int32]]
_F = TypeVar("_F", np.float32, np.float64, np.float16)
_Path = Union[str, PathLike]

class QnumericError(ValueError):
    """Base class of every error qnumeric raises."""

    kind: str

class NonFiniteError(QnumericError):
    """NaN or infinity where a finite value is required."""

class InvalidScaleError(QnumericError):
    """A scale that is zero, negative, not finite, or too small to invert in float32."""

class ZeroPointError(QnumericError):
    """A zero point outside its quantization range."""

class QuantRangeError(QnumericError):
    """A quantization range invalid for its dtype, or a storage type too narrow for it."""

class AxisError(QnumericError):
    """A channel axis that the array does not have."""

class ShapeError(QnumericError):
    """Shapes or lengths that do not match, or a length that is not a multiple of a block."""

class UnsupportedError(QnumericError):
    """A configuration, layer or parameter kind the operation does not support."""

class ParameterError(QnumericError):
    """A parameter outside its allowed interval, or an invalid name."""

class EmptyError(QnumericError):
    """An empty input, or a result asked of an observer that saw no data."""

class NotFoundError(QnumericError):
    """A named layer, tensor or module that is not there."""

class IncompatibleError(QnumericError):
    """Observers, logs or tensors that cannot be combined."""

class FormatError(QnumericError):
    """Input that cannot be read: a corrupt file, bad JSON, an unknown name."""

class RangeOverflowError(QnumericError):
    """A size, range or accumulator that would overflow, or an allocation that is too large."""

class DumpIOError(QnumericError):
    """A file that cannot be opened or read."""

class QParams:
    """Per-tensor quantization parameters."""

    def __init__(
        self,
        scale: float,
        zero_point: int,
        dtype: str = "quint8",
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
    ) -> None: ...
    @property
    def scale(self) -> float: ...
    @property
    def zero_point(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def quant_min(self) -> int: ...
    @property
    def quant_max(self) -> int: ...

class PerChannelQParams:
    """Per-channel quantization parameters: a scale and zero point per index of ``axis``."""

    def __init__(
        self,
        scales: Sequence[float],
        zero_points: Sequence[int],
        axis: int = 0,
        dtype: str = "qint8",
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
    ) -> None: ...
    @property
    def scales(self) -> List[float]: ...
    @property
    def zero_points(self) -> Union[List[int], List[float]]: ...
    @property
    def axis(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def quant_min(self) -> int: ...
    @property
    def quant_max(self) -> int: ...
    def __len__(self) -> int: ...

def quantize(
    x: FloatArray,
    scale: float,
    zero_point: int,
    dtype: str = "quint8",
    quant_min: Optional[int] = None,
    quant_max: Optional[int] = None,
) -> IntArray:
    """PyTorch's ``quantize_per_tensor``: ``clamp(rint(x / scale) + zero_point)`` in the
    dtype's storage type (values saturate to the storage range, as PyTorch's)."""

def quantize_per_channel(
    x: FloatArray,
    scales: Sequence[float],
    zero_points: Sequence[int],
    axis: int,
    dtype: str = "qint8",
    quant_min: Optional[int] = None,
    quant_max: Optional[int] = None,
) -> IntArray: ...
def dequantize(
    q: IntArray,
    scale: float,
    zero_point: int,
    dtype: Optional[str] = None,
    quant_min: Optional[int] = None,
    quant_max: Optional[int] = None,
) -> npt.NDArray[np.float32]:
    """``(q - zero_point) * scale`` in float32; the dtype defaults to the array's."""

def dequantize_per_channel(
    q: IntArray,
    scales: Sequence[float],
    zero_points: Sequence[int],
    axis: int,
    dtype: Optional[str] = None,
    quant_min: Optional[int] = None,
    quant_max: Optional[int] = None,
) -> npt.NDArray[np.float32]: ...
def fake_quantize(
    x: npt.NDArray[_F], scale: float, zero_point: int, quant_min: int = 0, quant_max: int = 255
) -> npt.NDArray[_F]:
    """PyTorch's ``fake_quantize_per_tensor_affine``, in the input's dtype."""

def fake_quantize_per_channel(
    x: npt.NDArray[_F],
    scales: Sequence[float],
    zero_points: Sequence[int],
    axis: int,
    quant_min: int = -128,
    quant_max: int = 127,
) -> npt.NDArray[_F]: ...
def fake_quantize_backward(
    x: npt.NDArray[_F],
    dy: npt.NDArray[_F],
    scale: float,
    zero_point: int,
    quant_min: int = 0,
    quant_max: int = 255,
) -> npt.NDArray[_F]:
    """The straight-through gradient: ``dy`` where ``x`` quantizes inside the range, else 0."""

def choose_qparams(
    min: float,
    max: float,
    dtype: str = "quint8",
    qscheme: str = "per_tensor_affine",
    reduce_range: bool = False,
    quant_min: Optional[int] = None,
    quant_max: Optional[int] = None,
    eps: Optional[float] = None,
) -> QParams:
    """The parameters PyTorch's observers compute for the range ``min..=max``."""

def sqnr(x: FloatArray, y: FloatArray) -> float:
    """Signal-to-quantization-noise ratio of ``y`` against the reference ``x`` (dB)."""

def mse(x: FloatArray, y: FloatArray) -> float: ...
def max_abs_error(x: FloatArray, y: FloatArray) -> float: ...
def cosine_similarity(x: FloatArray, y: FloatArray) -> float: ...
def normalized_l2_error(x: FloatArray, y: FloatArray) -> float: ...

_O = TypeVar("_O", bound="_Observer")

class _Observer:
    """What every observer offers (not a class of the module)."""

    def observe(self, x: FloatArray) -> None: ...
    def merge(self: _O, other: _O) -> None:
        """Merges an observer of the same configuration that saw other data."""

    def qparams(self) -> Union[QParams, PerChannelQParams]: ...
    @property
    def name(self) -> str: ...
    def to_json(self) -> str: ...
    @classmethod
    def from_json(cls: type[_O], state: str) -> _O: ...
    def copy(self: _O) -> _O: ...

class MinMaxObserver(_Observer):
    def __init__(
        self,
        dtype: str = "quint8",
        qscheme: str = "per_tensor_affine",
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        eps: Optional[float] = None,
        averaging_constant: Optional[float] = None,
    ) -> None: ...
    @property
    def min_max(self) -> Optional[Tuple[float, float]]: ...

class PerChannelMinMaxObserver(_Observer):
    def __init__(
        self,
        ch_axis: int = 0,
        dtype: str = "qint8",
        qscheme: str = "per_channel_symmetric",
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        eps: Optional[float] = None,
        averaging_constant: Optional[float] = None,
    ) -> None: ...

class HistogramObserver(_Observer):
    def __init__(
        self,
        bins: int = 2048,
        dtype: str = "quint8",
        qscheme: str = "per_tensor_affine",
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        eps: Optional[float] = None,
    ) -> None: ...

class PercentileObserver(_Observer):
    def __init__(
        self,
        percentile: float = 99.99,
        dtype: str = "qint8",
        qscheme: str = "per_tensor_symmetric",
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        eps: Optional[float] = None,
    ) -> None: ...

class MseObserver(_Observer):
    def __init__(
        self,
        dtype: str = "qint8",
        qscheme: str = "per_tensor_symmetric",
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        eps: Optional[float] = None,
    ) -> None: ...

class EntropyObserver(_Observer):
    def __init__(
        self,
        dtype: str = "qint8",
        qscheme: str = "per_tensor_symmetric",
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        eps: Optional[float] = None,
    ) -> None: ...

class FixedQParamsObserver(_Observer):
    def __init__(
        self,
        scale: float,
        zero_point: int,
        dtype: str = "quint8",
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
    ) -> None: ...

class DynamicObserver(_Observer):
    def __init__(
        self,
        dtype: str = "quint8",
        qscheme: str = "per_tensor_affine",
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        eps: Optional[float] = None,
    ) -> None: ...

class DumpComparison:
    """Each layer's output SQNR, per layer and per sample."""

    @property
    def report(self) -> "NsReport": ...
    def to_json(self, per_sample: bool = False) -> str: ...
    def to_dict(self, per_sample: bool = False) -> Dict[str, Any]: ...
    def sample_table(self, worst: int = 5) -> str: ...
    @property
    def layers(self) -> List[str]: ...

class Diagnosis:
    """Verdicts, the headline layer and the ranked remedies."""

    @property
    def verdict(self) -> str: ...
    @property
    def headline(self) -> Optional[str]: ...
    @property
    def first_layer(self) -> Optional[str]: ...
    @property
    def worst_samples(self) -> List[int]: ...
    @property
    def output_sqnr_db(self) -> Optional[float]: ...
    @property
    def verdicts(self) -> List[Tuple[str, str]]: ...
    @property
    def remedies(self) -> List[Dict[str, Any]]: ...
    def to_json(self) -> str: ...
    def to_dict(self) -> Dict[str, Any]: ...
    def measure_end_to_end(self, rerun: Callable[[Dict[str, Any]], Optional[float]]) -> None:
        """``rerun(remedy)`` returns the model's output SQNR with that change (dB) or None."""

    def to_html(self) -> str:
        """One self-contained HTML page (inline CSS and SVG, no network)."""

    def drop_remedies_below(self, min_gain_db: float) -> None:
        """Drops remedies measured end to end that gain less (a kernel fix stays)."""

class DumpReader:
    """Two dumps opened together; tensors read on demand."""

    def __init__(self, float_path: _Path, quant_path: _Path) -> None: ...
    @property
    def layers(self) -> List[str]: ...
    @property
    def version(self) -> int: ...
    @property
    def mask(self) -> Optional[npt.NDArray[np.bool_]]: ...
    def meta(self, layer: str) -> Optional[Dict[str, Any]]: ...
    def read(
        self, layer: str, side: str = "quant", part: str = "output"
    ) -> Optional[npt.NDArray[Union[np.float32, np.float64]]]: ...
    def compare(self, sample_dims: int = 1) -> DumpComparison: ...

def compare_dumps(
    float_path: _Path, quant_path: _Path, threshold: Optional[float] = None
) -> DumpComparison: ...
def diagnose_dumps(
    float_path: _Path,
    quant_path: _Path,
    baseline: Optional[_Path] = None,
    sample_dims: int = 1,
    threshold: float = 20.0,
    min_gain: float = 0.5,
    try_formats: Sequence[str] = (),
    remedies: bool = True,
) -> Diagnosis: ...

class KernelReport:
    """The kernel check's findings."""

    def verdict(
        self,
        max_abs_diff: int = 1,
        max_off_by_one_fraction: float = 0.02,
        max_abs_mean_diff: float = 0.02,
    ) -> str: ...
    @property
    def exact(self) -> bool: ...
    @property
    def first_failure(self) -> Optional[str]: ...
    @property
    def minimal_case(self) -> Optional[str]: ...
    @property
    def minimal(self) -> Optional[Dict[str, Any]]: ...
    def to_dict(self) -> Dict[str, Any]: ...

def check_kernel(
    kernel: Callable[[Dict[str, Any]], npt.NDArray[np.uint8]],
    op: str = "linear",
    weights: str = "per_channel_symmetric",
    reference: str = "float",
    seed: int = 0,
    cases_per_kind: Optional[int] = None,
) -> KernelReport: ...

class NsReport:
    """The Numeric Suite's report: per layer, cumulative and local figures."""

    @property
    def layers(self) -> List[str]: ...
    def sqnr_db(self, layer: str, which: str = "cumulative") -> Optional[float]: ...
    def sample_table(self, which: str = "cumulative", worst: int = 5) -> str: ...
    def to_json(self) -> str: ...
    def to_dict(self) -> Dict[str, Any]: ...
    def to_csv(self) -> str: ...
    def diagnose(self, threshold: float = 20.0) -> Diagnosis:
        """Verdicts and the headline (no remedies)."""

class NumericLog:
    """The streaming log: per layer, the statistics of every pushed batch."""

    def __init__(self) -> None: ...
    def push(
        self,
        layer: str,
        float: FloatArray,
        quant: FloatArray,
        mask: Optional[npt.NDArray[np.bool_]] = None,
        sample_dims: int = 1,
        output: Optional[QParams] = None,
    ) -> None: ...
    def merge(self, other: "NumericLog") -> None:
        """Adds another shard's statistics: one log of all the batches, this one's first."""

    @property
    def layers(self) -> List[str]: ...
    def __len__(self) -> int: ...
    def set_enabled(self, layer: str, enabled: bool) -> None: ...
    def sqnr_db(self, layer: str) -> float: ...
    def sample_sqnr_db(self, layer: str) -> List[float]: ...
    def comparison(self, layer: str) -> Dict[str, Any]: ...
    def report(self, local: Optional["NumericLog"] = None, threshold: Optional[float] = None) -> NsReport: ...
    def to_json(self) -> str: ...
    @classmethod
    def from_json(cls, state: str) -> "NumericLog": ...
    def copy(self) -> "NumericLog": ...
