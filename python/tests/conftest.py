"""Shared helpers of the NumPy test suite: a minimal safetensors writer (NumPy only) so that the
dump tests need no PyTorch."""

import json
import struct

import numpy as np

_ST = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<f2"): "F16", np.dtype("u1"): "U8", np.dtype("bool"): "BOOL"}


def write_safetensors(path, tensors, metadata=None):
    """Writes `tensors` (name -> array) with `metadata` (str -> str) as a safetensors file."""
    header = {}
    offset = 0
    blobs = []
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        b = a.tobytes()
        header[name] = {"dtype": _ST[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
