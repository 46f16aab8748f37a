"""Tests of qnumeric.dump, the PyTorch dump writer (pytest). Need PyTorch; skipped, visibly,
without it. The end-to-end tests also run the `qnumeric` CLI named by QNUMERIC_BIN.

    pip install torch
    QNUMERIC_BIN=target/release/qnumeric python3 -m pytest -rs python/tests
"""

import copy
import json
import math
import os
import struct
import subprocess

import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed: the qnumeric.dump tests are skipped")
np = pytest.importorskip("numpy", reason="numpy not installed: the torch-dump tests are skipped")

from torch import nn  # noqa: E402

from qnumeric.dump import FORMAT, dump, write_safetensors  # noqa: E402

# torch 2.10+ deprecates torch.ao.quantization (kept working; the helper supports it).
pytestmark = [
    pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated"),
    pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions"),
]

# ----------------------------------------------------------------------------------------------
# A tiny reader: the format, checked as it is read.

_DT = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "U8": "u1", "I8": "i1", "I32": "<i4", "I64": "<i8"}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0, "header length is a multiple of 8"
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    assert all(isinstance(v, str) for v in meta.values())
    base, end, out = 8 + n, 0, {}
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        start, stop = e["data_offsets"]
        assert start == end, f"{name}: data is contiguous"
        end = stop
        dt = np.dtype(_DT[e["dtype"]])
        assert stop - start == dt.itemsize * math.prod(e["shape"])
        out[name] = np.frombuffer(data[base + start : base + stop], dtype=dt).reshape(e["shape"])
    assert base + end == len(data), "no trailing bytes"
    return out, meta


# ----------------------------------------------------------------------------------------------
# A tiny BERT in plain torch, HF names.

H, HEADS, INTER, LAYERS, VOCAB, MAXPOS = 32, 2, 128, 2, 50, 16


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)

    def forward(self, x, mask):
        b, t, _ = x.shape
        d = H // HEADS

        def split(y):
            return y.view(b, t, HEADS, d).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        scores = scores + (1.0 - mask[:, None, None, :].float()) * -1e4
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, H)


class SelfOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(H, H)
        self.LayerNorm = nn.LayerNorm(H)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.self = SelfAttention()
        self.output = SelfOutput()

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(H, INTER)
        self.intermediate_act_fn = nn.GELU()

    def forward(self, x):
        return self.intermediate_act_fn(self.dense(x))


class Output(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(INTER, H)
        self.LayerNorm = nn.LayerNorm(H)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = Attention()
        self.intermediate = Intermediate()
        self.output = Output()

    def forward(self, x, mask):
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.ModuleList([Layer() for _ in range(LAYERS)])

    def forward(self, x, mask):
        for layer in self.layer:
            x = layer(x, mask)
        return x


class Embeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, H)
        self.position_embeddings = nn.Embedding(MAXPOS, H)
        self.LayerNorm = nn.LayerNorm(H)

    def forward(self, input_ids):
        pos = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(pos))


class TinyBert(nn.Module):
    def __init__(self):
        super().__init__()
        self.embeddings = Embeddings()
        self.encoder = Encoder()

    def forward(self, input_ids, attention_mask):
        return self.encoder(self.embeddings(input_ids), attention_mask)


def bert_linears():
    names = []
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        names += [p + "attention.self.query", p + "attention.self.key", p + "attention.self.value"]
        names += [p + "attention.output.dense", p + "intermediate.dense", p + "output.dense"]
    return names


def bert_order():
    order = ["embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.LayerNorm"]
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        order += [p + "attention.self.query", p + "attention.self.key", p + "attention.self.value"]
        order += [p + "attention.output.dense", p + "attention.output.LayerNorm"]
        order += [p + "intermediate.dense", p + "intermediate.intermediate_act_fn"]
        order += [p + "output.dense", p + "output.LayerNorm"]
    return order


def make_bert():
    torch.manual_seed(0)
    model = TinyBert().eval()
    qmodel = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    return model, qmodel


