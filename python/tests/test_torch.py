"""qnumeric.torch on live models: a tiny BERT (dynamic int8) and a tiny CNN (eager static),
built from code with random weights. The healthy models get no verdict; the planted faults
(coarse weights, outlier inputs, one-class calibration, a kernel off by one) each get theirs,
and the remedies are measured end to end. Need PyTorch; skipped, visibly, without it."""

import copy

import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed: the qnumeric.torch tests are skipped")

from torch import nn  # noqa: E402

import qnumeric.torch as qt  # noqa: E402
from test_torch_dump import _engine, _three_bit, bert_batches, make_bert  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated"),
    pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions"),
    pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max"),
]

TARGET = "encoder.layer.0.intermediate.dense"
LENGTHS = ((7, 7, 6, 5), (7, 4, 7, 7), (6, 7, 7, 3), (7, 7, 5, 7))


def test_healthy_bert_gets_no_verdict():
    model, qmodel = make_bert()
    r = qt.diagnose(model, qmodel, bert_batches(LENGTHS))
    d = r.diagnosis
    assert d.verdict == "fine", str(r)
    assert d.headline is None
    assert all(v in ("fine", "inherited") for _, v in d.verdicts), d.verdicts
    assert r.output_sqnr_db > 30


def test_coarse_weights_in_bert_are_found_and_fixed_end_to_end(tmp_path):
    model, qmodel = make_bert()
    _three_bit(dict(qmodel.named_modules())[TARGET])
    page = tmp_path / "diagnosis.html"
    r = qt.diagnose(model, qmodel, bert_batches(LENGTHS), html=str(page))
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and TARGET in html and "end to end" in html
    assert "<svg" in html and "http://" not in html
    d = r.diagnosis
    assert d.verdict == "data-insensitive" and d.headline == TARGET and d.first_layer == TARGET, str(r)
    top = d.remedies[0]
    assert top["layer"] == TARGET and top["scope"] == "end-to-end", top
    assert top["gain_db"] > 8, top
    # the measured gain is the change of the model's output SQNR, run end to end
    key = ("keep-in" if top["kind"] == "keep-in" else top["kind"], TARGET)
    measured = [v for k, v in r.measured.items() if k[:2] == key]
    assert max(measured) - r.output_sqnr_db == pytest.approx(top["gain_db"], abs=1e-6)
    assert "end-to-end" in d.to_json()
    # the weight comparison names the layer too
    w = qt.compare_weights(model.state_dict(), qmodel.state_dict())
    worst = min(w, key=lambda k: w[k]["sqnr_db"])
    assert worst == TARGET + ".weight", w


def test_compare_streams_cumulative_and_local_with_masks():
    model, qmodel = make_bert()
    _three_bit(dict(qmodel.named_modules())[TARGET])
    batches = bert_batches(LENGTHS)
    r = qt.compare(model, qmodel, batches)
    assert not r.recorded.skipped, r.recorded.skipped
    d = r.comparison.to_dict()
    layers = {l["name"]: l for l in d["layers"]}
    assert len(layers) == 21
    for name, l in layers.items():
        assert len(l["cumulative"]["samples"]) == 16, name
        if "LayerNorm" not in name and "act_fn" not in name:
            assert l["local"] is not None, name
    assert r.diagnosis.headline == TARGET and r.diagnosis.verdict == "data-insensitive"
    # the same figures as the dump-based path (padding masked in both)
    dumped = qt.diagnose(model, qmodel, batches, end_to_end=False).comparison
    for name in (TARGET, "encoder.layer.1.output.dense"):
        for which in ("cumulative", "local"):
            assert r.comparison.sqnr_db(name, which) == pytest.approx(dumped.sqnr_db(name, which), rel=1e-9), (name, which)


def test_compare_logs_of_shards_merge_to_one_pass():
    model, qmodel = make_bert()
    batches = bert_batches(LENGTHS)
    whole = qt.compare(model, qmodel, batches)
    a = qt.compare(model, qmodel, batches[:1])
    b = qt.compare(model, qmodel, batches[1:])
    cum, loc = a.logs
    cum.merge(b.logs[0])
    loc.merge(b.logs[1])
    assert cum.report(loc).to_json() == whole.comparison.to_json()


# ----------------------------------------------------------------------------------------------
# A tiny CNN, eager static quantization.


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8 * 8 * 8, 10)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        x = self.relu1(self.conv1(self.quant(x)))
        x = self.relu2(self.conv2(x))
        return self.dequant(self.fc(torch.flatten(x, 1)))


def images(n, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g) * scale


