"""The Ray a study runs on: starting or joining it, what its processes listen on, whether the
cluster can ever hold one trial, and a word when trials wait long for resources.

A local study's Ray (no --address) listens on loopback only: its GCS, raylet, agents and
workers accept no connection from another machine. Ray itself would bind them to every
interface (Ray 2.60 takes the machine's outward address as a local node's address, and its
servers listen on all interfaces); the flag that Ray sets on macOS and Windows gives the node
the loopback address instead, and every server follows it. A local Ray 2.60 also turns on
token authentication (RAY_AUTH_MODE=token, the token in ~/.ray/auth_token) unless
RAY_AUTH_MODE says otherwise.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from ray import tune
from ray.tune.experiment import Trial

from kd.errors import UserInputError
from study.reaper import ending_with_this_process

# glibc gives every thread that allocates its own malloc arena; torch's intra-op threads then keep
# hundreds of MB of freed memory per worker. Two arenas hold a worker's peak close to its live data.
WORKER_ENV = {"MALLOC_ARENA_MAX": "2"}
# How often a long wait is weighed against the cluster's resources (one call to the GCS): Tune's
# loop turns about ten times a second, and most long waits are trials queued behind the study's own.
CHECK_EVERY_S = 1.0
RAY_DISK_THRESHOLD = 0.95  # Ray's local_fs_capacity_threshold default


CONNECT_TIMEOUT_S = 30.0  # how long a cluster's address gets to answer (connect_timeout_s)


def start_ray(
    address: str | None, num_cpus: int | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S
) -> bool:
    """Join the Ray cluster at `address` ("auto" or HOST:PORT), or start a local Ray (None, unless
    RAY_ADDRESS names a cluster, as Ray Jobs do) listening on loopback only. `num_cpus`: the local
    instance's CPUs (default: the machine's). A cluster's HOST:PORT that does not accept a
    connection within `connect_timeout_s` is refused (Ray itself would retry forever). A local
    Ray's processes end with this process (study.reaper), a cluster's never. False when
    this process had Ray already (a test's, or a notebook's), which is then used as it is."""
    import ray

    if ray.is_initialized():
        return False
    options = {
        "include_dashboard": False,
        "logging_level": logging.ERROR,
        "log_to_driver": False,
        "configure_logging": True,
        "runtime_env": {"env_vars": WORKER_ENV},
    }
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # "local": never a cluster that `ray start` left on this machine, which ray.init would join
        with _loopback_node(), ending_with_this_process():
            ray.init(address="local", num_cpus=num_cpus, **options)
        _owner_only(token_path())
    else:
        target = address or os.environ["RAY_ADDRESS"]
        check_reachable(target, connect_timeout_s)
        try:
            ray.init(address=address, **options)
        except ConnectionError as err:  # something answers there, but not a Ray head's GCS
            raise UserInputError(
                f"cannot join the Ray cluster at {target}: its port answers, but Ray's connection "
                f"failed ({err}). Is the address its head's GCS (HOST:6379 unless --port said "
                "otherwise), and is the cluster's Ray the version installed here?"
            ) from None
    return True


def check_reachable(address: str, timeout_s: float) -> None:
    """Refuse a cluster address (HOST:PORT, or ray://HOST:PORT) whose port does not accept a TCP
    connection within `timeout_s`; "auto" and other forms are left to Ray, which finds them."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit() or not host:
        return
    host = host.strip("[]")  # an IPv6 address in brackets
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        cause = "no answer" if isinstance(err, TimeoutError) else err.strerror or str(err)
        raise UserInputError(
            f"the Ray cluster at {address} does not answer: a TCP connection to {host} port {port} "
            f"failed within {timeout_s:g} s ({cause}). Is the cluster started (ray start --head on "
            "that machine), is the address its head's GCS (HOST:6379 unless --port said otherwise), "
            "and does no firewall stand between? A slow network may need a larger --connect-timeout-s."
        ) from None


def token_path() -> Path:
    """Where Ray keeps the token of a local Ray's authentication (RAY_AUTH_TOKEN_PATH, else
    ~/.ray/auth_token)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def _owner_only(path: Path) -> None:
    """Ray writes its token readable by everyone; whoever reads it can run code as its owner."""
    with contextlib.suppress(OSError):  # no token (authentication off), or not ours to change
        path.chmod(path.stat().st_mode & 0o700)


def ray_disk_warning(temp_dir: str | None = None) -> str | None:
    """A warning when the disk under Ray's session folder is past Ray's capacity threshold: Ray
    then refuses to create an object that does not fit in memory (spilling needs the disk), and
    says so only in its raylet log. None when the disk is fine."""
    temp_dir = temp_dir or os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    threshold = float(os.environ.get("RAY_local_fs_capacity_threshold", RAY_DISK_THRESHOLD))
    try:
        usage = shutil.disk_usage(temp_dir)
    except OSError:
        return None
    used = 1 - usage.free / usage.total  # Ray's measure: what is not available counts as used
    if used < threshold:
        return None
    return (
        f"the disk under {temp_dir} is {used:.1%} full, past Ray's {threshold:.0%} limit: Ray will refuse "
        f"objects that must spill to disk (trials or the test scoring then fail); free space, point "
        f"RAY_TMPDIR at another disk, or raise RAY_local_fs_capacity_threshold (e.g. to 0.99)"
    )


def ray_cluster_flag():
    """The module holding Ray's ENABLE_RAY_CLUSTER flag, or None where this Ray has none.

    Ray offers no public way to keep a local node on loopback; this is the study's one use of
    Ray's private API (ray._private.ray_constants), so that a Ray release that moves it fails
    the test of this function instead of silently binding every interface."""
    try:
        from ray._private import ray_constants
    except ImportError:
        return None
    return ray_constants if hasattr(ray_constants, "ENABLE_RAY_CLUSTER") else None


@contextlib.contextmanager
def _loopback_node():
    """While Ray starts: a local node takes the loopback address, and its servers listen there.

    ray.init resolves a node address of 127.0.0.1 to the machine's outward IP unless Ray clusters
    are off (ENABLE_RAY_CLUSTER, read per call); it is put back at once, because a driver that
    later joins a real cluster must give its outward address."""
    ray_constants = ray_cluster_flag()
    if ray_constants is None:  # a Ray without the flag binds as it will
        yield
        return
    previous = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


def listening_addresses(root_pid: int | None = None) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket listening in process `root_pid` (default:
    this one) and its descendants: for a local study's driver, all of its Ray's processes."""
    # not a dependency of ours: Ray ships psutil (ray/thirdparty_files) and puts it on sys.path
    # when imported, which this module's `from ray import tune` has done
    import psutil

    root = psutil.Process(root_pid)
    names = {}
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a worker may exit while we look
            names[process.pid] = process.name()
    found = {
        (conn.laddr.ip, conn.laddr.port, names[conn.pid])
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid in names
    }
    return sorted(found, key=lambda row: (row[2], row[1]))


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, and ::ffff:127.x (an IPv6 socket bound to IPv4 loopback, as gRPC binds)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def resource_problems(config, check_resources: bool = True) -> list[str]:
    """Per-trial requests that no node of the cluster Ray runs now can ever satisfy: Tune would
    wait for them forever. Call after Ray has started, before any trial.

    `check_resources=False` skips the check, for a cluster that an autoscaler grows: Ray 2.60 has
    no reliable record of how far it may grow (the autoscaler does not write the cluster config
    to the GCS that Ray's own cluster-config reader reads)."""
    if not check_resources:
        return []
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    found = [
        problem
        for problem in (
            _node_problem("cpus_per_trial", config.cpus_per_trial, "CPU", nodes),
            _node_problem("gpus_per_trial", config.gpus_per_trial, "GPU", nodes),
        )
        if problem
    ]
    if not found:
        found += _worker_problems(config, nodes)
    if config.address is not None and (memory := max((node.get("memory", 0) for node in nodes), default=0)):
        from study.checks import memory_problems

        found += memory_problems(config, memory, "the largest Ray node")  # Ray's memory for tasks
    return found


def _node_problem(setting: str, need: float, key: str, nodes: list[dict]) -> str | None:
    """One worker needs `need` of `key` on a single node."""
    largest = max((node.get(key, 0) for node in nodes), default=0)
    if need <= largest:
        return None
    total = sum(node.get(key, 0) for node in nodes)
    flag = "--" + setting.replace("_", "-")
    if not largest:
        return (
            f"{setting} = {need:g} but no Ray node has a {key} (cluster total 0): set {flag} 0, "
            f"or join a cluster with {key}s with --address"
        )
    return (
        f"{setting} = {need:g} but the largest Ray node has {largest:g} {key}s (cluster total "
        f"{total:g}): set {flag} {largest:g} or fewer, or join a bigger cluster with --address"
    )


def _worker_problems(config, nodes: list[dict]) -> list[str]:
    """A trial's workers all run at once: as many as fit on the nodes together."""
    workers, cpus, gpus = config.workers_per_trial, config.cpus_per_trial, config.gpus_per_trial
    fits = sum(_workers_on(node, cpus, gpus) for node in nodes)
    if fits >= workers:
        return []
    total_cpus = sum(node.get("CPU", 0) for node in nodes)
    total_gpus = sum(node.get("GPU", 0) for node in nodes)
    return [
        f"workers_per_trial = {workers} with cpus_per_trial = {cpus:g} and gpus_per_trial = {gpus:g} "
        f"needs {workers * cpus:g} CPUs and {workers * gpus:g} GPUs at once, but the cluster holds "
        f"{fits} such worker(s) (cluster total {total_cpus:g} CPUs, {total_gpus:g} GPUs): set "
        f"--workers-per-trial {fits} or fewer, lower --cpus-per-trial/--gpus-per-trial, or join a "
        "bigger cluster with --address"
    ]


def _workers_on(node: dict, cpus: float, gpus: float) -> int:
    """How many workers of `cpus` CPUs and `gpus` GPUs one node holds."""
    # Ray counts resources in units of 1/10000: a small tolerance keeps 3 x 0.1 CPU within 0.3
    counts = [
        math.floor(node.get(key, 0) / need + 1e-9) for key, need in (("CPU", cpus), ("GPU", gpus)) if need
    ]
    return min(counts, default=0)


class ResourceWaitWarning(tune.Callback):
    """Says, once per wait, when trials have been PENDING for `config.resource_wait_s` seconds
    while the study was starved that long: none of its trials ran, or the cluster would hold
    another of them but something else (another job, a leaked actor) holds the room, or a node
    left. Trials queued behind the study's own running trials are the normal case and say
    nothing. A worker that takes longer than resource_wait_s to start counts as a wait."""

    def __init__(self, config, say=print):
        self.wait_s = float(config.resource_wait_s)
        self.cpus, self.gpus = config.cpus_per_trial, config.gpus_per_trial
        self.workers, self.max_concurrent = config.workers_per_trial, config.max_concurrent
        self.say = say
        self._restart()

    def __getstate__(self) -> dict:
        # Tune pickles callbacks with the experiment; the wait clock is this process's own, and a
        # resumed study counts its waits afresh.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._restart()

    def _restart(self) -> None:
        self._since: dict[str, float] = {}  # trial id -> when it was first seen PENDING
        self._starved_since: float | None = None
        self._said = False
        self._checked = -math.inf

    def on_step_begin(self, iteration: int, trials: list, **info):
        now = time.monotonic()
        pending = [t.trial_id for t in trials if t.status == Trial.PENDING]
        self._since = {trial_id: self._since.get(trial_id, now) for trial_id in pending}
        if now - self._checked < CHECK_EVERY_S:
            return
        self._checked = now
        # Starvation must last too: the moment between one trial's end and the next one's start
        # leaves room that a long-queued trial is about to take.
        if not pending or not self._starved(sum(t.status == Trial.RUNNING for t in trials)):
            self._starved_since, self._said = None, False  # this wait is over: the next one is said
            return
        if self._starved_since is None:
            self._starved_since = now
        waits = [now - since for since in self._since.values() if now - since >= self.wait_s]
        if waits and now - self._starved_since >= self.wait_s and not self._said:
            self.say(self._line(len(waits), max(waits)))
            self._said = True

    def _request(self) -> dict[str, float]:
        """One trial's resources, all its workers together."""
        return {"CPU": self.cpus * self.workers, "GPU": self.gpus * self.workers}

    def _starved(self, running: int) -> bool:
        if running == 0:
            return True
        if self.max_concurrent and running >= self.max_concurrent:
            return False
        import ray

        total = ray.cluster_resources()
        return all(total.get(key, 0) >= (running + 1) * need for key, need in self._request().items() if need)

    def _line(self, count: int, waited_s: float) -> str:
        import ray

        free, total = ray.available_resources(), ray.cluster_resources()
        amount = lambda pool, key: f"{round(pool.get(key, 0), 2):g}"  # noqa: E731
        workers = f"{self.workers} worker" + ("s" if self.workers != 1 else "")
        return (
            f"{count} trial(s) have waited {waited_s:.0f} s for resources (each asks {self.cpus:g} CPU, "
            f"{self.gpus:g} GPU x {workers}); the cluster has {amount(free, 'CPU')} CPU, "
            f"{amount(free, 'GPU')} GPU free of {amount(total, 'CPU')}/{amount(total, 'GPU')}: "
            "lower --cpus-per-trial/--gpus-per-trial or add nodes"
        )
