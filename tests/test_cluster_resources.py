"""study.cluster on a real local Ray of 2 CPUs, started as a study starts it: what it listens on,
who it lets in, the requests it refuses before any trial, and the word said when trials wait."""

import os
import pickle
import subprocess
import sys
import threading
import time

import pytest
from ray import tune

from study.cluster import (
    ResourceWaitWarning,
    is_loopback,
    listening_addresses,
    ray_disk_warning,
    resource_problems,
)
from study.config import StudyConfig

pytestmark = pytest.mark.slow


def test_a_local_study_listens_on_loopback_only(local_ray):
    @local_ray.remote(num_cpus=1)
    class TrialWorker:
        def pid(self) -> int:
            return os.getpid()

    worker = TrialWorker.remote()
    local_ray.get(worker.pid.remote())
    try:
        sockets = listening_addresses()
    finally:
        local_ray.kill(worker)
    names = {name for _, _, name in sockets}
    gcs_port = int(local_ray.get_runtime_context().gcs_address.rsplit(":", 1)[1])
    # the measurement sees Ray's servers and its workers, not an empty list
    assert (gcs_port, "gcs_server") in {(port, name) for _, port, name in sockets}
    assert {"raylet", "ray::TrialWorker"} <= names
    assert [s for s in sockets if not is_loopback(s[0])] == []


def test_loopback_is_told_from_other_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.1.1", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2", "fd00::2"]))


# Ray's own GCS client (what `ray status` uses), in a process of its own: the authentication mode
# is fixed per process
PROBE = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_keys(b"", None, timeout=10)
    print("let in")
except Exception as err:
    print("refused:", type(err).__name__, err)
