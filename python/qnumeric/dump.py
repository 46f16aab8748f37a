"""Dump a PyTorch model and its quantized version for ``qnumeric compare`` / ``qnumeric diagnose``.

Writes the two safetensors files of the ``qnumeric-dump/2`` format (``docs/dumps.md``): FLOAT
(the float model) and QUANT (the quantized model, every tensor dequantized to float32).

    import torch
    from qnumeric.dump import dump

    qmodel = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    batches = [{"input_ids": ids, "attention_mask": mask} for ids, mask in loader]
    result = dump(model, qmodel, batches, "float.safetensors", "quant.safetensors",
                  max_samples=256)
    print(result)          # layers written, tensors skipped and why

What is recorded, for every *leaf* module of the quantized model (``named_modules()``; a module
whose only children are observers or fake-quantizers counts as a leaf; observers,
fake-quantizers, ``DeQuantStub`` and its converted form, ``Identity`` and containers are not
layers; a ``QuantStub`` and its converted ``Quantize`` are one, the input's quantization) that
has a float module of the same qualified name:

* FLOAT ``NAME``: the float module's output; ``NAME:weight`` / ``NAME:bias``: its parameters.
* QUANT ``NAME``: the quantized module's output, dequantized.
* QUANT ``NAME:input``: the quantized module's (first and only positional) input, dequantized.
* QUANT ``NAME:shadow``: the float module applied to that input (PyTorch's shadow module).
* QUANT ``NAME:weight`` / ``NAME:bias``: the weight the quantized module uses, dequantized
  (``module.weight()`` for quantized Linear/Conv, the packed parameters for dynamic ones, the
  fake-quantized weight for QAT modules, ``get_weight()`` for reference modules).
* ``__mask__`` ``[N, T]`` (in both files) when masks are known: passed per batch, or taken from
  a dict batch's ``attention_mask``.

Metadata (both files): ``format`` = ``qnumeric-dump/2``, ``order`` (a JSON array: each file holds
its own model's execution order in the first forward; the reader takes the float file's),
``batch_size`` and ``layers`` (kind, weight bits/granularity/symmetry, activation mode,
output quantization parameters, conv geometry; see ``docs/dumps.md``).

Bounded memory: every recorded tensor is appended to a spill file in a temporary directory as
soon as its hook runs (nothing is kept across batches in memory), and the safetensors files
are then written tensor by tensor, one batch chunk at a time. Recording stops after
``max_samples`` samples (the batch that crosses the cap is cut; later batches are not run).

What cannot be dumped is skipped, never guessed: outputs that are not one tensor with the
sample axis first (tuples, ``None``, a leading dimension other than the batch's), modules
called more than once per forward or not on every batch, shapes that change between batches
(other than the sequence axis when masks are known: shorter sequences are padded with zeros
and masked), shadows the float module refuses. ``DumpResult.skipped`` says which and why.

Only ``torch`` and ``numpy`` are needed: the safetensors files are written by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

__all__ = ["dump", "DumpResult", "write_safetensors", "FORMAT"]

FORMAT = "qnumeric-dump/2"


@dataclass
class DumpResult:
    """What :func:`dump` wrote and what it left out."""

    #: Layer names written (present as ``NAME`` in both files), in execution order.
    layers: List[str] = field(default_factory=list)
    #: Every tensor name written to the FLOAT file.
    float_names: List[str] = field(default_factory=list)
    #: Every tensor name written to the QUANT file.
    quant_names: List[str] = field(default_factory=list)
    #: Tensor (or layer) name -> why it was not written.
    skipped: Dict[str, str] = field(default_factory=dict)
    #: Things worth knowing that did not stop a tensor from being written.
    warnings: List[str] = field(default_factory=list)
    #: Samples written (the sample axis of every sample-first tensor).
    samples: int = 0

    def __str__(self) -> str:
        lines = [f"{len(self.layers)} layers, {self.samples} samples"]
        lines += [f"skipped {k}: {v}" for k, v in self.skipped.items()]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# safetensors, by hand

_NP_DTYPES = {
    "F32": "<f4",
    "F64": "<f8",
    "F16": "<f2",
    "U8": "u1",
    "I8": "i1",
    "I32": "<i4",
    "I64": "<i8",
}


def _header_bytes(entries: List[Tuple[str, str, List[int]]], metadata: Dict[str, str]) -> bytes:
    """The 8-byte length and the space-padded JSON header for tensors laid out in order."""
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dtype, shape in entries:
        size = int(np.dtype(_NP_DTYPES[dtype]).itemsize) * int(math.prod(shape))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # The data starts 8 bytes after the length; pad so that it starts on a multiple of 8.
    text += b" " * ((-len(text)) % 8)
    return struct.pack("<Q", len(text)) + text


def write_safetensors(path: str, tensors: Dict[str, np.ndarray], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write numpy arrays (dtypes of ``_NP_DTYPES``) as one safetensors file.

    A small, whole-in-memory writer for tests and tools; :func:`dump` streams instead.
    """
    entries = []
    arrays = []
    for name, a in tensors.items():
        a = np.asarray(a)
        dtype = next(
            k for k, v in _NP_DTYPES.items() if np.dtype(v) == a.dtype.newbyteorder("<") or np.dtype(v) == a.dtype
        )
        entries.append((name, dtype, list(a.shape)))
        arrays.append(np.ascontiguousarray(a.astype(_NP_DTYPES[dtype], copy=False)))
    with open(path, "wb") as f:
        f.write(_header_bytes(entries, metadata or {}))
        for a in arrays:
            f.write(a.tobytes())


