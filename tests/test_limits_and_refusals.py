"""Requests the machine cannot meet are refused before any work, naming the setting and the
estimate; a cluster that does not answer is refused in time; a refused study leaves no folder."""

import os
import pickle
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kd.errors import UserInputError
from kd.models.checkpoints import read_checkpoint
from search_spaces import esd
from search_spaces.base import LARGEST, resolve_problems
from study import checks
from study import config as study_config
from study.cluster import _owner_only, check_reachable, resource_problems, token_path
from study.lock import RunLock
from study.settings import FIELDS, StudyConfig

ROOT = Path(__file__).resolve().parents[1]


def study(tmp_path, *flags, timeout=240):
    """`python -m study.run --preset smoke` with `flags`, as a user runs it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "study.run",
            "--preset",
            "smoke",
            "--name",
            "s",
            "--out",
            str(tmp_path),
            *flags,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def closed_port() -> int:
    """A local port nothing listens on: bound once, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_image_size_beyond_the_machine_s_memory_is_refused_before_any_work(tmp_path):
    done = study(tmp_path, "--image-size", "100000,100000")
    assert done.returncode == 2, done.stderr
    assert "image_size = [100000, 100000]" in done.stderr and "GB of memory" in done.stderr
    assert "this machine's" in done.stderr and "--image-size" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists()


def test_memory_counts_images_views_and_one_forward_of_the_teacher():
    config = study_config.resolve("smoke")
    assert checks.memory_problems(config, checks.machine_memory(), "this machine") == []
    (found,) = checks.memory_problems(config, 1000, "the largest Ray node")
    assert found.startswith(f"image_size = {config.image_size!r} with batch_size = {config.batch_size}")
    assert "x 4 bytes x 2 view(s)" in found and "one forward of the teacher" in found
    assert "the largest Ray node's 0.0 GB" in found
    # a GPU trial's forward is held on its GPU, weighed there, not in the machine's memory
    on_gpu = study_config.resolve("smoke", overrides={"gpus_per_trial": 1.0})
    (host,) = checks.memory_problems(on_gpu, 1000, "this machine")
    (gpu,) = checks.memory_problems(on_gpu, 1000, "the GPU", data=False)
    assert "decoded images" in host and "forward" not in host
    assert "forward of the teacher on a batch of 4" in gpu and "decoded" not in gpu
    # the forward's share grows with the batch
    bigger = study_config.resolve("smoke", overrides={"batch_size": 4000})
    assert checks.memory_problems(bigger, 1e9, "here") and not checks.memory_problems(config, 1e9, "here")


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if f.metadata["most"] is not None])
def test_a_count_beyond_its_documented_most_is_named(name):
    most = FIELDS[name].metadata["most"]
    assert f"at most {most:,}" in FIELDS[name].metadata["help"]
    assert checks.field_problems(study_config.resolve("smoke", overrides={name: most})) == []
    (found,) = checks.field_problems(study_config.resolve("smoke", overrides={name: most + 1}))
    assert found == f"{name} must be at most {most:,}, the most a study can reach in practice, got {most + 1}"


def test_absurd_trials_and_views_are_refused(tmp_path):
    done = study(tmp_path, "--trials", "100000000000000000000", "--views", "1000000000", timeout=120)
    assert done.returncode == 2, done.stderr
    assert "trials must be at most 100,000" in done.stderr and "views must be at most 1,000" in done.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "given",
    [
        {"low": 0.0, "high": 1e308},
        [0.0, 1e13],
        1e308,
        {"choices": [0.5, -1e300]},
        {"low": 0.0, "high": float("inf")},
    ],
)
def test_search_space_numbers_beyond_what_a_trial_can_use_are_refused(given):
    _, found = resolve_problems("esd", esd.params(["stage1"]), {"r": given})
    assert len(found) == 1 and found[0].startswith("esd.r: ")
    assert f"beyond {LARGEST:g}" in found[0] or "expected a number" in found[0]


def test_search_space_numbers_within_bounds_pass():
    _, found = resolve_problems("esd", esd.params(["stage1"]), {"r": {"low": 0.0, "high": LARGEST}})
    assert found == []


