"""PyTorch's side of the `digits` group of `cargo bench -p qnumeric-benches --bench layers`: the
digits CNN (data/digits) over its 500 test images, float with Conv-BN-ReLU and Linear-ReLU fused,
and int8 by PyTorch's eager post-training quantization (x86 engine, default qconfig, calibrated
on the 200 calibration images), one thread, best of several runs of CPU time. Needs torch (not
installed by CI); reads the safetensors files by hand (no other package).

    python3 benches/pytorch/digits.py        # prints one line per forward, milliseconds
"""

import json
import pathlib
import struct
import sys

import torch
import torch.ao.quantization as tq

# The same timer as the layer rows (best of 20 × 5 runs of process time).
from layers import best

torch.set_num_threads(1)
engines = torch.backends.quantized.supported_engines
torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm"

DATA = pathlib.Path(__file__).resolve().parents[2] / "data" / "digits"
DTYPES = {"F32": torch.float32, "I32": torch.int32, "I64": torch.int64}


def load(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[a:b]), dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out


class Digits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(32)
        self.relu2 = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.fc1 = torch.nn.Linear(512, 64)
        self.relu3 = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(64, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.pool(self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))))
        x = self.fc2(self.relu3(self.fc1(torch.flatten(x, 1))))
        return self.dequant(x)


def main():
    weights = load(DATA / "digits_cnn.safetensors")
    data = load(DATA / "digits_data.safetensors")
    model = Digits()
    missing = model.load_state_dict(weights, strict=False)
    if missing.unexpected_keys:
        sys.exit(f"unexpected weights: {missing.unexpected_keys}")
    model.eval()
    fused = tq.fuse_modules(
        model, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"], ["fc1", "relu3"]]
    )
    x = data["test_images"]
    with torch.no_grad():
        t_float = best(lambda: fused(x))
    fused.qconfig = tq.get_default_qconfig("x86")
    prepared = tq.prepare(fused)
    with torch.no_grad():
        prepared(data["calib_images"])
    int8 = tq.convert(prepared)
    with torch.no_grad():
        t_int8 = best(lambda: int8(x))
        acc = (int8(x).argmax(1) == data["test_labels"]).float().mean().item()
    print(f"torch {torch.__version__}, engine {torch.backends.quantized.engine}, 1 thread")
    print(f"digits float forward (fused), 500 images  {t_float:8.3f} ms")
    print(f"digits int8 forward, 500 images           {t_int8:8.3f} ms  (accuracy {acc:.3f})")


if __name__ == "__main__":
    main()