# ----------------------------------------------------------------------------------------------
# Spill store: one raw float32 file per tensor key, appended batch by batch.


class _Spill:
    def __init__(self, directory: str):
        self.dir = directory
        self.files: Dict[Tuple[str, str], str] = {}
        #: key -> list of (chunk shape, sequence length of the chunk's batch or None)
        self.chunks: Dict[Tuple[str, str], List[Tuple[Tuple[int, ...], Optional[int]]]] = {}

    def append(self, key: Tuple[str, str], a: np.ndarray, seq_len: Optional[int]) -> None:
        path = self.files.get(key)
        if path is None:
            path = os.path.join(self.dir, f"{len(self.files)}.bin")
            self.files[key] = path
            self.chunks[key] = []
        with open(path, "ab") as f:
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
        self.chunks[key].append((tuple(a.shape), seq_len))

    def samples(self, key) -> int:
        return sum(s[0] for s, _ in self.chunks.get(key, []))

    def final_shape(self, key, padded: bool) -> Tuple[int, ...]:
        shapes = [s for s, _ in self.chunks[key]]
        n = sum(s[0] for s in shapes)
        if padded:
            return (n, max(s[1] for s in shapes)) + shapes[0][2:]
        return (n,) + shapes[0][1:]

    def stream(self, key, final_shape):
        """Yield the key's chunks as little-endian float32 bytes, padded on axis 1 to the final shape."""
        with open(self.files[key], "rb") as f:
            for shape, _ in self.chunks[key]:
                count = int(math.prod(shape))
                a = np.frombuffer(f.read(4 * count), dtype="<f4").reshape(shape)
                if len(shape) >= 2 and shape[1] != final_shape[1]:
                    pad = [(0, 0)] * len(shape)
                    pad[1] = (0, final_shape[1] - shape[1])
                    a = np.pad(a, pad)
                yield a.tobytes()


# ----------------------------------------------------------------------------------------------
# Modules


def _is_skipped_type(m: nn.Module) -> bool:
    from torch.ao.quantization import DeQuantStub
    from torch.ao.quantization.fake_quantize import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    # A QuantStub (and its converted form, Quantize) is a layer: the input's quantization,
    # whose own error is the clipping and rounding of the model's input. DeQuantStub adds no
    # error of its own.
    skip: Tuple[type, ...] = (
        ObserverBase,
        FakeQuantizeBase,
        DeQuantStub,
        nn.Identity,
        nn.Sequential,
        nn.ModuleList,
        nn.ModuleDict,
    )
    try:
        import torch.ao.nn.quantized as nnq

        skip += (nnq.DeQuantize,)
    except (ImportError, AttributeError):
        pass
    if isinstance(m, skip) or _is_helper(m):
        return True
    return type(m).__name__ in ("QuantWrapper", "DeQuantStub", "DeQuantize")


def _is_helper(m: nn.Module) -> bool:
    """Observers, fake-quantizers and packed parameters: children that do not make their parent
    a container (and are no layers themselves)."""
    from torch.ao.quantization.fake_quantize import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    return isinstance(m, (ObserverBase, FakeQuantizeBase)) or type(m).__name__.endswith("PackedParams")


