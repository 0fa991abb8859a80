"""Trials no node can hold are refused before any work, through the command line, instead of
Ray waiting for them forever (the study's own local Ray, as a user gets it)."""

import pytest

from study.run import main

pytestmark = pytest.mark.slow


def test_more_cpus_per_trial_than_the_machine_has_is_refused_at_once(tmp_path, capsys):
    import os

    import ray

    code = main(["--preset", "smoke", "--cpus-per-trial", "10000", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cpus_per_trial = 10000 but the largest Ray node has {os.cpu_count()} CPUs" in err
    assert f"set --cpus-per-trial {os.cpu_count()} or fewer" in err
    assert not ray.is_initialized()  # the study let go of the Ray it started
    assert not (tmp_path / "smoke" / "config.json").exists()  # nothing saved: the same command may be rerun
