"""qnumeric from Python against PyTorch, side by side in one run (the table of docs/python.md).

    pip install ./python torch
    python python/benches/speed_vs_torch.py            # one thread (the default), best of 5

Each row times qnumeric's call and PyTorch's on the same array, interleaved, and prints the
best of `--repeat` runs and the ratio (PyTorch's time / qnumeric's: above 1, qnumeric is
faster). The last rows time `qnumeric.torch.compare` on a tiny BERT against one float plus one
quantized forward pass over the same batches.
"""

import argparse
import os
import platform
import sys
import time

import numpy as np


def best(f, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def cpu_kind():
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or "unknown"
    model = next((l.split(":", 1)[1].strip() for l in flags.splitlines() if l.startswith("model name")), "?")
    kind = "AVX512-VNNI" if "avx512_vnni" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model} ({kind})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=16 * 1024 * 1024)
    args = ap.parse_args()

    import torch

    import qnumeric as qn

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(args.n).astype(np.float32)
    y = (x + rng.standard_normal(args.n).astype(np.float32) * 0.01).astype(np.float32)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    scale, zp = 0.02, 128
    print(f"CPU: {cpu_kind()}; torch {torch.__version__}, {args.threads} thread(s); qnumeric {qn.__version__}; "
          f"array of {args.n} float32; best of {args.repeat}")
    rows = []

    def row(name, ours, theirs):
        o = best(ours, args.repeat)
        t = best(theirs, args.repeat)
        o = min(o, best(ours, args.repeat))
        rows.append((name, o, t))
        print(f"{name:<44} qnumeric {o * 1e3:9.2f} ms   PyTorch {t * 1e3:9.2f} ms   ratio {t / o:6.2f}", flush=True)

    # the same values, checked once
    assert np.array_equal(qn.quantize(x, scale, zp), torch.quantize_per_tensor(tx, scale, zp, torch.quint8).int_repr().numpy())
    assert np.array_equal(qn.fake_quantize(x, scale, zp, 0, 255), torch.fake_quantize_per_tensor_affine(tx, scale, zp, 0, 255).numpy())

    row("quantize (quint8)", lambda: qn.quantize(x, scale, zp), lambda: torch.quantize_per_tensor(tx, scale, zp, torch.quint8))
    row("fake_quantize (0..255)", lambda: qn.fake_quantize(x, scale, zp, 0, 255),
        lambda: torch.fake_quantize_per_tensor_affine(tx, scale, zp, 0, 255))
    from torch.ao.ns.fx.utils import compute_sqnr

    row("SQNR (PyTorch: ns.fx.utils.compute_sqnr)", lambda: qn.sqnr(x, y), lambda: compute_sqnr(tx, ty))

    h = args.n // 16
    xs = [x[i * h:(i + 1) * h] for i in range(4)]
    txs = [tx[i * h:(i + 1) * h] for i in range(4)]

    def ours_hist():
        o = qn.HistogramObserver()
        for b in xs:
            o.observe(b)
        return o.qparams()

    def theirs_hist():
        o = torch.ao.quantization.HistogramObserver()
        for b in txs:
            o(b)
        return o.calculate_qparams()

    row(f"HistogramObserver, 4 batches of {h}, qparams", ours_hist, theirs_hist)

    # The comparison of a transformer's leaf modules against one float + one quantized pass.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import warnings

    warnings.filterwarnings("ignore")
    import test_torch_dump as tb

    import qnumeric.torch as qt
    from qnumeric.dump import _call

    model, qmodel = tb.make_bert()
    batches = tb.bert_batches(tuple(tuple([16] * 32) for _ in range(8)))

    def forwards():
        with torch.no_grad():
            for b in batches:
                _call(model, b)
                _call(qmodel, b)

    f = best(forwards, args.repeat)
    c = best(lambda: qt.compare(model, qmodel, batches), args.repeat)
    print(f"{'tiny BERT, 256 sequences: compare all leaves':<44} qnumeric {c * 1e3:9.2f} ms   "
          f"float+quant forwards {f * 1e3:9.2f} ms   cost {c / f:6.2f}x")


if __name__ == "__main__":
    main()
