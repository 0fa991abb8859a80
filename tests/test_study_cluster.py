"""A study on an existing multi-node Ray cluster (several Ray nodes on this machine, over loopback)."""

import pandas as pd
import pytest

from study import config as study_config
from study.run import run_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    # Cluster's test default store (150 MiB) holds two copies of the 55 MB teacher state, not the
    # three a study makes (preparation's result, the trials' parameters, test scoring's argument);
    # Ray then spills to disk and refuses outright when the disk is over 95 % full. A real node's store
    # is 30 % of its memory.
    store = 512 * 1024**2
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": store})
    cluster.add_node(num_cpus=1, object_store_memory=store)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_trials_land_on_more_than_one_node(two_node_cluster, tmp_path):
    import ray

    assert not ray.is_initialized()  # the study itself joins the cluster, as `--address HOST:PORT` does
    config = study_config.resolve(
        "smoke",
        overrides={
            "out": str(tmp_path),
            "name": "cluster",
            "trials": 2,
            "address": two_node_cluster.address,
            # each method in all (ESD: 15 a stage): trials long enough that the second node's worker
            # is up before the first node is free
            "epochs": 45,
            "report": False,
        },
    )
    said = []
    run_dir = run_study(config, say=said.append)
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 2 and (trials["status"] == "completed").all()
    assert trials["node"].nunique() == 2  # one CPU per node: the two trials at once, one on each node
    per_image = pd.read_parquet(run_dir / "per_image.parquet")
    assert (per_image["split"] == "val").sum() == 2 * 4  # every trial on the 4 validation images
    tested = (per_image["split"] == "test").sum()
    assert tested == trials["variant"].nunique() * 4, "\n".join(said)  # each variant's best, on test