def quantize_cnn(calibration):
    engine = _engine()
    torch.backends.quantized.engine = engine
    torch.manual_seed(0)
    model = Cnn().eval()
    prepared = copy.deepcopy(model)
    prepared.qconfig = torch.ao.quantization.get_default_qconfig(engine)
    torch.ao.quantization.prepare(prepared, inplace=True)
    with torch.no_grad():
        for b in calibration:
            prepared(b)
    return model, torch.ao.quantization.convert(prepared)


def test_healthy_cnn_gets_no_verdict():
    model, qmodel = quantize_cnn([images(32, s) for s in range(4)])
    r = qt.diagnose(model, qmodel, [images(32, 100 + s) for s in range(3)])
    assert r.diagnosis.verdict == "fine", str(r)
    assert all(v in ("fine", "inherited") for _, v in r.diagnosis.verdicts)


def test_outlier_inputs_are_data_sensitive_at_the_input_quantization():
    model, qmodel = quantize_cnn([images(32, s) for s in range(4)])
    batches = [images(32, 100 + s) for s in range(3)]
    bright = [3, 40, 77]
    for i in bright:
        batches[i // 32][i % 32] *= 8.0
    r = qt.diagnose(model, qmodel, batches)
    d = r.diagnosis
    assert d.verdict == "data-sensitive", str(r)
    assert d.first_layer == "quant", str(r)
    assert set(d.worst_samples[:3]) == set(bright), d.worst_samples


def test_one_class_calibration_is_data_sensitive():
    # Calibrated on one "class" (faint images), run on both: the bright class clips.
    model, qmodel = quantize_cnn([images(32, s, scale=0.25) for s in range(4)])
    faint = [images(16, 200 + s, scale=0.25) for s in range(3)]
    strong = [images(16, 300 + s, scale=1.0) for s in range(3)]
    batches = [torch.cat([a, b]) for a, b in zip(faint, strong)]
    r = qt.diagnose(model, qmodel, batches)
    d = r.diagnosis
    assert d.verdict == "data-sensitive", str(r)
    worst = d.worst_samples[:10]
    assert all((i % 32) >= 16 for i in worst), worst  # the class not calibrated on


class OffByOneLinear(torch.ao.nn.quantized.Linear):
    """A quantized Linear whose kernel adds one quantum to every output. (Linear layers are
    replayed from the dump with the crate's int8 kernel, which is what finds the bug.)"""

    def forward(self, x):
        y = super().forward(x)
        q = torch.clamp(y.int_repr().int() + 1, 0, 255).to(torch.uint8)
        return torch._make_per_tensor_quantized_tensor(q, y.q_scale(), y.q_zero_point())


def test_a_kernel_off_by_one_is_an_implementation_error():
    model, qmodel = quantize_cnn([images(32, s) for s in range(4)])
    qmodel.fc.__class__ = OffByOneLinear
    r = qt.diagnose(model, qmodel, [images(32, 100 + s) for s in range(3)])
    d = r.diagnosis
    assert dict(d.verdicts)["fc"] == "implementation", str(r)
    assert d.verdict == "implementation" and d.headline == "fc"
    assert all(v in ("fine", "inherited") for n, v in d.verdicts if n != "fc"), d.verdicts
    top = d.remedies[0]
    assert top["kind"] == "fix-kernel" and top["layer"] == "fc", top
    # measured end to end: fc in float instead of the broken kernel
    assert top["scope"] == "end-to-end" and top["gain_db"] > 0, top


def test_apply_remedy_leaves_the_model_alone():
    model, qmodel = quantize_cnn([images(32, s) for s in range(2)])
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in qmodel.state_dict().items()}
    changed = qt.apply_remedy(model, qmodel, {"kind": "keep-in", "precision": "F32", "layer": "conv2"})
    assert isinstance(changed.conv2, qt.FloatIsland) and not isinstance(qmodel.conv2, qt.FloatIsland)
    assert qt.apply_remedy(model, qmodel, {"kind": "observer", "layer": "conv2"}) is None
    assert qt.apply_remedy(model, qmodel, {"kind": "keep-in", "precision": "F32", "layer": "nope"}) is None
    for k, v in qmodel.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v.dequantize() if v.is_quantized else v, before[k].dequantize() if before[k].is_quantized else before[k])
    x = [images(8, 5)]
    assert qt.output_sqnr(model, changed, x) > qt.output_sqnr(model, qmodel, x) - 1.0


def test_same_model_twice_is_refused():
    model, _ = quantize_cnn([images(8, 0)])
    with pytest.raises(ValueError):
        qt.diagnose(model, model, [images(4, 1)])