def bert_batches(lengths=((7, 5, 3), (5, 5, 2), (6, 1, 4))):
    """Padded batches of three samples: dicts with input_ids and attention_mask."""
    g = torch.Generator().manual_seed(1)
    out = []
    for lens in lengths:
        t = max(lens)
        ids = torch.randint(1, VOCAB, (len(lens), t), generator=g)
        mask = torch.zeros(len(lens), t, dtype=torch.long)
        for i, n in enumerate(lens):
            mask[i, :n] = 1
            ids[i, n:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


@pytest.fixture(scope="module")
def bert_dump(tmp_path_factory):
    model, qmodel = make_bert()
    d = tmp_path_factory.mktemp("bert")
    fp, qp = str(d / "float.safetensors"), str(d / "quant.safetensors")
    batches = bert_batches()
    result = dump(model, qmodel, batches, fp, qp)
    f, fmeta = read_safetensors(fp)
    q, qmeta = read_safetensors(qp)
    return model, qmodel, batches, result, f, fmeta, q, qmeta


def test_bert_files_names_shapes_metadata(bert_dump):
    model, qmodel, batches, result, f, fmeta, q, qmeta = bert_dump
    assert result.samples == 9
    for meta in (fmeta, qmeta):
        assert meta["format"] == FORMAT
        assert meta["batch_size"] == "3"
    layers = json.loads(qmeta["layers"])
    assert json.loads(fmeta["layers"]) == layers
    for name in bert_linears():
        out = H if not name.endswith("intermediate.dense") else INTER
        inp = INTER if name.endswith(".output.dense") and "attention" not in name else H
        assert f[name].shape == (9, 7, out) and q[name].shape == (9, 7, out)
        assert q[name + ":input"].shape == (9, 7, inp)
        assert q[name + ":shadow"].shape == (9, 7, out)
        assert f[name + ":weight"].shape == (out, inp) == q[name + ":weight"].shape
        assert f[name + ":bias"].shape == (out,) == q[name + ":bias"].shape
        assert name + ":input" not in f and name + ":shadow" not in f
        meta = layers[name]
        assert meta["kind"] == "linear"
        assert meta["weight"] == {"bits": 8, "granularity": "per_tensor", "symmetric": True}
        engine = torch.backends.quantized.engine
        assert meta["activation"] == {
            "mode": "dynamic",
            "bits": 8,
            "reduce_range": engine in ("fbgemm", "x86"),
            "granularity": "per_tensor",
        }
    assert layers["encoder.layer.0.output.LayerNorm"] == {"kind": "other"}
    # Float outputs are the float model's: the last layer is the model's output.
    for b, batch in enumerate(batches):
        ref = model(**batch).detach().numpy()
        t = ref.shape[1]
        np.testing.assert_array_equal(f["encoder.layer.1.output.LayerNorm"][3 * b : 3 * b + 3, :t], ref)
    # Embedding inputs are token ids: no :input, and the result says why.
    assert "embeddings.word_embeddings:input" not in q
    assert "not floating point" in result.skipped["embeddings.word_embeddings:input"]
    assert "embeddings.word_embeddings:shadow" in q
    assert set(result.layers) == set(bert_order())


def test_bert_order_is_execution_order(bert_dump):
    model, qmodel, batches, result, f, fmeta, q, qmeta = bert_dump
    assert json.loads(qmeta["order"]) == bert_order()
    assert json.loads(fmeta["order"]) == bert_order()
    # and the same as hooks on the quantized model see it
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: seen.append(n) if n not in seen else None)
        for n, m in qmodel.named_modules()
        if n in bert_order()
    ]
    with torch.no_grad():
        qmodel(**batches[0])
    for h in hooks:
        h.remove()
    assert seen == bert_order()


def test_bert_mask_written_and_padding(bert_dump):
    model, qmodel, batches, result, f, fmeta, q, qmeta = bert_dump
    want = np.zeros((9, 7), dtype=np.uint8)
    for b, batch in enumerate(batches):
        m = batch["attention_mask"].numpy()
        want[3 * b : 3 * b + 3, : m.shape[1]] = m
    np.testing.assert_array_equal(f["__mask__"], want)
    np.testing.assert_array_equal(q["__mask__"], want)
    # the second batch (T = 5) is zero-padded to 7
    assert not q["encoder.layer.0.intermediate.dense"][3:6, 5:].any()


def test_bert_shadow_is_float_layer_on_recorded_input(bert_dump):
    model, qmodel, batches, result, f, fmeta, q, qmeta = bert_dump
    fmods = dict(model.named_modules())
    mask = q["__mask__"].astype(bool)
    for name in bert_linears():
        x = torch.from_numpy(q[name + ":input"].copy())
        want = fmods[name](x).detach().numpy()
        np.testing.assert_allclose(q[name + ":shadow"][mask], want[mask], rtol=0, atol=1e-6)
    # non-linear leaves too: the float GELU on the quantized model's input
    name = "encoder.layer.0.intermediate.intermediate_act_fn"
    x = torch.from_numpy(q[name + ":input"].copy())
    np.testing.assert_array_equal(q[name + ":shadow"][mask], nn.GELU()(x).numpy()[mask])
    # and the quantized output is not the shadow (the layer does lose something)
    name = "encoder.layer.0.attention.self.query"
    assert np.abs(q[name][mask] - q[name + ":shadow"][mask]).max() > 0


