#!/usr/bin/env bash
# ggml's reference Q8_0 / Q4_0 quantizers (C, copied from ggml with attribution in
# quantize_ref.c) next to qnumeric's formats bench, in one session. Needs a C compiler; not
# run by CI (docs/performance.md quotes its figures with the machine they were measured on).
#
#     benches/ggml_c/compare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${TMPDIR:-/tmp}/qnumeric-ggml-ref"
"${CC:-cc}" -O3 -march=native -o "$out" benches/ggml_c/quantize_ref.c -lm
for _ in 1 2 3; do
    "$out"
    cargo bench -p qnumeric-benches --bench formats -- --test 2>/dev/null | grep -E "copy|Q8_0 quantize|Q4_0 quantize"
done
