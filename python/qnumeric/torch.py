"""qnumeric on live PyTorch models: compare and diagnose a float model and its quantized version.

    import qnumeric.torch as qt

    qmodel = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    report = qt.diagnose(model, qmodel, batches)          # one pass, then remedies end to end
    print(report)                                          # verdicts, headline, ranked remedies
    report.diagnosis.remedies[0]                           # {"kind": "keep-in", "layer": ..., "gain_db": ...}

What it does, for every *leaf* module of the quantized model that has a float module of the
same qualified name (eager static, dynamic, FX graph mode, fake-quant / QAT-prepared models):

* one pass over ``batches`` records each layer's output in both models, the quantized layer's
  input, and the float layer applied to that input (the *shadow*: the layer's own error), with
  the batches' attention masks (padding is left out of every figure). The records go to a
  ``qnumeric-dump/2`` pair in a temporary directory (:mod:`qnumeric.dump`; bounded memory);
* the Rust diagnosis reads it: per-layer and per-sample SQNR (cumulative and local), each
  layer's verdict (fine, inherited, data-sensitive, data-insensitive, implementation), the
  headline layer, and remedies measured by replaying layers from the recorded inputs;
* the remedies are then **measured end to end**: the quantized model is copied with one
  change (a module kept in float, per-channel weights, dynamic instead of static
  quantization, ...), run again on the batches, and its output compared with the float
  model's; the remedies are re-ranked by that gain.

Only PyTorch and NumPy are needed.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from . import _qnumeric
from .dump import (
    DumpResult,
    _call,
    _compile_filter,
    _disable_observers,
    _first_tensor,
    _fused_relu,
    _leaves,
    _restore_observers,
    _samples_and_mask,
    dump,
)

__all__ = ["Report", "compare", "diagnose", "apply_remedy", "output_sqnr", "compare_weights"]


@dataclass
class Report:
    """What :func:`diagnose` or :func:`compare` found."""

    #: The Numeric Suite's report of every recorded layer: cumulative and local SQNR, per
    #: layer and per sample.
    comparison: _qnumeric.NsReport
    #: The diagnosis (from :func:`compare`: verdicts and headline, no remedies).
    diagnosis: Optional[_qnumeric.Diagnosis]
    #: The layers recorded and what was skipped, and why.
    recorded: DumpResult
    #: :func:`compare`'s logs, ``(cumulative, local)``: merge those of other shards of the
    #: data into them (``NumericLog.merge``), then ``cumulative.report(local)``.
    logs: Optional[tuple] = None
    #: The model's output SQNR against the float model's, measured end to end (dB).
    output_sqnr_db: Optional[float] = None
    #: For each remedy measured end to end: the output SQNR with that change (dB), by
    #: ``(kind, layer, detail)`` (detail: the precision, bits, calibrator or format, or None).
    measured: Dict[tuple, float] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [str(self.diagnosis) if self.diagnosis is not None else str(self.comparison)]
        if self.recorded.skipped:
            parts.extend(f"skipped {k}: {v}" for k, v in self.recorded.skipped.items())
        if self.output_sqnr_db is not None:
            parts.append(f"model output, end to end: {self.output_sqnr_db:.2f} dB")
        return "\n".join(parts)

    def to_json(self) -> str:
        """The diagnosis as JSON (the ``qnumeric diagnose --json`` object), or the comparison."""
        return self.diagnosis.to_json() if self.diagnosis is not None else self.comparison.to_json()

    def to_html(self) -> str:
        """The diagnosis as a self-contained HTML page."""
        return self.diagnosis.to_html() if self.diagnosis is not None else ""

    def to_dict(self) -> dict:
        """The diagnosis (or comparison) as a dict."""
        return self.diagnosis.to_dict() if self.diagnosis is not None else self.comparison.to_dict()


def _record(float_model, quant_model, batches, workdir, **kw):
    fpath = os.path.join(workdir, "float.safetensors")
    qpath = os.path.join(workdir, "quant.safetensors")
    result = dump(float_model, quant_model, batches, fpath, qpath, **kw)
    if not result.layers:
        raise _qnumeric.NotFoundError(
            "qnumeric.torch: no layer of the quantized model has a float module of the same name "
            f"(skipped: {dict(list(result.skipped.items())[:5])})"
        )
    return fpath, qpath, result


def _unchanged(fmod: nn.Module, qmod: nn.Module) -> bool:
    if fmod is qmod:
        return True
    if type(fmod) is not type(qmod) or any(True for _ in qmod.children()):
        return False
    fs, qs = fmod.state_dict(), qmod.state_dict()
    if fs.keys() != qs.keys():
        return False
    return all(
        isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        for a, b in ((fs[k], qs[k]) for k in fs)
    )


class _Streamer:
    """Forward hooks that push each layer's outputs into two NumericLogs as the models run:
    cumulative (quantized layer against float layer) and local (the float layer on the
    quantized layer's input against the quantized layer). Nothing is kept across batches."""

    def __init__(self, float_model, quant_model, layer_filter, local: bool):
        keep = _compile_filter(layer_filter)
        self.fmods = dict(float_model.named_modules())
        self.qmods = dict(quant_model.named_modules())
        self.result = DumpResult()
        self.names = []
        for name, _ in _leaves(quant_model):
            if not keep(name):
                continue
            if name not in self.fmods:
                self.result.skipped[name] = "no float module of that name"
                continue
            self.names.append(name)
        self.local = local
        self.cumulative_log = _qnumeric.NumericLog()
        self.local_log = _qnumeric.NumericLog()
        self.float_out: Dict[str, np.ndarray] = {}
        self.quant_calls: Dict[str, int] = {}
        self.mask: Optional[np.ndarray] = None
        self.keep = 0
        self.order: List[str] = []
        self.in_shadow = False  # the float module runs on the quantized input: hooks stand by
        self.handles = []
        # Layers the quantization left alone (same type and parameters, nothing observing
        # or fake-quantizing them): their own error is zero by construction, so no shadow
        # runs for them (their local entry is the exact one).
        self.unchanged = {n for n in self.names if _unchanged(self.fmods[n], self.qmods[n])}
        # A quantized module with a fused ReLU (FX graph mode fuses `conv1` and the ReLU after
        # it into one module named `conv1`) is compared with its float module followed by
        # the ReLU, which is what it computes.
        self.post_relu = {n for n in self.names if _fused_relu(self.fmods[n], self.qmods[n])}

    def skip(self, name, reason):
        if name not in self.result.skipped:
            self.result.skipped[name] = reason
            self.cumulative_log.set_enabled(name, False)
            self.local_log.set_enabled(name, False)

    def install(self):
        for name in self.names:
            self.handles.append(self.fmods[name].register_forward_hook(self._float_hook(name)))
            self.handles.append(self.qmods[name].register_forward_hook(self._quant_hook(name)))

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []

    def _array(self, name, out, copy):
        t = out if isinstance(out, torch.Tensor) else None
        if t is None or t.dim() == 0:
            self.skip(name, "its output is not one tensor with a sample axis")
            return None
        t = _deq(t.detach())
        if not t.is_floating_point():
            self.skip(name, f"its output is {t.dtype}, not a float tensor")
            return None
        a = t[: self.keep].to(torch.float32, copy=copy).cpu().numpy()
        return a

    def _float_hook(self, name):
        def hook(module, inputs, out):
            if name in self.result.skipped or self.in_shadow:
                return
            if name in self.float_out:
                self.skip(name, "called more than once per forward")
                return
            if name in self.post_relu and isinstance(out, torch.Tensor):
                out = torch.relu(out)
            # a copy: an in-place operation later in the forward pass must not change it
            a = self._array(name, out, copy=True)
            if a is not None:
                self.float_out[name] = a

        return hook

    def _mask_for(self, a):
        m = self.mask
        if m is not None and a.ndim >= 2 and a.shape[:2] == m.shape:
            return m
        return None

    def _quant_hook(self, name):
        def hook(module, inputs, out):
            if name in self.result.skipped or self.in_shadow:
                return
            self.quant_calls[name] = self.quant_calls.get(name, 0) + 1
            if self.quant_calls[name] > 1:
                self.skip(name, "called more than once per forward")
                return
            f = self.float_out.get(name)
            if f is None:
                self.skip(name, "the float module did not run on this batch")
                return
            q = self._array(name, out, copy=False)
            if q is None:
                return
            if name not in self.order:
                self.order.append(name)
            mask = self._mask_for(f)
            if f.shape != q.shape:
                self.skip(name, f"outputs of shapes {f.shape} (float) and {q.shape} (quantized)")
                return
            try:
                self.cumulative_log.push(name, f, q, mask=mask)
            except _qnumeric.QnumericError as e:
                self.skip(name, f"cannot be compared: {e}")
                return
            if not self.local:
                return
            if name in self.unchanged:
                # its own error is zero: the float module on this input computes `q` again
                try:
                    self.local_log.push(name, q, q, mask=mask)
                except _qnumeric.QnumericError:
                    self.local_log.set_enabled(name, False)
                return
            x = inputs[0] if len(inputs) == 1 and isinstance(inputs[0], torch.Tensor) else None
            if x is None:
                return  # several inputs: no shadow (the cumulative comparison stands)
            self.in_shadow = True
            try:
                x = _deq(x)
                shadow = self.fmods[name](x.float() if x.is_floating_point() else x)
                if name in self.post_relu and isinstance(shadow, torch.Tensor):
                    shadow = torch.relu(shadow)
            except Exception as e:  # the float module refuses the quantized module's input
                self.local_log.set_enabled(name, False)
                self.result.warnings.append(f"{name}: no local comparison ({type(e).__name__}: {e})")
                return
            finally:
                self.in_shadow = False
            s = self._array(name, shadow, copy=False)
            if s is None:
                return
            try:
                self.local_log.push(name, s, q, mask=mask)
            except _qnumeric.QnumericError as e:
                self.local_log.set_enabled(name, False)
                self.result.warnings.append(f"{name}: no local comparison ({e})")

        return hook

    def run(self, float_model, quant_model, batches, masks, max_samples):
        training = (float_model.training, quant_model.training)
        float_model.eval()
        quant_model.eval()
        total = 0
        mask_iter = iter(masks) if masks is not None else None
        # QAT observers stand still while comparing (the model's state is not the comparison's
        # to change); restored afterwards.
        observers = _disable_observers(quant_model)
        self.install()
        try:
            with torch.no_grad():
                for batch in batches:
                    n, mask = _samples_and_mask(batch, mask_iter)
                    self.keep = n if max_samples is None else min(n, max_samples - total)
                    if self.keep <= 0:
                        break
                    self.mask = None if mask is None else (mask[: self.keep] != 0).cpu().numpy()
                    self.float_out = {}
                    self.quant_calls = {}
                    _call(float_model, batch)
                    _call(quant_model, batch)
                    total += self.keep
        finally:
            self.remove()
            _restore_observers(observers)
            float_model.train(training[0])
            quant_model.train(training[1])
        self.result.layers = [n for n in self.order if n not in self.result.skipped]
        self.result.samples = total
        return total


def compare(
    float_model: nn.Module,
    quant_model: nn.Module,
    batches: Iterable[Any],
    *,
    masks: Optional[Iterable[torch.Tensor]] = None,
    layer_filter: Union[None, str, Callable[[str], bool]] = None,
    max_samples: Optional[int] = None,
    threshold: Optional[float] = None,
    local: bool = True,
) -> Report:
    """Compares every leaf module of ``quant_model`` with the float module of the same name,
    in one pass over ``batches`` (both models run once per batch; with ``local``, each float
    module also runs on the quantized module's input).

    ``batches`` are model inputs (a tensor, a tuple of positional tensors, or a dict of keyword
    tensors; a dict's ``attention_mask`` masks the padding, or pass ``masks``). The statistics
    stream into two Rust ``NumericLog``\ s as the models run; no tensor is kept across
    batches. Returns a :class:`Report` with the Numeric Suite's report (cumulative and local
    SQNR per layer and per sample), the verdicts and headline (``diagnosis``, no remedies:
    :func:`diagnose` measures those), and the logs (merge other shards' into them).
    """
    if float_model is quant_model:
        raise ValueError("float_model and quant_model are the same object (quantize with inplace=False)")
    s = _Streamer(float_model, quant_model, layer_filter, local)
    s.run(float_model, quant_model, batches, None if masks is None else list(masks), max_samples)
    if not s.result.layers:
        raise _qnumeric.NotFoundError(
            "qnumeric.torch.compare: no layer of the quantized model could be compared with a float "
            f"module of the same name (skipped: {dict(list(s.result.skipped.items())[:5])})"
        )
    report = s.cumulative_log.report(s.local_log if local else None, threshold)
    return Report(
        comparison=report,
        diagnosis=report.diagnose(),
        recorded=s.result,
        logs=(s.cumulative_log, s.local_log),
    )


def diagnose(
    float_model: nn.Module,
    quant_model: nn.Module,
    batches: Iterable[Any],
    *,
    masks: Optional[Iterable[torch.Tensor]] = None,
    layer_filter: Union[None, str, Callable[[str], bool]] = None,
    max_samples: Optional[int] = None,
    sample_dims: int = 1,
    threshold: float = 20.0,
    min_gain: float = 0.5,
    end_to_end: bool = True,
    rebuild: Optional[Callable[[dict], Optional[nn.Module]]] = None,
    calibration: Optional[Iterable[Any]] = None,
    html: Optional[str] = None,
) -> Report:
    """Diagnoses ``quant_model`` against ``float_model`` on ``batches``.

    Each layer gets a verdict from its own error (the float layer on the quantized layer's
    input against the quantized layer), the diagnosis names the layer to look at first, and
    proposes remedies measured by replaying layers. With ``end_to_end`` (the default) every
    remedy :func:`apply_remedy` can apply is measured on the whole model: the quantized model
    is copied with that one change and run on the same batches; the remedies are then ranked
    by their end-to-end gain, as the Rust diagnosis ranks them.

    ``rebuild(remedy)``: your own way to build the quantized model with one remedy applied
    (for what needs your quantization recipe: another calibrator, more calibration data...),
    returning the model or ``None``; tried before :func:`apply_remedy`.

    ``calibration``: the calibration batches, for remedies that calibrate again (another
    observer for a layer's output); without them those remedies are not measured.

    ``sample_dims=2`` makes every real ``(n, t)`` position a sample (tokens as samples).
    ``html``: a path to write the diagnosis to, as a self-contained HTML page.
    """
    batches = list(batches)
    if masks is not None:
        masks = list(masks)
    if calibration is not None:
        calibration = list(calibration)
    with tempfile.TemporaryDirectory(prefix="qnumeric-") as d:
        fpath, qpath, rec = _record(
            float_model, quant_model, batches, d, masks=masks, layer_filter=layer_filter, max_samples=max_samples
        )
        cmp = _qnumeric.compare_dumps(fpath, qpath).report
        diag = _qnumeric.diagnose_dumps(
            fpath, qpath, sample_dims=sample_dims, threshold=threshold, min_gain=min_gain
        )
    report = Report(comparison=cmp, diagnosis=diag, recorded=rec)
    if end_to_end:
        base = output_sqnr(float_model, quant_model, batches, masks=masks, max_samples=max_samples)
        report.output_sqnr_db = base
        rust_now = diag.output_sqnr_db

        def rerun(remedy):
            changed = rebuild(remedy) if rebuild is not None else None
            if changed is None:
                changed = apply_remedy(float_model, quant_model, remedy, calibration)
            if changed is None:
                return None
            db = output_sqnr(float_model, changed, batches, masks=masks, max_samples=max_samples)
            report.measured[_remedy_key(remedy)] = db
            if rust_now is None or not np.isfinite(base) or not np.isfinite(db):
                return db
            # The gain is measured end to end, both runs the same way; it is reported on the
            # diagnosis' scale (its output SQNR is the last recorded layer's).
            return rust_now + (db - base)

        diag.measure_end_to_end(rerun)
        # what helped its layer but not the model's output is not proposed
        diag.drop_remedies_below(min_gain)
    if html is not None:
        _write_html(report, html)
    return report


# ---------------------------------------------------------------------------------------------
# End-to-end measurement.


def _remedy_key(remedy: dict) -> tuple:
    detail = next((remedy[k] for k in ("precision", "bits", "calibrator", "format", "on", "alpha") if k in remedy), None)
    return (remedy.get("kind"), remedy.get("layer"), None if detail is None else str(detail))


def _outputs(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    for key in ("logits", "last_hidden_state"):
        v = getattr(out, key, None) if not isinstance(out, dict) else out.get(key)
        if isinstance(v, torch.Tensor):
            return [v]
    t = _first_tensor(out)
    return [] if t is None else [t]


def _mask_of(batch, masks, i):
    if masks is not None:
        return masks[i]
    if isinstance(batch, dict) and isinstance(batch.get("attention_mask"), torch.Tensor):
        return batch["attention_mask"]
    return None


def _deq(t: torch.Tensor) -> torch.Tensor:
    return t.dequantize() if t.is_quantized else t


def output_sqnr(
    float_model: nn.Module,
    quant_model: nn.Module,
    batches: Sequence[Any],
    *,
    masks: Optional[Sequence[torch.Tensor]] = None,
    max_samples: Optional[int] = None,
) -> float:
    """The SQNR (dB) of ``quant_model``'s output against ``float_model``'s over ``batches``
    (padding positions of ``[N, T, ...]`` outputs left out when masks are known)."""
    fs, qs = [], []
    seen = 0
    training = (float_model.training, quant_model.training)
    float_model.eval()
    quant_model.eval()
    try:
        with torch.no_grad():
            for i, b in enumerate(batches):
                if max_samples is not None and seen >= max_samples:
                    break
                fo = [_deq(t).float() for t in _outputs(_call(float_model, b))]
                qo = [_deq(t).float() for t in _outputs(_call(quant_model, b))]
                m = _mask_of(b, masks, i)
                for f, q in zip(fo, qo):
                    if f.shape != q.shape:
                        raise _qnumeric.ShapeError(f"output_sqnr: outputs of shapes {tuple(f.shape)} and {tuple(q.shape)}")
                    n = f.shape[0] if f.dim() else 1
                    keep = n if max_samples is None else min(n, max_samples - seen)
                    f, q = f[:keep], q[:keep]
                    if m is not None and f.dim() >= 2 and tuple(f.shape[:2]) == tuple(m[:keep].shape):
                        sel = m[:keep].bool()
                        f, q = f[sel], q[sel]
                    fs.append(f.reshape(-1).double().numpy())
                    qs.append(q.reshape(-1).double().numpy())
                seen += fo[0].shape[0] if fo and fo[0].dim() else 1
    finally:
        float_model.train(training[0])
        quant_model.train(training[1])
    if not fs:
        raise _qnumeric.EmptyError("output_sqnr: no output to compare")
    return _qnumeric.sqnr(np.concatenate(fs), np.concatenate(qs))


# ---------------------------------------------------------------------------------------------
# Remedies applied to a copy of the quantized model.


class FloatIsland(nn.Module):
    """A float module inside a quantized model: dequantizes its input, runs the float module,
    and requantizes the output with the replaced module's output parameters when that module
    produced quantized tensors (so the next quantized module still receives what it expects)."""

    def __init__(
        self,
        float_module: nn.Module,
        out_scale=None,
        out_zero_point=None,
        out_dtype=torch.quint8,
        precision: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.precision = precision
        self.float_module = float_module.to(precision)
        self.out_scale = out_scale
        self.out_zero_point = out_zero_point
        self.out_dtype = out_dtype

    def forward(self, *args, **kwargs):
        def cast(a):
            if isinstance(a, torch.Tensor):
                a = _deq(a)
                return a.to(self.precision) if a.is_floating_point() else a
            return a

        y = self.float_module(*[cast(a) for a in args], **{k: cast(v) for k, v in kwargs.items()})
        if isinstance(y, torch.Tensor) and y.is_floating_point():
            y = y.float()
        if self.out_scale is not None and isinstance(y, torch.Tensor):
            y = torch.quantize_per_tensor(y, float(self.out_scale), int(self.out_zero_point), self.out_dtype)
        return y


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, leaf, module)


def _output_qparams(qmod: nn.Module):
    scale = getattr(qmod, "scale", None)
    zp = getattr(qmod, "zero_point", None)
    if scale is None or zp is None:
        return None, None
    try:
        return float(scale), int(zp)
    except (TypeError, ValueError):
        return None, None


_PRECISIONS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _float_island(float_model, qcopy, layer, precision=torch.float32):
    fmods = dict(float_model.named_modules())
    qmods = dict(qcopy.named_modules())
    if layer not in fmods or layer not in qmods:
        return None
    fmod = copy.deepcopy(fmods[layer]).float().eval()
    qmod = qmods[layer]
    scale, zp = _output_qparams(qmod)
    if scale is not None and not _is_dynamic(qmod):
        _set_module(qcopy, layer, FloatIsland(fmod, scale, zp, precision=precision))
    else:
        _set_module(qcopy, layer, FloatIsland(fmod, precision=precision))
    return qcopy


def _is_dynamic(m: nn.Module) -> bool:
    return ".dynamic." in type(m).__module__


def _per_channel_weights(float_model, qcopy, layer):
    qmods = dict(qcopy.named_modules())
    fmods = dict(float_model.named_modules())
    if layer not in qmods or layer not in fmods:
        return None
    qmod, fmod = qmods[layer], fmods[layer]
    w = getattr(fmod, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() < 2:
        return None
    if not hasattr(qmod, "set_weight_bias") or not callable(getattr(qmod, "weight", None)):
        return None
    wq_old = qmod.weight()
    if not wq_old.is_quantized:
        return None
    obs = _qnumeric.PerChannelMinMaxObserver(ch_axis=0, dtype="qint8", qscheme="per_channel_symmetric")
    obs.observe(w.detach().float().numpy())
    p = obs.qparams()
    wq = torch.quantize_per_channel(
        w.detach().float(),
        torch.tensor(p.scales, dtype=torch.double),
        torch.tensor(p.zero_points, dtype=torch.long),
        0,
        torch.qint8,
    )
    b = getattr(fmod, "bias", None)
    qmod.set_weight_bias(wq, None if b is None else b.detach().float())
    return qcopy


def _weight_bits(float_model, qcopy, layer, bits):
    """The layer's weight re-quantized from the float weight to ``bits`` (symmetric, same
    granularity as now: PyTorch's default weight observers)."""
    qmods = dict(qcopy.named_modules())
    fmods = dict(float_model.named_modules())
    if layer not in qmods or layer not in fmods or not 2 <= int(bits) <= 8:
        return None
    qmod, fmod = qmods[layer], fmods[layer]
    w = getattr(fmod, "weight", None)
    if not isinstance(w, torch.Tensor) or not hasattr(qmod, "set_weight_bias") or not callable(getattr(qmod, "weight", None)):
        return None
    old = qmod.weight()
    if not old.is_quantized:
        return None
    lo, hi = -(2 ** (int(bits) - 1)), 2 ** (int(bits) - 1) - 1
    wf = w.detach().float()
    if old.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        obs = _qnumeric.PerChannelMinMaxObserver(ch_axis=0, dtype="qint8", qscheme="per_channel_symmetric", quant_min=lo, quant_max=hi)
        obs.observe(wf.numpy())
        p = obs.qparams()
        wq = torch.quantize_per_channel(wf, torch.tensor(p.scales, dtype=torch.double), torch.tensor(p.zero_points, dtype=torch.long), 0, torch.qint8)
    else:
        obs = _qnumeric.MinMaxObserver(dtype="qint8", qscheme="per_tensor_symmetric", quant_min=lo, quant_max=hi)
        obs.observe(wf.numpy())
        p = obs.qparams()
        wq = torch.quantize_per_tensor(wf, p.scale, p.zero_point, torch.qint8)
    b = getattr(fmod, "bias", None)
    qmod.set_weight_bias(wq, None if b is None else b.detach().float())
    return qcopy


_CALIBRATORS = {
    "min-max": lambda rr: _qnumeric.MinMaxObserver(reduce_range=rr),
    "histogram": lambda rr: _qnumeric.HistogramObserver(reduce_range=rr),
    "percentile9999": lambda rr: _qnumeric.PercentileObserver(99.99, dtype="quint8", qscheme="per_tensor_affine", reduce_range=rr),
    "entropy": lambda rr: _qnumeric.EntropyObserver(dtype="quint8", qscheme="per_tensor_affine", reduce_range=rr),
    "mse": lambda rr: _qnumeric.MseObserver(dtype="quint8", qscheme="per_tensor_affine", reduce_range=rr),
}


def _observer(float_model, qcopy, layer, calibrator, calibration):
    """The layer's output parameters chosen by another calibrator, observing the float
    module's outputs on ``calibration``; set on the quantized module (a static module
    requantizes its output with its ``scale`` and ``zero_point``)."""
    qmods = dict(qcopy.named_modules())
    fmods = dict(float_model.named_modules())
    make = _CALIBRATORS.get(calibrator)
    if make is None or calibration is None or layer not in qmods or layer not in fmods:
        return None
    qmod, fmod = qmods[layer], fmods[layer]
    scale, zp = _output_qparams(qmod)
    if scale is None or _is_dynamic(qmod):
        return None
    # PyTorch's default x86 / fbgemm activation observers use reduce_range (0..127).
    obs = make(torch.backends.quantized.engine in ("x86", "fbgemm"))
    post = torch.relu if _fused_relu(fmod, qmod) else None

    def hook(module, inputs, out):
        if isinstance(out, torch.Tensor):
            out = post(out) if post is not None else out
            obs.observe(out.detach().float().cpu().numpy())

    handle = fmod.register_forward_hook(hook)
    training = float_model.training
    float_model.eval()
    try:
        with torch.no_grad():
            for b in calibration:
                _call(float_model, b)
    finally:
        handle.remove()
        float_model.train(training)
    p = obs.qparams()
    for attr, v in (("scale", float(p.scale)), ("zero_point", int(p.zero_point))):
        old = getattr(qmod, attr)
        if isinstance(old, torch.Tensor):  # a buffer (Quantize, the converted QuantStub)
            old.fill_(v)
        else:
            setattr(qmod, attr, v)
    return qcopy


def _dynamic_linear(float_model, qcopy):
    fcopy = copy.deepcopy(float_model).eval()
    if not any(isinstance(m, nn.Linear) for m in fcopy.modules()):
        return None
    return torch.ao.quantization.quantize_dynamic(fcopy, {nn.Linear}, dtype=torch.qint8)


def apply_remedy(
    float_model: nn.Module,
    quant_model: nn.Module,
    remedy: dict,
    calibration: Optional[Sequence[Any]] = None,
) -> Optional[nn.Module]:
    """A copy of ``quant_model`` with ``remedy`` (a dict of ``Diagnosis.remedies``) applied,
    or ``None`` when it cannot be applied to a live model without re-running the user's
    quantization recipe (another calibrator, more calibration data, QAT...).

    Applied: ``keep-in`` (fp32, fp16, bf16) and ``fix-kernel`` (the module replaced by its
    float module run in that precision, the input dequantized and the output requantized
    with the module's own output parameters), ``per-channel-weights`` (the float weight
    quantized per output channel, symmetric qint8), ``weight-bits`` (the float weight
    re-quantized at that width, same granularity), ``dynamic-linear`` (the float model
    quantized with ``quantize_dynamic``), ``observer`` (a static module's output parameters
    chosen by that calibrator on the float module's outputs over ``calibration``, with
    PyTorch's default ``reduce_range`` for the engine; needs ``calibration``)."""
    kind = remedy.get("kind")
    layer = remedy.get("layer")
    if kind == "dynamic-linear":
        return _dynamic_linear(float_model, quant_model)
    if layer is None:
        return None
    qcopy = copy.deepcopy(quant_model)
    if kind == "fix-kernel":
        return _float_island(float_model, qcopy, layer)
    if kind == "keep-in" and remedy.get("precision") in _PRECISIONS:
        return _float_island(float_model, qcopy, layer, _PRECISIONS[remedy["precision"]])
    if kind == "per-channel-weights":
        return _per_channel_weights(float_model, qcopy, layer)
    if kind == "weight-bits" and isinstance(remedy.get("bits"), int):
        return _weight_bits(float_model, qcopy, layer, remedy["bits"])
    if kind == "observer":
        return _observer(float_model, qcopy, layer, remedy.get("calibrator"), calibration)
    return None


# ---------------------------------------------------------------------------------------------
# Weights.


def _dequantized_state(sd: Dict[str, Any]) -> Dict[str, np.ndarray]:
    out = {}
    for k, v in sd.items():
        if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_quantized):
            out[k] = _deq(v).detach().float().numpy()
        elif isinstance(v, tuple) and k.endswith("_packed_params"):
            for t in v:
                if isinstance(t, torch.Tensor) and t.is_quantized:
                    out[k.rsplit("._packed_params", 1)[0].rsplit("._packed_params", 1)[0] + ".weight"] = (
                        t.dequantize().float().numpy()
                    )
                    break
    return out


def compare_weights(float_state: Dict[str, Any], quant_state: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """Compares the weights of two state dicts by name (PyTorch's ``compare_weights``): for
    every ``*.weight`` present in both (quantized ones dequantized; dynamic modules' packed
    parameters unpacked), the SQNR, the largest absolute error and the worst output channel's
    SQNR (dB)."""
    f = _dequantized_state(float_state)
    q = _dequantized_state(quant_state)
    out = {}
    for k in sorted(set(f) & set(q)):
        if not k.endswith("weight") or f[k].shape != q[k].shape or f[k].size == 0:
            continue
        a, b = f[k].astype(np.float64), q[k].astype(np.float64)
        row = {"sqnr_db": _qnumeric.sqnr(a, b), "max_abs_error": _qnumeric.max_abs_error(a, b)}
        if a.ndim >= 2:
            per = [_qnumeric.sqnr(a[c].ravel(), b[c].ravel()) for c in range(a.shape[0]) if np.any(a[c])]
            row["worst_channel_sqnr_db"] = min(per) if per else float("inf")
        out[k] = row
    return out


def _write_html(report: Report, path: str) -> None:
    """The diagnosis' self-contained HTML page (the crate's), with the end-to-end figure."""
    page = report.diagnosis.to_html() if report.diagnosis is not None else ""
    if report.output_sqnr_db is not None:
        note = f"<p>Model output against the float model, end to end: {report.output_sqnr_db:.2f} dB.</p>"
        page = page.replace("</h1>", "</h1>" + note, 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