def _fused_relu(fmod: nn.Module, qmod: nn.Module) -> bool:
    """A quantized module with a fused ReLU whose float module has none (FX graph mode fuses
    ``conv1`` and the ReLU after it into one module named ``conv1``): it is compared with its
    float module followed by the ReLU, which is what it computes."""
    if "ReLU" not in type(qmod).__name__ or "ReLU" in type(fmod).__name__ or isinstance(fmod, nn.ReLU):
        return False
    return not (isinstance(fmod, nn.Sequential) and any(isinstance(m, nn.ReLU) for m in fmod))


def _is_fused(m: nn.Module) -> bool:
    """A float or prepared fused module (``ConvReLU2d``, ``LinearReLU``, ...): one layer."""
    try:
        from torch.ao.nn.intrinsic import _FusedModule
    except ImportError:
        return False
    return isinstance(m, _FusedModule)


def _leaves(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    out = []
    fused: List[str] = []
    for name, m in model.named_modules():
        if not name or any(name.startswith(f + ".") for f in fused):
            continue
        if _is_fused(m):
            fused.append(name)
            out.append((name, m))
            continue
        if _is_skipped_type(m):
            continue
        if all(_is_helper(c) for c in m.children()):
            out.append((name, m))
    return out


def _mod_path(m: nn.Module) -> str:
    return type(m).__module__


def _is_dynamic(m: nn.Module) -> bool:
    return ".quantized.dynamic" in _mod_path(m)


def _is_reference(m: nn.Module) -> bool:
    return ".quantized.reference" in _mod_path(m)


def _deq(t):
    if isinstance(t, torch.Tensor) and t.is_quantized:
        return t.dequantize()
    return t


def _kind(qmod: nn.Module, fmod: Optional[nn.Module]) -> str:
    name = type(qmod).__name__
    if re.fullmatch(r"Linear(ReLU|LeakyReLU|Tanh|Bn1d)?", name) or isinstance(fmod, nn.Linear):
        return "linear"
    if re.fullmatch(r"Conv(Bn)?(ReLU|Add|AddReLU)?1d", name) or isinstance(fmod, nn.Conv1d):
        return "conv1d"
    if re.fullmatch(r"Conv(Bn)?(ReLU|Add|AddReLU)?2d", name) or isinstance(fmod, nn.Conv2d):
        return "conv2d"
    return "other"


def _float_params(fmod: nn.Module) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    m = fmod
    if not isinstance(getattr(m, "weight", None), torch.Tensor) and isinstance(m, nn.Sequential) and len(m) > 0:
        m = m[0]  # a fused float module (ConvReLU2d, LinearReLU): the weighted part comes first
    w = getattr(m, "weight", None)
    b = getattr(m, "bias", None)
    return (w if isinstance(w, torch.Tensor) else None, b if isinstance(b, torch.Tensor) else None)


def _quant_params(qmod: nn.Module):
    """(weight as float, bias as float, weight description or None) of a quantized module."""
    w = b = None
    desc = None
    wq = None
    try:
        if hasattr(qmod, "_packed_params") and hasattr(qmod._packed_params, "_weight_bias"):
            wq, b = qmod._packed_params._weight_bias()
        elif callable(getattr(qmod, "weight", None)) and not isinstance(qmod.weight, torch.Tensor):
            wq = qmod.weight()
            b = qmod.bias() if callable(getattr(qmod, "bias", None)) else getattr(qmod, "bias", None)
        elif _is_reference(qmod) and hasattr(qmod, "get_weight"):
            w = qmod.get_weight()
            b = getattr(qmod, "bias", None)
        elif isinstance(getattr(qmod, "weight_fake_quant", None), nn.Module) and isinstance(
            getattr(qmod, "weight", None), torch.Tensor
        ):
            fq = qmod.weight_fake_quant
            w = fq(qmod.weight)
            b = getattr(qmod, "bias", None)
            qmin, qmax = getattr(fq, "quant_min", None), getattr(fq, "quant_max", None)
            qs = getattr(fq, "qscheme", None)
            if qmin is not None and qmax is not None:
                desc = {"bits": int(math.ceil(math.log2(int(qmax) - int(qmin) + 1)))}
                if qs is not None:
                    desc["granularity"] = "per_channel" if "per_channel" in str(qs) else "per_tensor"
                    desc["symmetric"] = "symmetric" in str(qs)
        elif isinstance(getattr(qmod, "weight", None), torch.Tensor):
            w = qmod.weight
            b = getattr(qmod, "bias", None)
    except Exception:  # noqa: BLE001 - an unusual module: no weight rather than no dump
        return None, None, None
    if isinstance(wq, torch.Tensor):
        if wq.is_quantized:
            w = wq.dequantize()
            desc = _weight_desc(wq)
        else:
            w = wq
    if isinstance(b, torch.Tensor):
        b = _deq(b)
    else:
        b = None
    return w, b, desc


def _weight_desc(wq: torch.Tensor) -> Optional[Dict[str, Any]]:
    """bits / granularity / symmetric of a quantized weight tensor.

    PyTorch stores every integer width in int8 (``quantize_per_tensor`` keeps ``*_affine``
    qschemes even for symmetric observers), so symmetry is read from the zero points (0 for
    qint8, 128 for quint8) and the width from the integer values used: the smallest ``b``
    with the values inside a ``b``-bit range around the zero point.
    """
    try:
        qs = wq.qscheme()
        q = wq.int_repr().to(torch.int64)
        if qs in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            gran = "per_tensor"
            zp = torch.tensor([wq.q_zero_point()])
            zps = torch.full_like(q, int(wq.q_zero_point()))
        elif qs in (torch.per_channel_affine, torch.per_channel_symmetric):
            gran = "per_channel"
            zp = wq.q_per_channel_zero_points().to(torch.int64)
            shape = [1] * q.dim()
            shape[wq.q_per_channel_axis()] = -1
            zps = zp.reshape(shape).expand_as(q)
        else:
            return None
        mid = 128 if wq.dtype == torch.quint8 else 0
        symmetric = bool((zp == mid).all()) or "symmetric" in str(qs)
        d = q - zps
        lo, hi = int(d.min()) if d.numel() else 0, int(d.max()) if d.numel() else 0
        storage = 8 if wq.dtype in (torch.qint8, torch.quint8) else 32
        bits = 2
        while bits < storage and not (-(2 ** (bits - 1)) <= lo and hi <= 2 ** (bits - 1) - 1):
            bits += 1
        if not symmetric:
            # affine: the width of the range of integers used
            used = int(q.max()) - int(q.min()) + 1 if q.numel() else 1
            bits = max(2, min(storage, int(math.ceil(math.log2(max(used, 2))))))
        return {"bits": bits, "granularity": gran, "symmetric": symmetric}
    except Exception:  # noqa: BLE001
        return None


def _conv_desc(m: nn.Module) -> Optional[Dict[str, Any]]:
    if isinstance(m, nn.Sequential) and len(m) > 0:
        m = m[0]
    try:

        def ints(v):
            v = v if isinstance(v, (tuple, list)) else (v,)
            return [int(x) for x in v]

        return {
            "stride": ints(m.stride),
            "padding": ints(m.padding),
            "dilation": ints(m.dilation),
            "groups": int(m.groups),
        }
    except (AttributeError, TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# Batches


def _first_tensor(x) -> Optional[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, dict):
        for v in x.values():
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(x, (tuple, list)):
        for v in x:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _samples_and_mask(batch, mask_iter) -> Tuple[int, Optional[torch.Tensor]]:
    """A batch's sample count (axis 0 of its first tensor) and its mask: the next of the
    given masks, else a dict batch's ``attention_mask``, else ``None``."""
    mask = next(mask_iter) if mask_iter is not None else None
    if mask is None and isinstance(batch, dict) and isinstance(batch.get("attention_mask"), torch.Tensor):
        mask = batch["attention_mask"]
    t0 = _first_tensor(batch)
    if t0 is None or t0.dim() == 0:
        raise ValueError("a batch holds no tensor with a sample axis")
    return int(t0.shape[0]), mask


def _call(model: nn.Module, batch):
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def _compile_filter(layer_filter) -> Callable[[str], bool]:
    if layer_filter is None:
        return lambda name: True
    if isinstance(layer_filter, str):
        rx = re.compile(layer_filter)
        return lambda name: rx.search(name) is not None
    if callable(layer_filter):
        return lambda name: bool(layer_filter(name))
    raise TypeError("layer_filter must be None, a regex string or a callable name -> bool")


# ----------------------------------------------------------------------------------------------
# The recorder


class _Recorder:
    def __init__(self, float_model, quant_model, names, spill: _Spill):
        self.fmods = dict(float_model.named_modules())
        self.qmods = dict(quant_model.named_modules())
        self.names = names
        self.spill = spill
        self.skipped: Dict[str, str] = {}
        self.warnings: List[str] = []
        self.order: Dict[str, List[str]] = {"float": [], "quant": []}
        self.first_batch = True
        self.in_shadow = False
        self.post_relu = {n for n in names if n in self.fmods and n in self.qmods and _fused_relu(self.fmods[n], self.qmods[n])}
        self.running: Optional[str] = None  # "float" or "quant": which model is running
        self.calls: Dict[Tuple[str, str], int] = {}
        self.layout: Dict[Tuple[str, str], Optional[bool]] = {}  # key -> padded on axis 1?
        self.out_qparams: Dict[str, Dict[str, Any]] = {}
        self.in_qparams: Dict[str, Dict[str, Any]] = {}
        self.batch_n = 0  # samples of the current batch
        self.keep = 0  # samples of it to keep (max_samples)
        self.seq_len: Optional[int] = None
        self.has_mask = False
        self.handles = []

    # -- recording helpers
    def skip(self, key: str, reason: str) -> None:
        self.skipped.setdefault(key, reason)

    def record(self, side: str, key: str, t) -> None:
        if key in self.skipped:
            return
        if not isinstance(t, torch.Tensor):
            what = "None" if t is None else type(t).__name__
            self.skip(key, f"not one tensor ({what}): no sample axis to record")
            return
        t = _deq(t)
        if not t.is_floating_point():
            self.skip(key, f"not floating point ({t.dtype})")
            return
        if t.dim() == 0 or t.shape[0] != self.batch_n:
            self.skip(
                key,
                f"leading dimension {tuple(t.shape)[:1]} is not the batch's {self.batch_n} samples (not sample-first)",
            )
            return
        a = t.detach()[: self.keep].to(torch.float32).cpu().numpy()
        padded = self.has_mask and a.ndim >= 2 and a.shape[1] == self.seq_len
        k = (side, key)
        prev = self.spill.chunks.get(k)
        if prev:
            was_padded = self.layout[k]
            first = prev[0][0]
            ok = a.ndim == len(first) and (
                (was_padded and padded and a.shape[2:] == first[2:]) or (not was_padded and a.shape[1:] == first[1:])
            )
            if not ok:
                self.skip(key, f"shape changes between batches ({first[1:]} then {a.shape[1:]})")
                return
        else:
            self.layout[k] = padded
        self.spill.append(k, a, self.seq_len)

    def _count(self, side: str, name: str) -> bool:
        """Count a call; False (and the layer skipped) on a second call in one forward."""
        c = self.calls.get((side, name), 0) + 1
        self.calls[(side, name)] = c
        if c > 1:
            self.skip(name, "called more than once per forward")
            return False
        if self.first_batch:
            self.order[side].append(name)
        return True

    # -- hooks
    def float_hook(self, name):
        def hook(module, args, kwargs, output):
            if self.running != "float" or self.in_shadow or not self._count("float", name):
                return
            if name in self.post_relu and isinstance(output, torch.Tensor):
                output = torch.relu(output)
            self.record("float", name, output)

        return hook

    def quant_hook(self, name):
        def hook(module, args, kwargs, output):
            if self.running != "quant" or self.in_shadow or not self._count("quant", name):
                return
            if self.first_batch and isinstance(output, torch.Tensor) and output.is_quantized:
                if output.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                    self.out_qparams[name] = {
                        "scale": float(output.q_scale()),
                        "zero_point": int(output.q_zero_point()),
                        "dtype": str(output.dtype).replace("torch.", ""),
                    }
            if self.first_batch and args and isinstance(args[0], torch.Tensor):
                a = args[0]
                if a.is_quantized and a.qscheme() in (
                    torch.per_tensor_affine,
                    torch.per_tensor_symmetric,
                ):
                    self.in_qparams[name] = {
                        "scale": float(a.q_scale()),
                        "zero_point": int(a.q_zero_point()),
                        "dtype": str(a.dtype).replace("torch.", ""),
                    }
            self.record("quant", name, output)
            if len(args) != 1 or kwargs:
                self.skip(name + ":input", "the module takes more than one input")
                self.skip(name + ":shadow", "the module takes more than one input")
                return
            x = _deq(args[0])
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                self.record("quant", name + ":input", x)
            elif isinstance(x, torch.Tensor):
                self.skip(name + ":input", f"not floating point ({x.dtype})")
            else:
                self.skip(name + ":input", "not a tensor")
            fmod = self.fmods.get(name)
            if fmod is None or (name + ":shadow") in self.skipped:
                return
            self.in_shadow = True
            try:
                s = fmod(x)
                if name in self.post_relu and isinstance(s, torch.Tensor):
                    s = torch.relu(s)
            except Exception as e:  # noqa: BLE001 - a shadow is optional
                self.skip(name + ":shadow", f"the float module refuses the quantized input: {type(e).__name__}: {e}")
                return
            finally:
                self.in_shadow = False
            if isinstance(s, torch.Tensor) and isinstance(output, torch.Tensor) and s.shape != output.shape:
                self.skip(name + ":shadow", f"shape {tuple(s.shape)} differs from the output's {tuple(output.shape)}")
                return
            self.record("quant", name + ":shadow", s)

        return hook

    def install(self):
        for name in self.names:
            self.handles.append(self.fmods[name].register_forward_hook(self.float_hook(name), with_kwargs=True))
            self.handles.append(self.qmods[name].register_forward_hook(self.quant_hook(name), with_kwargs=True))

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


# ----------------------------------------------------------------------------------------------
# dump


def dump(
    float_model: nn.Module,
    quant_model: nn.Module,
    batches: Iterable[Any],
    float_path: str,
    quant_path: str,
    *,
    masks: Optional[Iterable[torch.Tensor]] = None,
    layer_filter: Union[None, str, Callable[[str], bool]] = None,
    max_samples: Optional[int] = None,
    batch_size: Optional[int] = None,
) -> DumpResult:
    """Run ``float_model`` and ``quant_model`` on ``batches`` and write a ``qnumeric-dump/2`` pair.

    Args:
        float_model: the float ``nn.Module``.
        quant_model: its quantized version (eager ``convert``, ``quantize_dynamic``, FX
            ``convert_fx``, or a QAT / prepared model with fake quantization). Layers are
            matched by qualified name; fuse the float model the same way as the quantized one
            (``fuse_modules``) so that a fused layer's output means the same in both.
        batches: an iterable of model inputs: a tensor, a tuple/list of positional tensors, or
            a dict of keyword tensors (HF style). The first tensor's axis 0 is the sample axis.
        float_path, quant_path: the files to write (FLOAT and QUANT).
        masks: optional, one ``[B, T]`` mask per batch (1 real, 0 padding). Without it, a dict
            batch's ``attention_mask`` is used. Tensors ``[B, T, ...]`` of batches of different
            ``T`` are padded with zeros to the longest and the padding masked.
        layer_filter: which layers to dump: a callable ``name -> bool`` or a regex string
            (``re.search``; anchor it for exact names).
        max_samples: stop after this many samples (the batch crossing it is cut).
        batch_size: the ``batch_size`` metadata (samples per forward call); the first batch's
            size by default.

    Returns:
        a :class:`DumpResult`: the layers and tensor names written, what was skipped and why.

    Both models are put in eval mode under ``torch.no_grad()`` (and their training flags
    restored afterwards); QAT observers are disabled while dumping and restored.
    """
    if float_model is quant_model:
        raise ValueError("float_model and quant_model are the same object (quantize with inplace=False)")
    keep_layer = _compile_filter(layer_filter)
    result = DumpResult()
    fmods = dict(float_model.named_modules())
    names = []
    for name, qmod in _leaves(quant_model):
        if not keep_layer(name):
            continue
        if name not in fmods:
            result.skipped[name] = "no float module of that name"
            continue
        names.append(name)
        fmod = fmods[name]
        if _fused_relu(fmod, qmod):
            result.warnings.append(
                f"{name}: the quantized module is fused ({type(qmod).__name__}) and the float one is "
                f"{type(fmod).__name__}: its float output and shadow are taken after a ReLU, and the "
                "layer is not replayed (its kind is recorded as `other`)"
            )

    spill_dir = tempfile.mkdtemp(prefix="qnumeric-dump-")
    spill = _Spill(spill_dir)
    rec = _Recorder(float_model, quant_model, names, spill)
    rec.warnings = result.warnings
    f_training, q_training = float_model.training, quant_model.training
    observer_state = _disable_observers(quant_model)
    mask_chunks: List[np.ndarray] = []
    total = 0
    first_bs = None
    try:
        float_model.eval()
        quant_model.eval()
        rec.install()
        mask_iter = iter(masks) if masks is not None else None
        with torch.no_grad():
            for batch in batches:
                n, mask = _samples_and_mask(batch, mask_iter)
                if first_bs is None:
                    first_bs = n
                keep = n if max_samples is None else min(n, max_samples - total)
                if keep <= 0:
                    break
                if mask is not None:
                    if mask.dim() != 2 or mask.shape[0] != n:
                        raise ValueError(f"a mask must be [B, T] with B = {n}, got {tuple(mask.shape)}")
                    if mask_chunks == [] and total > 0:
                        raise ValueError("masks must be given for every batch or for none")
                    rec.has_mask = True
                    rec.seq_len = int(mask.shape[1])
                    mask_chunks.append((mask[:keep] != 0).to(torch.uint8).cpu().numpy())
                elif rec.has_mask:
                    raise ValueError("masks must be given for every batch or for none")
                rec.batch_n, rec.keep = n, keep
                rec.calls = {}
                rec.running = "float"
                _call(float_model, batch)
                rec.running = "quant"
                _call(quant_model, batch)
                rec.running = None
                rec.first_batch = False
                total += keep
                if max_samples is not None and total >= max_samples:
                    break
        rec.remove()
        result.samples = total
        result.skipped.update(rec.skipped)
        _write(
            float_model,
            quant_model,
            names,
            rec,
            spill,
            mask_chunks,
            total,
            batch_size or first_bs,
            float_path,
            quant_path,
            result,
        )
    finally:
        rec.remove()
        _restore_observers(observer_state)
        float_model.train(f_training)
        quant_model.train(q_training)
        shutil.rmtree(spill_dir, ignore_errors=True)
    return result


def _disable_observers(model: nn.Module):
    from torch.ao.quantization.fake_quantize import FakeQuantizeBase

    state = []
    for m in model.modules():
        if isinstance(m, FakeQuantizeBase) and isinstance(getattr(m, "observer_enabled", None), torch.Tensor):
            state.append((m, m.observer_enabled.clone()))
            m.disable_observer()
    return state


def _restore_observers(state):
    for m, enabled in state:
        m.observer_enabled.copy_(enabled)


def _layer_meta(name: str, qmod: nn.Module, fmod: nn.Module, rec: _Recorder, wdesc) -> Dict[str, Any]:
    kind = _kind(qmod, fmod)
    if name in rec.post_relu:
        kind = "other"  # the ReLU after the product: not replayed as a plain Linear/Conv
    meta: Dict[str, Any] = {"kind": kind}
    if kind.startswith("conv"):
        conv = _conv_desc(qmod) or _conv_desc(fmod)
        if conv:
            meta["conv"] = conv
    if wdesc:
        meta["weight"] = wdesc
    if _is_dynamic(qmod):
        engine = torch.backends.quantized.engine
        meta["activation"] = {
            "mode": "dynamic",
            "bits": 8,
            "reduce_range": engine in ("fbgemm", "x86"),
            "granularity": "per_tensor",
        }
    elif name in rec.out_qparams:
        # The input's calibrated parameters (the quantized tensor the module received).
        meta["activation"] = {"mode": "static", **rec.in_qparams.get(name, {})}
        meta["output"] = rec.out_qparams[name]
    elif isinstance(getattr(qmod, "activation_post_process", None), nn.Module) and hasattr(
        qmod.activation_post_process, "fake_quant_enabled"
    ):
        fq = qmod.activation_post_process
        meta["activation"] = {"mode": "static"}
        try:
            if fq.scale.numel() == 1:
                meta["output"] = {
                    "scale": float(fq.scale),
                    "zero_point": int(fq.zero_point),
                    "dtype": str(fq.dtype).replace("torch.", ""),
                }
        except (AttributeError, TypeError, ValueError):
            pass
    elif wdesc:
        meta["activation"] = {"mode": "float"}
    return meta


def _write(
    float_model,
    quant_model,
    names,
    rec: _Recorder,
    spill: _Spill,
    mask_chunks,
    total,
    batch_size,
    float_path,
    quant_path,
    result: DumpResult,
):
    fmods = dict(float_model.named_modules())
    qmods = dict(quant_model.named_modules())
    skipped = result.skipped

    def complete(side, key) -> bool:
        if key in skipped:
            return False
        n = spill.samples((side, key))
        if n != total:
            skipped[key] = f"recorded for {n} of {total} samples (not called on every batch)" if n else "never called"
            return False
        return True

    # Order: each model's first-forward order, restricted to what is written.
    layers = []
    for name in rec.order["quant"] + [n for n in names if n not in rec.order["quant"]]:
        if name in layers or name not in names:
            continue
        if not (complete("float", name) and complete("quant", name)):
            skipped.setdefault(name, "incomplete")
            continue
        ff = spill.final_shape(("float", name), rec.layout[("float", name)])
        qf = spill.final_shape(("quant", name), rec.layout[("quant", name)])
        if ff != qf:
            skipped[name] = f"float output {ff} and quantized output {qf} differ in shape"
            continue
        layers.append(name)

    float_entries: List[Tuple[str, str, List[int], Any]] = []  # name, dtype, shape, source
    quant_entries: List[Tuple[str, str, List[int], Any]] = []
    layer_meta: Dict[str, Any] = {}

    def sampled(side, key):
        shape = spill.final_shape((side, key), rec.layout[(side, key)])
        return (key, "F32", list(shape), ("spill", ((side, key), shape)))

    def param(key, t):
        a = t.detach().to(torch.float32).cpu().contiguous().numpy()
        return (key, "F32", list(a.shape), ("array", a))

    for name in layers:
        qmod, fmod = qmods[name], fmods[name]
        float_entries.append(sampled("float", name))
        quant_entries.append(sampled("quant", name))
        for suffix in (":input", ":shadow"):
            key = name + suffix
            if complete("quant", key):
                quant_entries.append(sampled("quant", key))
        fw, fb = _float_params(fmod)
        qw, qb, wdesc = _quant_params(qmod)
        if fw is not None and qw is not None:
            if tuple(fw.shape) == tuple(qw.shape):
                float_entries.append(param(name + ":weight", fw))
                quant_entries.append(param(name + ":weight", qw))
            else:
                skipped[name + ":weight"] = f"float {tuple(fw.shape)} and quantized {tuple(qw.shape)} differ in shape"
        if fb is not None and qb is not None and tuple(fb.shape) == tuple(qb.shape):
            float_entries.append(param(name + ":bias", fb))
            quant_entries.append(param(name + ":bias", qb))
        layer_meta[name] = _layer_meta(name, qmod, fmod, rec, wdesc)

    if mask_chunks:
        t_max = max(m.shape[1] for m in mask_chunks)
        mask = np.concatenate([np.pad(m, [(0, 0), (0, t_max - m.shape[1])]) for m in mask_chunks])
        if (mask.sum(axis=1) == 0).any():
            result.warnings.append("some samples have no real position in their mask (qnumeric refuses them)")
        float_entries.append(("__mask__", "U8", list(mask.shape), ("array", mask)))
        quant_entries.append(("__mask__", "U8", list(mask.shape), ("array", mask)))

    def meta(side_order):
        m = {
            "format": FORMAT,
            "order": json.dumps([n for n in side_order if n in layer_meta]),
            "layers": json.dumps(layer_meta),
        }
        if batch_size:
            m["batch_size"] = str(int(batch_size))
        return m

    float_order = [n for n in rec.order["float"] if n in layer_meta]
    quant_order = [n for n in rec.order["quant"] if n in layer_meta]
    _stream(float_path, float_entries, meta(float_order), spill)
    _stream(quant_path, quant_entries, meta(quant_order), spill)
    result.layers = quant_order
    result.float_names = [e[0] for e in float_entries]
    result.quant_names = [e[0] for e in quant_entries]


def _stream(path, entries, metadata, spill: _Spill):
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(_header_bytes([(n, d, s) for n, d, s, _ in entries], metadata))
        for _, dtype, _shape, (how, src) in entries:
            if how == "array":
                f.write(np.ascontiguousarray(src, dtype=_NP_DTYPES[dtype]).tobytes())
            else:
                key, final = src
                for chunk in spill.stream(key, final):
                    f.write(chunk)
    os.replace(tmp, path)


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Dump a float model and its quantized version (qnumeric-dump/2). "
        "A library: import qnumeric.dump and call dump(); this entry point only reads a dump's header.",
    )
    p.add_argument("file", nargs="?", help="a .safetensors file: print its header (names, shapes, metadata)")
    args = p.parse_args(argv)
    if not args.file:
        p.print_help()
        return 0
    with open(args.file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", {})
    for k, v in meta.items():
        print(f"{k} = {v}")
    for k, v in header.items():
        print(f"{k}: {v['dtype']} {v['shape']}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
