#!/usr/bin/env python3
"""Summarise `cargo bench -p qnumeric-benches --bench layers` as ratios to the same run's float GEMM baseline.

For every group of `benches/layers.rs` (e.g. `layers/resnet_3x3_256`), each benchmark's
multiply-accumulates per second (its criterion throughput) is divided by the group's
`baseline/gemm` (ndarray's `general_mat_mul` on the equivalent f32 product). The `digits`
group's forward passes are given in ms per pass over the 500 test images.

usage: python3 scripts/layer_summary.py [target/criterion] [--markdown]
"""
import json
import os
import sys


def load(root):
    rows = []
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        if not (bench["group_id"].startswith("layers/") or bench["group_id"] == "digits"):
            continue
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        elems = (bench.get("throughput") or {}).get("Elements")
        ns = est["mean"]["point_estimate"]
        rows.append((bench["group_id"], bench["function_id"], ns, elems))
    return rows


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    md = "--markdown" in sys.argv
    root = args[0] if args else os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "criterion")
    groups = {}
    for g, name, ns, elems in load(root):
        groups.setdefault(g, {})[name] = (ns, elems)
    if md:
        print("| group | benchmark | time | G MAC/s | ÷ GEMM baseline |")
        print("|---|---|---:|---:|---:|")
    for g in sorted(groups):
        b = groups[g]
        base = b.get("baseline/gemm")
        base_rate = base[1] / base[0] if base and base[1] else None
        for name in sorted(b):
            ns, elems = b[name]
            ms = f"{ns / 1e6:.2f} ms"
            if g == "digits" and name != "baseline/gemm":
                rate, ratio = "-", "-"
            else:
                r = elems / ns if elems else None
                rate = f"{r:.1f}" if r else "-"
                ratio = f"{r / base_rate:.2f}" if r and base_rate else "-"
            if md:
                print(f"| {g} | {name} | {ms} | {rate} | {ratio} |")
            else:
                print(f"{g:28} {name:18} {ms:>12} {rate:>7} GMAC/s  gemm x{ratio:>5}")


if __name__ == "__main__":
    main()