def test_fx_graph_mode_with_fused_relus_is_healthy():
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = _engine()
    torch.backends.quantized.engine = engine
    torch.manual_seed(0)
    model = Cnn().eval()
    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping(engine), (images(4, 0),))
    with torch.no_grad():
        for s in range(4):
            prepared(images(32, s))
    qmodel = convert_fx(prepared)
    assert "ReLU" in type(dict(qmodel.named_modules())["conv1"]).__name__  # conv1 + relu1 fused
    batches = [images(32, 100 + s) for s in range(3)]
    r = qt.compare(model, qmodel, batches)
    assert r.diagnosis.verdict == "fine", str(r)
    assert {"conv1", "conv2", "fc"} <= set(r.comparison.layers)
    assert r.comparison.sqnr_db("conv1", "local") > 30
    d = qt.diagnose(model, qmodel, batches)
    assert d.diagnosis.verdict == "fine", str(d)
    assert any("fused" in w for w in d.recorded.warnings)


def test_qat_prepared_model_is_compared_with_fake_quantization():
    engine = _engine()
    torch.backends.quantized.engine = engine
    torch.manual_seed(0)
    model = Cnn().eval()
    m = copy.deepcopy(model).train()
    m.qconfig = torch.ao.quantization.get_default_qat_qconfig(engine)
    qat = torch.ao.quantization.prepare_qat(m)
    for s in range(4):
        qat(images(32, s))
    batches = [images(32, 100 + s) for s in range(3)]
    r = qt.compare(model, qat, batches)
    assert r.diagnosis.verdict == "fine", str(r)
    assert 25 < r.comparison.sqnr_db("fc") < 60  # fake quantization: an error, a small one
    assert qat.training  # the training flag restored
    assert bool(qat.conv2.weight_fake_quant.observer_enabled)  # observers restored
    # a coarse fake-quantized weight: the layer's own error
    qat.conv2.weight_fake_quant.quant_min, qat.conv2.weight_fake_quant.quant_max = -4, 3
    qat.conv2.weight_fake_quant.activation_post_process.quant_min = -4
    qat.conv2.weight_fake_quant.activation_post_process.quant_max = 3
    qat.conv2.weight_fake_quant.scale *= 32
    r = qt.compare(model, qat, batches)
    assert r.diagnosis.headline == "conv2", str(r)


def test_the_readme_example_on_the_real_digits_model():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    import digits_torch

    report = digits_torch.main()
    d = report.diagnosis
    assert d.verdict == "data-sensitive" and d.first_layer == "quant", str(report)
    assert set(d.worst_samples) <= set(range(0, 500, 25))


def test_a_rebuild_hook_measures_what_needs_the_users_recipe():
    model, qmodel = make_bert()
    _three_bit(dict(qmodel.named_modules())[TARGET])
    healthy = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    asked = []

    def rebuild(remedy):
        asked.append(remedy["kind"])
        # the user's recipe, run again: here, the healthy quantization for the weight remedy
        return healthy if remedy["kind"] == "weight-bits" else None

    r = qt.diagnose(model, qmodel, bert_batches(LENGTHS), rebuild=rebuild)
    assert "weight-bits" in asked
    key = next(k for k in r.measured if k[0] == "weight-bits")
    assert r.measured[key] == pytest.approx(qt.output_sqnr(model, healthy, bert_batches(LENGTHS)), abs=1e-9)
    # a raising rebuild is kept as a measurement that failed, not a crash
    def broken(remedy):
        raise RuntimeError("recipe failed")

    r = qt.diagnose(model, qmodel, bert_batches(LENGTHS), rebuild=broken)
    assert "recipe failed" in r.diagnosis.to_json()


def test_another_observer_recalibrates_a_static_layers_output():
    calib = [images(32, s) for s in range(4)]
    model, qmodel = quantize_cnn(calib)
    qmodel.fc.scale = float(qmodel.fc.scale) * 40  # a wasted output range
    batches = [images(32, 100 + s) for s in range(3)]
    before = qt.output_sqnr(model, qmodel, batches)
    remedy = {"kind": "observer", "calibrator": "mse", "layer": "fc"}
    assert qt.apply_remedy(model, qmodel, remedy) is None  # needs calibration data
    fixed = qt.apply_remedy(model, qmodel, remedy, calib)
    assert qt.output_sqnr(model, fixed, batches) > before + 15
    assert float(qmodel.fc.scale) != float(fixed.fc.scale)  # the copy, not the model
    for name in ("min-max", "histogram", "percentile9999", "entropy"):
        assert qt.apply_remedy(model, qmodel, dict(remedy, calibrator=name), calib) is not None
    assert qt.apply_remedy(model, qmodel, dict(remedy, calibrator="magic"), calib) is None