def test_a_cluster_address_that_does_not_answer_is_refused_leaving_no_folder(tmp_path):
    port = closed_port()
    done = study(tmp_path, "--address", f"127.0.0.1:{port}", "--connect-timeout-s", "5")
    assert done.returncode == 2, done.stderr
    assert f"the Ray cluster at 127.0.0.1:{port} does not answer" in done.stderr
    assert f"a TCP connection to 127.0.0.1 port {port} failed within 5 s" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists()  # nothing that --resume would misread


def test_reachable_addresses_pass_and_other_forms_are_left_to_ray():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}", 5)
    check_reachable("auto", 0.1)
    with pytest.raises(UserInputError, match="ray://127.0.0.1"):
        check_reachable(f"ray://127.0.0.1:{closed_port()}", 5)


def test_connect_timeout_must_be_positive():
    found = checks.problems(study_config.resolve("smoke", overrides={"connect_timeout_s": 0}))
    assert found == ["connect_timeout_s must be a number of seconds > 0, got 0"]


def test_a_refused_driver_removes_a_folder_that_holds_only_its_lock(tmp_path):
    run_dir = tmp_path / "study"
    with pytest.raises(UserInputError), RunLock(run_dir):
        raise UserInputError("refused")
    assert not run_dir.exists()
    with pytest.raises(KeyboardInterrupt), RunLock(run_dir):
        (run_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "driver.lock"]  # a study: kept
    with RunLock(tmp_path / "fine"):
        pass
    assert (tmp_path / "fine" / "driver.lock").is_file()  # a driver that ended well keeps its folder


class Payload:
    def __reduce__(self):
        return (os.system, ("echo never",))


def test_an_untrusted_checkpoint_is_refused_without_advice_to_unpickle_it(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": Payload()}, path)
    with pytest.raises(UserInputError) as refused:
        read_checkpoint(path)
    message = str(refused.value)
    assert f"holds a {os.system.__module__}.system object" in message
    assert "converted with a trusted tool" in message and "weights_only" not in message
    path.write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(UserInputError) as refused:
        read_checkpoint(path)
    assert "weights_only" not in str(refused.value) and "trusted tool" in str(refused.value)


def test_the_ray_token_is_made_owner_only(tmp_path, monkeypatch):
    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert token_path() == token
    _owner_only(token_path())
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    _owner_only(tmp_path / "absent")  # no token: nothing to do


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--repeats", "-5"], "repeats must be a whole number >= 1, got '-5'"),
        (["--size", "0x4"], "at least 1x1"),
    ],
)
def test_model_summary_refuses_impossible_numbers(flags, message):
    done = subprocess.run(
        [sys.executable, "-m", "kd.models", "--summary", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_local_ray_s_token_is_owner_only_and_a_cluster_node_s_memory_is_the_limit(local_ray):
    token = Path.home() / ".ray" / "auth_token"
    assert token.is_file() and stat.S_IMODE(token.stat().st_mode) & 0o077 == 0
    joined = StudyConfig(address="127.0.0.1:6379", image_size=[100000, 100000])
    (found,) = resource_problems(joined)
    assert found.startswith("image_size = [100000, 100000]") and "the largest Ray node's" in found
    assert resource_problems(StudyConfig(address="127.0.0.1:6379")) == []
    assert resource_problems(StudyConfig(image_size=[100000, 100000])) == []  # local: weighed before Ray


def test_a_folder_given_as_the_study_file_is_named_as_a_folder(tmp_path):
    with pytest.raises(UserInputError, match="is a folder; give a TOML study file"):
        study_config.read_study_file(tmp_path)


def test_the_connection_timeout_may_change_on_resume():
    from kd.run_folder import RESUMABLE

    assert "connect_timeout_s" in RESUMABLE and "connect_timeout_s" in FIELDS


def test_a_cut_short_configuration_is_named_on_resume(tmp_path):
    (tmp_path / "config.json").write_text('{"run_format": 2, "name": "cut')
    with pytest.raises(UserInputError, match="config.json cannot be read .*cut short"):
        study_config.load(tmp_path)


def test_ctrl_c_before_the_study_is_saved_says_to_start_again(tmp_path, monkeypatch, capsys):
    from study import run

    def interrupted(*args, **kwargs):  # Ctrl-C while the study checks its data: nothing saved yet
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "run_study", interrupted)
    assert run.main(["--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 130
    said = capsys.readouterr().err
    assert "nothing was saved; start the study again" in said and "--resume" not in said