def test_bert_weights(bert_dump):
    model, qmodel, batches, result, f, fmeta, q, qmeta = bert_dump
    qmods, fmods = dict(qmodel.named_modules()), dict(model.named_modules())
    for name in bert_linears():
        np.testing.assert_array_equal(q[name + ":weight"], qmods[name].weight().dequantize().numpy())
        np.testing.assert_array_equal(q[name + ":bias"], qmods[name].bias().detach().numpy())
        np.testing.assert_array_equal(f[name + ":weight"], fmods[name].weight.detach().numpy())
        np.testing.assert_array_equal(f[name + ":bias"], fmods[name].bias.detach().numpy())
    np.testing.assert_array_equal(
        f["embeddings.LayerNorm:weight"], fmods["embeddings.LayerNorm"].weight.detach().numpy()
    )


def test_max_samples_and_layer_filter(tmp_path):
    model, qmodel = make_bert()
    fp, qp = str(tmp_path / "f.safetensors"), str(tmp_path / "q.safetensors")
    result = dump(model, qmodel, bert_batches(), fp, qp, max_samples=4, layer_filter=r"attention\.self\.")
    f, fmeta = read_safetensors(fp)
    q, qmeta = read_safetensors(qp)
    assert result.samples == 4
    layers = [n for n in bert_linears() if ".attention.self." in n]
    assert json.loads(qmeta["order"]) == layers == result.layers
    assert {k for k in f if ":" not in k and k != "__mask__"} == set(layers)
    for name in layers:
        assert q[name].shape == (4, 7, H)
    assert q["__mask__"].shape == (4, 7)
    np.testing.assert_array_equal(q["__mask__"][3, :5], np.ones(5, dtype=np.uint8))

    result = dump(model, qmodel, bert_batches(), fp, qp, layer_filter=lambda n: n == "encoder.layer.1.output.dense")
    q, qmeta = read_safetensors(qp)
    assert result.layers == ["encoder.layer.1.output.dense"]
    assert q["encoder.layer.1.output.dense"].shape == (9, 7, H)


def test_explicit_masks_and_tuple_batches(tmp_path):
    model, qmodel = make_bert()
    batches = bert_batches()
    masks = [b["attention_mask"] for b in batches]
    tuples = [(b["input_ids"], b["attention_mask"]) for b in batches]
    fp, qp = str(tmp_path / "f.safetensors"), str(tmp_path / "q.safetensors")
    result = dump(model, qmodel, tuples, fp, qp, masks=masks, batch_size=16, layer_filter="^encoder.layer.0.output")
    q, qmeta = read_safetensors(qp)
    assert qmeta["batch_size"] == "16"
    assert result.layers == ["encoder.layer.0.output.dense", "encoder.layer.0.output.LayerNorm"]
    assert q["__mask__"].shape == (9, 7)


class TupleOut(nn.Module):
    def forward(self, x):
        return x, x


