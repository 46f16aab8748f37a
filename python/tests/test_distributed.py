"""The documented Dask example on a local cluster of 2 worker processes: observers and
NumericLogs computed on the workers, shipped back (pickled as their JSON state), merged, and
equal to one pass over the whole data set (the example asserts it). Needs dask.distributed;
skipped, saying so, without it."""

import os
import sys

import pytest

distributed = pytest.importorskip("distributed", reason="dask.distributed not installed: the distributed test is skipped")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import dask_calibration  # noqa: E402


def test_shards_on_two_worker_processes_merge_to_one_pass():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids
        obs, log = dask_calibration.run(client, n_batches=16, shards=4)
    assert set(log.layers) == {"fc1", "fc2"}
    assert len(log.sample_sqnr_db("fc1")) == 16 * 32
    assert obs["input"].qparams().scale > 0
