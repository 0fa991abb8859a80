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

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
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
            "trials": 4,
            "address": two_node_cluster.address,
            # each method in all (ESD: 15 a stage): trials long enough that the second node's worker
            # is up before the first node is free
            "epochs": 45,
        },
    )
    run_dir = run_study(config, say=lambda line: None)
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and (trials["status"] == "completed").all()
    assert trials["node"].nunique() == 2  # one CPU per node: two trials at a time, one on each node
    per_image = pd.read_parquet(run_dir / "per_image.parquet")
    assert (per_image["split"] == "val").sum() == 4 * 4  # every trial on the 4 validation images
    assert (per_image["split"] == "test").sum() == trials[
        "variant"
    ].nunique() * 4  # each variant's best, on test
