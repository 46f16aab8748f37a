"""The dump reader, `compare_dumps` and `diagnose_dumps` on dumps written with NumPy (the v1
layout: each layer's outputs, samples first, and the `order` metadata)."""

import numpy as np
import pytest

import qnumeric as qn
from conftest import write_safetensors

RNG = np.random.default_rng(11)


@pytest.fixture
def dumps(tmp_path):
    n = 64
    a = RNG.standard_normal((n, 32)).astype(np.float32)
    b = np.maximum(a @ RNG.standard_normal((32, 16)).astype(np.float32), 0)
    c = b @ RNG.standard_normal((16, 10)).astype(np.float32)
    quant = {
        "fc1": a + RNG.standard_normal(a.shape).astype(np.float32) * 1e-3,
        # the error jumps at fc2
        "fc2": b + RNG.standard_normal(b.shape).astype(np.float32) * np.float32(0.3 * b.std()),
        "fc3": c + RNG.standard_normal(c.shape).astype(np.float32) * np.float32(0.3 * c.std()),
    }
    f, q = tmp_path / "float.safetensors", tmp_path / "quant.safetensors"
    write_safetensors(f, {"fc1": a, "fc2": b, "fc3": c}, {"order": "fc1,fc2,fc3"})
    write_safetensors(q, quant, {"order": "fc1,fc2,fc3"})
    return str(f), str(q), {"fc1": a, "fc2": b, "fc3": c}, quant


def test_compare_finds_the_layer_where_the_error_jumps(dumps):
    f, q, fl, qu = dumps
    c = qn.compare_dumps(f, q)
    assert c.layers == ["fc1", "fc2", "fc3"]
    d = c.to_dict(per_sample=True)
    assert "fc2" in str(c)
    sq = {t["name"]: t for t in d["tensors"]}
    assert set(sq) == {"fc1", "fc2", "fc3"}
    assert qn.sqnr(fl["fc2"], qu["fc2"]) == pytest.approx(sq["fc2"]["sqnr_db"], rel=1e-9)
    assert len(sq["fc2"]["sample_sqnr_db"]) == 64
    assert d["largest_drop"]["layer"] == "fc2" or d["largest_drop"]["to"] == "fc2"
    assert len(c.sample_table(3)) > 0


def test_reader(dumps):
    f, q, fl, qu = dumps
    r = qn.DumpReader(f, q)
    assert r.layers == ["fc1", "fc2", "fc3"] and r.version == 1 and r.mask is None
    np.testing.assert_array_equal(r.read("fc2", side="float"), fl["fc2"])
    np.testing.assert_array_equal(r.read("fc2"), qu["fc2"])
    assert r.read("fc2", part="weight") is None
    assert r.compare().layers == ["fc1", "fc2", "fc3"]


def test_diagnose(dumps):
    f, q, fl, qu = dumps
    d = qn.diagnose_dumps(f, q)
    assert d.verdict in ("data-insensitive", "data-sensitive")
    assert d.headline == "fc2"
    v = dict(d.verdicts)
    assert v["fc1"] == "fine"
    assert d.output_sqnr_db == pytest.approx(qn.sqnr(fl["fc3"], qu["fc3"]), abs=1e-6)
    j = d.to_dict()
    assert j["headline"] == "fc2" and "layers" in j
    assert "fc2" in str(d)


def test_measure_end_to_end_reranks_and_keeps_failures(dumps):
    f, q, _, _ = dumps
    d = qn.diagnose_dumps(f, q)
    before = d.output_sqnr_db
    seen = []

    def rerun(remedy):
        seen.append(remedy)
        if remedy.get("layer") == "fc2":
            return before + 10.0
        raise RuntimeError("cannot apply")

    d.measure_end_to_end(rerun)
    if seen:
        assert d.remedies[0]["layer"] == "fc2" or all(r.get("layer") != "fc2" for r in seen)
        failed = [r for r in seen if r.get("layer") != "fc2"]
        if failed:
            assert "cannot apply" in d.to_json()