class WithTuple(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.pair = TupleOut()
        self.pool = nn.Linear(4, 2)

    def forward(self, x):
        a, _ = self.pair(self.fc(x))
        return self.pool(a.mean(0, keepdim=True))  # [1, 2]: not sample-first


def test_non_sample_first_outputs_are_skipped(tmp_path):
    torch.manual_seed(0)
    model = WithTuple().eval()
    qmodel = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    fp, qp = str(tmp_path / "f.safetensors"), str(tmp_path / "q.safetensors")
    result = dump(model, qmodel, [torch.randn(3, 4), torch.randn(3, 4)], fp, qp)
    q, qmeta = read_safetensors(qp)
    assert result.layers == ["fc"]
    assert "not one tensor" in result.skipped["pair"]
    assert "not sample-first" in result.skipped["pool"]
    assert "__mask__" not in q
    assert q["fc"].shape == (6, 4)


def test_modules_shared_by_both_models(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    qmodel = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    qmodel[1] = model[1]  # one ReLU object in both models: recorded once per model
    fp, qp = str(tmp_path / "f.safetensors"), str(tmp_path / "q.safetensors")
    result = dump(model, qmodel, [torch.randn(3, 4)], fp, qp)
    assert result.layers == ["0", "1"] and not [k for k in result.skipped if not k.endswith(":input")]
    f, _ = read_safetensors(fp)
    q, _ = read_safetensors(qp)
    np.testing.assert_array_equal(f["1"], f["0"].clip(min=0))
    np.testing.assert_array_equal(q["1"], q["0"].clip(min=0))
    with pytest.raises(ValueError):
        dump(model, model, [torch.randn(3, 4)], fp, qp)


# ----------------------------------------------------------------------------------------------
# An eager static-quantized CNN


class TinyCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(1, 4, 3, stride=1, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=0, dilation=1, groups=2)
        self.fc = nn.Linear(4 * 3 * 3, 5)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        x = self.relu(self.conv(self.quant(x)))
        x = self.conv2(x)
        return self.dequant(self.fc(torch.flatten(x, 1)))


def _engine():
    engines = torch.backends.quantized.supported_engines
    for e in ("x86", "fbgemm"):
        if e in engines:
            return e
    pytest.skip(f"no x86/fbgemm quantized engine ({engines})")


def test_static_cnn_geometry_and_output_qparams(tmp_path):
    engine = _engine()
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        torch.manual_seed(0)
        model = TinyCnn().eval()
        prepared = copy.deepcopy(model)
        prepared.qconfig = torch.ao.quantization.get_default_qconfig(engine)
        torch.ao.quantization.prepare(prepared, inplace=True)
        with torch.no_grad():
            for _ in range(4):
                prepared(torch.randn(8, 1, 8, 8))
        qmodel = torch.ao.quantization.convert(prepared)
        batches = [torch.randn(4, 1, 8, 8) for _ in range(3)]
        fp, qp = str(tmp_path / "f.safetensors"), str(tmp_path / "q.safetensors")
        result = dump(model, qmodel, batches, fp, qp)
    finally:
        torch.backends.quantized.engine = old
    f, fmeta = read_safetensors(fp)
    q, qmeta = read_safetensors(qp)
    # the QuantStub is a layer (the input's quantization); the DeQuantStub is not
    assert json.loads(qmeta["order"]) == ["quant", "conv", "relu", "conv2", "fc"] == result.layers
    assert "quant" in q and "dequant" not in q
    np.testing.assert_array_equal(q["quant:shadow"], q["quant:input"])
    layers = json.loads(qmeta["layers"])
    assert layers["conv"]["kind"] == "conv2d"
    assert layers["conv"]["conv"] == {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
    assert layers["conv2"]["conv"] == {"stride": [2, 2], "padding": [0, 0], "dilation": [1, 1], "groups": 2}
    assert layers["fc"]["kind"] == "linear" and "conv" not in layers["fc"]
    assert layers["conv"]["weight"] == {"bits": 8, "granularity": "per_channel", "symmetric": True}
    for name in ("conv", "conv2", "fc"):
        m = dict(qmodel.named_modules())[name]
        act = layers[name]["activation"]
        assert act["mode"] == "static"
        # the calibrated parameters of the quantized input the module received
        assert act["dtype"] == "quint8" and act["scale"] > 0 and 0 <= act["zero_point"] <= 255
        x = q[name + ":input"]
        np.testing.assert_allclose(
            np.round(x / act["scale"] + act["zero_point"]), x / act["scale"] + act["zero_point"], atol=1e-3
        )
        out = layers[name]["output"]
        assert out["dtype"] == "quint8"
        assert out["scale"] == pytest.approx(float(m.scale), rel=1e-12)
        assert out["zero_point"] == int(m.zero_point)
        np.testing.assert_array_equal(q[name + ":weight"], m.weight().dequantize().numpy())
    assert q["conv"].shape == f["conv"].shape == (12, 4, 8, 8)
    assert q["conv:input"].shape == (12, 1, 8, 8)
    assert q["conv:weight"].shape == (4, 1, 3, 3) and q["conv2:weight"].shape == (4, 2, 3, 3)
    # shadow: the float conv on the dequantized input
    want = model.conv(torch.from_numpy(q["conv:input"].copy())).detach().numpy()
    np.testing.assert_allclose(q["conv:shadow"], want, rtol=0, atol=1e-6)
    # the quantized output sits on its grid
    s, z = layers["conv"]["output"]["scale"], layers["conv"]["output"]["zero_point"]
    np.testing.assert_allclose(np.round(q["conv"] / s + z), q["conv"] / s + z, atol=1e-3)
    np.testing.assert_array_equal(f["conv"], model.conv(torch.cat(batches)).detach().numpy())


# ----------------------------------------------------------------------------------------------
# End to end: the crate's CLI on a dump with one layer's weights on 3 bits.


def _three_bit(qlinear):
    """Replace a dynamic quantized Linear's weight by a 3-bit per-tensor symmetric version."""
    w = qlinear.weight().dequantize()
    b = qlinear.bias()
    scale = float(w.abs().max()) / 4
    q3 = torch.clamp(torch.round(w / scale), -4, 3)
    qlinear.set_weight_bias(torch.quantize_per_tensor(q3 * scale, scale, 0, torch.qint8), b)


def test_end_to_end_cli_finds_the_three_bit_layer(tmp_path):
    binary = os.environ.get("QNUMERIC_BIN")
    if not binary:
        pytest.skip("QNUMERIC_BIN not set: the end-to-end test needs the qnumeric CLI (cargo build --release --features cli)")
    if not os.path.exists(binary):
        pytest.skip(f"QNUMERIC_BIN={binary} does not exist: build it with cargo build --release --features cli")
    model, qmodel = make_bert()
    target = "encoder.layer.0.intermediate.dense"
    _three_bit(dict(qmodel.named_modules())[target])
    batches = bert_batches(((7, 7, 6, 5), (7, 4, 7, 7), (6, 7, 7, 3), (7, 7, 5, 7)))
    fp, qp = str(tmp_path / "f.safetensors"), str(tmp_path / "q.safetensors")
    result = dump(model, qmodel, batches, fp, qp)
    q, qmeta = read_safetensors(qp)
    assert json.loads(qmeta["layers"])[target]["weight"] == {"bits": 3, "granularity": "per_tensor", "symmetric": True}
    assert target in result.layers

    run = subprocess.run([binary, "diagnose", fp, qp, "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["first_layer"] == target, run.stdout[:2000]
    assert report["headline"] == target, run.stdout[:2000]
    assert report["version"] == "v2" and report["masked"] is True
    # replayed from the dump: PyTorch's dynamic int8 reproduced, the layer's own remedy first
    assert not report["unmeasured"], report["unmeasured"]
    for layer in report["layers"]:
        assert layer["verdict"] != "implementation", layer
    remedies = report["remedies"]
    assert remedies, run.stdout[:2000]
    for r in remedies:
        assert {"layer", "kind", "gain_db", "scope"} <= set(r)
        assert r["scope"] in ("local", "end-to-end")
    assert remedies[0]["layer"] == target and remedies[0]["kind"] == "weight-bits", remedies[0]
    assert remedies[0]["gain_db"] > 10

    run = subprocess.run([binary, "compare", fp, qp], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert target in run.stdout


class TinyMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.fc1 = nn.Linear(32, 64)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(64, 16)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.fc2(self.relu(self.fc1(self.quant(x)))))


def test_end_to_end_static_model_is_replayed_without_a_false_implementation_verdict(tmp_path):
    """A healthy eager static model (per-channel weights, calibrated inputs, requantized
    outputs): the CLI replays each Linear with the dumped input and output parameters and
    finds nothing of its own; a kernel bug planted in one output is an implementation error."""
    binary = os.environ.get("QNUMERIC_BIN")
    if not binary or not os.path.exists(binary):
        pytest.skip("QNUMERIC_BIN not set or missing: the end-to-end test needs the qnumeric CLI")
    engine = _engine()
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        torch.manual_seed(1)
        model = TinyMlp().eval()
        prepared = copy.deepcopy(model)
        prepared.qconfig = torch.ao.quantization.get_default_qconfig(engine)
        torch.ao.quantization.prepare(prepared, inplace=True)
        with torch.no_grad():
            for _ in range(8):
                prepared(torch.randn(16, 32))
        qmodel = torch.ao.quantization.convert(prepared)
        batches = [torch.randn(16, 32) for _ in range(4)]
        fp, qp = str(tmp_path / "f.safetensors"), str(tmp_path / "q.safetensors")
        dump(model, qmodel, batches, fp, qp)
    finally:
        torch.backends.quantized.engine = old
    layers = json.loads(read_safetensors(qp)[1]["layers"])
    assert layers["fc2"]["activation"]["mode"] == "static" and "scale" in layers["fc2"]["activation"]

    run = subprocess.run([binary, "diagnose", fp, qp, "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert not report["unmeasured"], report["unmeasured"]
    for layer in report["layers"]:
        assert layer["verdict"] in ("fine", "inherited"), (layer["name"], layer["verdict"], layer["findings"])

    # A kernel bug: fc1's quantized output 25 % too large (written into the dump).
    q, qmeta = read_safetensors(qp)
    f, fmeta = read_safetensors(fp)
    q["fc1"] = q["fc1"] * 1.25
    bad = str(tmp_path / "bad.safetensors")
    write_safetensors(bad, q, qmeta)
    run = subprocess.run([binary, "diagnose", fp, bad, "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    fc1 = next(layer for layer in report["layers"] if layer["name"] == "fc1")
    assert fc1["verdict"] == "implementation", fc1
    assert report["headline"] == "fc1"
    assert report["remedies"][0]["kind"] == "fix-kernel"
