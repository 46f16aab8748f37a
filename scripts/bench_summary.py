#!/usr/bin/env python3
"""Summarise criterion results as ratios to the memory baselines measured in the same run.

For every bench group (e.g. `kernels/16M`), each benchmark's effective bandwidth
(bytes read + bytes written per second, from its criterion throughput) is divided by the
group's `baseline/copy` bandwidth (and, for read-only reductions, `baseline/read`).

usage: python3 scripts/bench_summary.py [target/criterion] [--markdown]
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
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        thr = bench.get("throughput") or {}
        nbytes = thr.get("Bytes") or thr.get("BytesDecimal")
        if not nbytes:
            continue
        ns = est["mean"]["point_estimate"]
        name = bench["function_id"] + (("/" + bench["value_str"]) if bench.get("value_str") else "")
        rows.append((bench["group_id"], name, nbytes / ns))  # bytes per ns = GB/s
    return rows


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    md = "--markdown" in sys.argv
    root = args[0] if args else os.path.join("target", "criterion")
    rows = load(root)
    groups = {}
    for g, name, gbps in rows:
        groups.setdefault(g, {})[name] = gbps
    if md:
        print("| group | benchmark | GB/s | ratio to copy | ratio to read |")
        print("|---|---|---:|---:|---:|")
    for g in sorted(groups):
        b = groups[g]
        copy = b.get("baseline/copy")
        read = b.get("baseline/read")
        for name in sorted(b):
            gbps = b[name]
            rc = f"{gbps / copy:.2f}" if copy else "-"
            rr = f"{gbps / read:.2f}" if read else "-"
            if md:
                print(f"| {g} | {name} | {gbps:.2f} | {rc} | {rr} |")
            else:
                print(f"{g:22} {name:50} {gbps:7.2f} GB/s  copy x{rc:>5}  read x{rr:>5}")


if __name__ == "__main__":
    main()
