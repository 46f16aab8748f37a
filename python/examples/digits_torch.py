"""The README's Python example on a real model: the shipped digits CNN (trained with PyTorch,
data/digits) quantized with PyTorch's eager static quantization, then `qnumeric.torch`.

    pip install ./python torch
    python python/examples/digits_torch.py

Prints the diagnosis of the healthy int8 model (nothing to fix), then of the same model on
test images with 20 bright outliers (inputs clipped by the calibrated input range: the
outliers are the worst samples and the verdict is data-sensitive).
"""

import copy
import json
import os
import struct
import warnings

import numpy as np
import torch
from torch import nn

import qnumeric.torch as qt

warnings.filterwarnings("ignore", message=".*deprecated.*")
warnings.filterwarnings("ignore", message="Please use quant_min and quant_max")

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "digits")


def read_safetensors(path):
    """name -> array (float32 / int32 tensors of a safetensors file)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    dtypes = {"F32": np.float32, "I32": np.int32, "I64": np.int64}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dtypes[t["dtype"]]).reshape(t["shape"]).copy()
    return out


class Digits(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(512, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(self.quant(x))))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.fc1(torch.flatten(x, 1)))
        return self.dequant(self.fc2(x))


def load():
    model = Digits().eval()
    weights = read_safetensors(os.path.join(DATA, "digits_cnn.safetensors"))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    data = read_safetensors(os.path.join(DATA, "digits_data.safetensors"))
    return model, data


def quantize(model, calib):
    """PyTorch's eager post-training quantization (x86 backend, default qconfig)."""
    engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
    torch.backends.quantized.engine = engine
    fused = torch.ao.quantization.fuse_modules(
        copy.deepcopy(model), [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"], ["fc1", "relu3"]]
    )
    prepared = copy.deepcopy(fused)
    prepared.qconfig = torch.ao.quantization.get_default_qconfig(engine)
    torch.ao.quantization.prepare(prepared, inplace=True)
    with torch.no_grad():
        prepared(calib)
    return fused, torch.ao.quantization.convert(prepared)


def batches_of(x, size=100):
    return [x[i:i + size] for i in range(0, len(x), size)]


def main():
    torch.set_num_threads(1)
    model, data = load()
    test = torch.from_numpy(data["test_images"])
    labels = data["test_labels"]
    calib = torch.from_numpy(data["calib_images"])
    fused, qmodel = quantize(model, calib)
    with torch.no_grad():
        acc_f = float((fused(test).argmax(1).numpy() == labels).mean())
        acc_q = float((qmodel(test).argmax(1).numpy() == labels).mean())
    print(f"float accuracy {acc_f:.3f}, int8 accuracy {acc_q:.3f}")

    # The README's example, on this model.
    report = qt.diagnose(fused, qmodel, batches_of(test))
    print(report)
    print()

    # 20 bright outliers among the test images: clipped at the input quantization.
    bright = test.clone()
    outliers = list(range(0, 500, 25))
    bright[outliers] *= 4.0
    report = qt.diagnose(fused, qmodel, batches_of(bright), calibration=batches_of(calib))
    print(report)
    d = report.diagnosis
    print()
    print(f"verdict {d.verdict}; first layer {d.first_layer}; worst samples {d.worst_samples[:8]}")
    worst = d.worst_samples
    print(f"outliers among the {len(worst)} worst samples listed: {len(set(worst) & set(outliers))}")
    return report


if __name__ == "__main__":
    main()