"""


def test_a_client_without_the_study_s_token_is_refused(local_ray):
    gcs = local_ray.get_runtime_context().gcs_address
    clients = {
        "with the token": {"RAY_AUTH_MODE": "token"},  # from ~/.ray/auth_token, where Ray put it
        "without a token": {"RAY_AUTH_MODE": "disabled"},
        "with another token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32},
    }
    running = {
        who: subprocess.Popen(
            [sys.executable, "-c", PROBE, gcs],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for who, env in clients.items()
    }
    said = {who: process.communicate(timeout=120)[0].strip() for who, process in running.items()}
    assert said["with the token"] == "let in"
    assert said["without a token"].startswith("refused: AuthenticationError")
    assert said["with another token"].startswith("refused: AuthenticationError")


def test_more_cpus_than_any_node_has_are_refused(local_ray):
    found = resource_problems(StudyConfig(cpus_per_trial=64))
    assert len(found) == 1
    assert "cpus_per_trial = 64" in found[0] and "largest Ray node has 2 CPUs" in found[0]
    assert "--cpus-per-trial 2 or fewer" in found[0]


def test_more_workers_than_the_cluster_holds_are_refused(local_ray):
    found = resource_problems(StudyConfig(workers_per_trial=3, cpus_per_trial=1))
    assert len(found) == 1
    assert "workers_per_trial = 3" in found[0] and "cluster total 2 CPUs" in found[0]
    assert "--workers-per-trial 2 or fewer" in found[0]


def test_a_gpu_on_a_cluster_without_one_is_refused(local_ray):
    assert local_ray.cluster_resources().get("GPU", 0) == 0  # this test's machine has none
    found = resource_problems(StudyConfig(gpus_per_trial=1))
    assert len(found) == 1
    assert "gpus_per_trial = 1" in found[0] and "no Ray node has a GPU" in found[0]


def test_requests_the_cluster_holds_pass(local_ray):
    assert resource_problems(StudyConfig(cpus_per_trial=2)) == []
    assert resource_problems(StudyConfig(workers_per_trial=2, cpus_per_trial=1)) == []
    assert resource_problems(StudyConfig(workers_per_trial=4, cpus_per_trial=0.5)) == []


def test_the_check_can_be_skipped_for_a_cluster_that_grows(local_ray):
    assert resource_problems(StudyConfig(cpus_per_trial=64), check_resources=False) == []


def fit(trials: int, seconds: float, warning: tune.Callback, storage) -> None:
    def nap(config: dict) -> None:  # defined here so that Ray ships it by value: workers lack tests/
        time.sleep(config["seconds"])
        tune.report({"done": 1})

    tuner = tune.Tuner(
        tune.with_resources(nap, {"cpu": 1}),
        param_space={"seconds": seconds},
        # as the study runs them: a finished trial's worker takes the next trial on
        tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(storage), callbacks=[warning], verbose=0),
    )
    results = tuner.fit()
    assert results.num_errors == 0 and len(results) == trials


def test_a_trial_kept_from_the_cluster_s_cpus_is_said_once(local_ray, tmp_path):
    from ray.util import placement_group, remove_placement_group

    # something else holds both CPUs (another job, say) until the wait has been said, and 2 s
    # longer, so that more of the driver's loops see the trial waiting. Not a fixed few seconds: on a
    # loaded machine Tune's start-up alone can outlast them, and then the trial never waits.
    held = placement_group([{"CPU": 2}])
    local_ray.get(held.ready())
    lines = []  # say=lines.append: Tune pickles its callbacks, and a lock or an event will not pickle

    def release_after_the_warning() -> None:
        deadline = time.monotonic() + 120
        while not lines and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)
        remove_placement_group(held)

    release = threading.Thread(target=release_after_the_warning)
    release.start()
    try:
        fit(1, 0.5, ResourceWaitWarning(StudyConfig(resource_wait_s=1), say=lines.append), tmp_path)
    finally:
        release.join()
    assert len(lines) == 1, lines  # once for the whole wait, not once a loop
    assert lines[0].startswith("1 trial(s) have waited ")
    assert "(each asks 1 CPU, 0 GPU x 1 worker); the cluster has 0 CPU, 0 GPU free of 2/0" in lines[0]


class OnceFull(tune.Callback):
    """Hands Tune's steps on once `running` trials run: the workers' start-up (seconds on a loaded
    machine, against the 300 s a study waits by default) stays out of the test."""

    def __init__(self, inner: tune.Callback, running: int):
        self.inner, self.running, self.full = inner, running, False

    def on_step_begin(self, iteration, trials, **info):
        self.full = self.full or sum(t.status == "RUNNING" for t in trials) >= self.running
        if self.full:
            self.inner.on_step_begin(iteration, trials, **info)


def test_trials_queued_behind_the_study_s_own_say_nothing(local_ray, tmp_path):
    # 3 trials of 1 CPU on 2 CPUs: the third waits for one of the first two, 5 s, longer than wait_s
    lines = []
    warning = ResourceWaitWarning(StudyConfig(resource_wait_s=2), say=lines.append)
    fit(3, 5, OnceFull(warning, running=2), tmp_path)
    assert lines == []


def test_the_warning_survives_tune_s_pickling():
    warning = ResourceWaitWarning(StudyConfig(resource_wait_s=7, cpus_per_trial=2), say=print)
    warning._since["t1"] = time.monotonic() - 100
    copy = pickle.loads(pickle.dumps(warning))
    assert (copy.wait_s, copy.cpus, copy.say) == (7, 2, print)
    assert copy._since == {}  # another process's clock: a resumed study counts afresh


def test_a_disk_past_rays_capacity_limit_is_named_with_the_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_local_fs_capacity_threshold", "0")  # any disk is past it
    warning = ray_disk_warning(str(tmp_path))
    assert str(tmp_path) in warning and "RAY_TMPDIR" in warning and "0.99" in warning
    monkeypatch.setenv("RAY_local_fs_capacity_threshold", "1.01")  # no disk is
    assert ray_disk_warning(str(tmp_path)) is None
