"""Calibration and comparison over shards of a data set on Dask's distributed scheduler.

Each worker process observes its shard with qnumeric's observers and streams its shard's
layer outputs into a NumericLog; the states travel back as small JSON (through pickle) and
merge into exactly what one pass over the whole data set gives, which the script checks.

    pip install ./python "dask[distributed]"
    python python/examples/dask_calibration.py          # a local cluster of 2 worker processes

The model here is a stand-in (two NumPy layers, quantized with fake_quantize) so the example
needs nothing else; with PyTorch, the worker would run `qnumeric.torch.compare` on its
batches and return `report.logs` instead (they merge the same way).
"""

import argparse

import numpy as np

import qnumeric as qn

HIDDEN = 64


def batch(i):
    """Batch ``i`` of the data set (deterministic: any process can make it)."""
    rng = np.random.default_rng(1000 + i)
    scale = 1.0 + (i % 5)  # the shards see different ranges
    return (rng.standard_normal((32, HIDDEN)) * scale).astype(np.float32)


def weights():
    rng = np.random.default_rng(7)
    return (rng.standard_normal((HIDDEN, HIDDEN)) / 8).astype(np.float32)


def observers():
    """Observers whose merge is exact: running min/max (per tensor, per channel) and the
    calibrators on qnumeric's exact streaming histogram (MSE, percentile, entropy).
    PyTorch's HistogramObserver re-bins as its range grows, so its merge is PyTorch's
    approximate combine (docs/observers.md): not used here."""
    return {
        "input": qn.MinMaxObserver(),
        "input_mse": qn.MseObserver(),
        "input_p999": qn.PercentileObserver(99.9),
        "weight": qn.PerChannelMinMaxObserver(ch_axis=0),
    }


def layers(x, w, qp):
    """The float model's and the quantized model's outputs of the two layers."""
    xq = qn.fake_quantize(x, qp.scale, qp.zero_point, qp.quant_min, qp.quant_max)
    wp = qn.PerChannelMinMaxObserver(ch_axis=0)
    wp.observe(w)
    p = wp.qparams()
    wq = qn.fake_quantize_per_channel(w, p.scales, p.zero_points, 0)
    f1, q1 = x @ w, xq @ wq
    f2, q2 = np.maximum(f1, 0) @ w, np.maximum(q1, 0) @ wq
    return {"fc1": (f1, q1), "fc2": (f2, q2)}


def calibrate_shard(indices):
    """A worker: observe the shard's batches; returns the observers (pickled as JSON state)."""
    obs = observers()
    w = weights()
    obs["weight"].observe(w)
    for i in indices:
        x = batch(i)
        for k in ("input", "input_mse", "input_p999"):
            obs[k].observe(x)
    return obs


def compare_shard(indices, qp):
    """A worker: push the shard's outputs into a NumericLog; returns it (pickled as JSON)."""
    log = qn.NumericLog()
    w = weights()
    for i in indices:
        for name, (f, q) in layers(batch(i), w, qp).items():
            log.push(name, f, q)
    return log


def merged(parts):
    first = parts[0]
    for p in parts[1:]:
        first.merge(p)
    return first


def run(client, n_batches=24, shards=4):
    """Calibrates and compares on the cluster; returns (observers, log), checked against one
    pass in this process."""
    # Shards in the order of their batches, so that the merged log's samples are in the
    # order of one pass.
    split = [list(range(n_batches))[s * n_batches // shards:(s + 1) * n_batches // shards] for s in range(shards)]
    obs_parts = client.gather(client.map(calibrate_shard, split, pure=False))
    obs = {k: merged([p[k] for p in obs_parts]) for k in obs_parts[0]}
    qp = obs["input_mse"].qparams()
    logs = client.gather(client.map(compare_shard, split, [qp] * shards, pure=False))
    log = merged(logs)

    # One pass, here.
    one = calibrate_shard(range(n_batches))
    for k in obs:
        assert obs[k] == one[k], k
        assert obs[k].qparams() == one[k].qparams(), k
    one_log = compare_shard(range(n_batches), qp)
    assert log.report().to_json() == one_log.report().to_json()
    return obs, log


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            obs, log = run(client)
    print("merged on", args.workers, "workers == one pass: yes")
    print("input qparams:", obs["input"].qparams())
    print(log.report())


if __name__ == "__main__":
    main()
