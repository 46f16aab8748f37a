"""PyTorch's side of `cargo bench -p qnumeric-benches --bench layers`: the same layers, the
same shapes, one thread, timed the same way (best of several runs of CPU time), so the two can
be put side by side in one session. Needs torch (not installed by CI).

    python3 benches/pytorch/layers.py            # prints one line per row, milliseconds

Rows: int8 Linear 1024->1024 batch 256 (x86 engine, per-channel weights, quint8 in and out),
int8 Conv2d 256->256 3x3 pad 1 14x14 batch 8, dynamic int8 Linear 768->3072 batch 128, the
float versions of the first two, and the peak multiply-accumulate rate of the int8 Linear.
"""

import time

import torch
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd

torch.set_num_threads(1)
engines = torch.backends.quantized.supported_engines
torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm"


def best(f, runs=20, inner=5):
    f()
    t = float("inf")
    for _ in range(runs):
        s = time.process_time()
        for _ in range(inner):
            f()
        t = min(t, (time.process_time() - s) / inner)
    return t * 1e3


def qlinear(n, k, out):
    torch.manual_seed(0)
    w = torch.randn(out, k) * 0.05
    scales = w.abs().amax(1) / 127
    wq = torch.quantize_per_channel(w, scales, torch.zeros(out, dtype=torch.long), 0, torch.qint8)
    m = nnq.Linear(k, out)
    m.set_weight_bias(wq, torch.randn(out) * 0.1)
    m.scale, m.zero_point = 0.05, 64
    x = torch.quantize_per_tensor(torch.randn(n, k), 0.03, 128, torch.quint8)
    return best(lambda: m(x))


def qconv(n, c, hw):
    torch.manual_seed(0)
    w = torch.randn(c, c, 3, 3) * 0.05
    scales = w.abs().amax((1, 2, 3)) / 127
    wq = torch.quantize_per_channel(w, scales, torch.zeros(c, dtype=torch.long), 0, torch.qint8)
    m = nnq.Conv2d(c, c, 3, padding=1)
    m.set_weight_bias(wq, torch.randn(c) * 0.1)
    m.scale, m.zero_point = 0.05, 64
    x = torch.quantize_per_tensor(torch.randn(n, c, hw, hw), 0.03, 128, torch.quint8)
    return best(lambda: m(x))


def dyn_linear(n, k, out):
    torch.manual_seed(0)
    f = torch.nn.Linear(k, out)
    m = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(f), {torch.nn.Linear}, dtype=torch.qint8)
    x = torch.randn(n, k)
    return best(lambda: m(x))


def flinear(n, k, out):
    f = torch.nn.Linear(k, out)
    x = torch.randn(n, k)
    with torch.no_grad():
        return best(lambda: f(x))


def fconv(n, c, hw):
    f = torch.nn.Conv2d(c, c, 3, padding=1)
    x = torch.randn(n, c, hw, hw)
    with torch.no_grad():
        return best(lambda: f(x))


if __name__ == "__main__":
    print(f"torch {torch.__version__}, engine {torch.backends.quantized.engine}, 1 thread")
    rows = [
        ("int8 Linear 1024->1024, batch 256", qlinear(256, 1024, 1024), 256 * 1024 * 1024),
        ("int8 Conv2d 256->256 3x3, 14x14, batch 8", qconv(8, 256, 14), 8 * 196 * 256 * 256 * 9),
        ("dynamic int8 Linear 768->3072, batch 128", dyn_linear(128, 768, 3072), 128 * 768 * 3072),
        ("float Linear 1024->1024, batch 256", flinear(256, 1024, 1024), 256 * 1024 * 1024),
        ("float Conv2d 256->256 3x3, 14x14, batch 8", fconv(8, 256, 14), 8 * 196 * 256 * 256 * 9),
    ]
    for name, ms, macs in rows:
        print(f"{name:45s} {ms:8.3f} ms  {macs / ms / 1e6:7.1f} GMAC/s")
