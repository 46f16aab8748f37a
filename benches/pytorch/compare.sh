#!/usr/bin/env bash
# qnumeric's layer and digits rows next to PyTorch's, in one session (docs/performance.md,
# "Layers against PyTorch"): the criterion bench (CPU time, with the GEMM and `vpdpbusd` peak
# baselines of the same run), then PyTorch's timings of the same layers and model where torch
# is importable. PyTorch is several GB and not installed by CI: without it, its side is skipped
# and the script says so.
#
#     benches/pytorch/compare.sh                 # one thread
#     PYTHON=/path/to/venv/bin/python benches/pytorch/compare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
cargo bench -p qnumeric-benches --bench layers -- 'linear_1024|resnet_3x3_256|dynamic_768_3072|digits'
"$PYTHON" scripts/layer_summary.py || true
if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    "$PYTHON" benches/pytorch/layers.py
    "$PYTHON" benches/pytorch/digits.py
else
    echo "PyTorch not importable by $PYTHON: its side skipped (pip install torch)"
fi
