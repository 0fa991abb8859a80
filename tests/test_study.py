"""Studies end to end with a real local Ray (num_cpus=2), real Optuna and real training."""

import json
import re

import pandas as pd
import pytest
from helpers import find_chromium, headless, smoke

from study.run import run_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(local_ray, tmp_path_factory):
    # Sequential trials, so that test_same_study_file_and_seed_give_the_same_trials can run it again
    return run_study(smoke(tmp_path_factory.mktemp("smoke"), max_concurrent=1), say=lambda line: None)


def test_smoke_study_writes_the_tables(smoke_run):
    run_dir = smoke_run
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"} and set(trials["views"]) == {"2"}  # the smoke bank
    for column in (
        "trial_id",
        "method",
        "status",
        "split_point",
        "seeds",
        "miou",
        "miou_img",
        "hp_acc",
        "var",
        "miou_img_std",
        "params",
        "flops",
        "duration_s",
        "error",
    ):
        assert column in trials.columns
    assert set(trials["method"]) <= {"baseline", "esd"}
    assert trials["miou_img"].between(0, 1).all() and (trials["params"] > 0).all()
    esd = trials[trials["method"] == "esd"]
    assert esd["r"].notna().all()  # a hyperparameter of its method only
    # smoke's 3 epochs in all: ESD 1/1/1 steps-wise 2 steps each (8 images, batch 4), baseline 3 x 2
    assert (esd[["steps_feature", "steps_frozen", "steps_finetune"]] == 2).all().all()
    assert (esd["stage1_feature_ratio"] > 0).all() and trials["degenerate"].dtype == bool
    if (trials["method"] == "baseline").any():
        baseline = trials[trials["method"] == "baseline"]
        assert (baseline["steps_train"] == 6).all() and baseline["stage1_feature_ratio"].isna().all()
    if (trials["method"] == "baseline").any():
        assert trials.loc[trials["method"] == "baseline", "r"].isna().all()
    per_image = pd.read_parquet(run_dir / "per_image.parquet")
    assert list(per_image.columns) == ["trial_id", "method", "split", "seed", "image_id", "miou"]
    variants = trials["variant"].nunique()
    assert (
        len(per_image) == 4 * 4 + variants * 4
    )  # 3 trials x 4 val images; each variant's best x 4 test images
    assert json.loads((run_dir / "config.json").read_text())["name"] == "smoke"
    import analysis

    study = analysis.load(run_dir)
    assert set(study.curves["trial_id"]) == set(trials["trial_id"]) and study.curves["loss"].notna().all()
    samples = study.samples()
    assert samples["images"].shape == (4, 32, 64, 3) and samples["masks"].shape == (4, 32, 64)
    for trial_id in trials["trial_id"]:
        predicted = study.predictions(trial_id)
        assert list(predicted["ids"]) == list(samples["ids"]) and predicted["predictions"].max() <= 1
    assert not (run_dir / "scratch").exists()  # engine checkpoints are gone once trials finish

    teacher = study.teacher()  # the reference the students are read against, on the same 4 images
    assert teacher["name"].startswith("deeplabv3_efficientnet_lite0") and 0 <= teacher["miou"] <= 1
    assert teacher["params"] > trials["params"].max() and teacher["flops"] > 0
    assert (run_dir / "optuna.journal").is_file()
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(
        study_name="smoke", storage=JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal")))
    )
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 4
    assert sorted(trials["method"]) == ["baseline", "baseline", "esd", "esd"]  # methods take turns


def test_each_variants_chosen_trial_is_scored_once_on_test_images(smoke_run):
    trials = pd.read_parquet(smoke_run / "trials.parquet")
    chosen = trials[trials["students"].notna()]
    assert sorted(chosen["variant"]) == sorted(trials["variant"].unique())  # one per variant: its best on val
    for _, row in chosen.iterrows():
        rivals = trials[trials["variant"] == row["variant"]]
        assert row["miou_img"] == rivals["miou_img"].max()
        students = smoke_run / row["students"]
        assert sorted(p.name for p in students.iterdir()) == ["report.json", "seed0.pt"]
        saved = json.loads(
            (students / "report.json").read_text()
        )  # what a restored finished trial re-reports
        assert saved["metrics"]["miou_img"] == pytest.approx(row["miou_img"])
    final = pd.read_parquet(smoke_run / "final.parquet")
    assert sorted(final["trial_id"]) == sorted(chosen["trial_id"]) and (final["seed"] == 0).all()
    assert final["miou_img"].between(0, 1).all() and "r" in final.columns  # the chosen hyperparameters
    per_image = pd.read_parquet(smoke_run / "per_image.parquet")
    val, test = (set(per_image.loc[per_image["split"] == s, "image_id"]) for s in ("val", "test"))
    roles = json.loads((smoke_run / "roles.json").read_text())
    assert val == set(roles["val"]["ids"]) and test == set(roles["test"]["ids"])
    assert not val & test and not (val | test) & set(roles["target"]["ids"])


@pytest.fixture(scope="module")
def failing_run(local_ray, tmp_path_factory):
    """A search whose baseline trials all fail for real (lr 1e10 diverges) while ESD's train at their
    defaults; what the study said, line by line."""
    config = smoke(
        tmp_path_factory.mktemp("failing"),
        name="failing-tpe",
        epochs=3,
        space={"baseline": {"lr": 1e10}},
        report=False,
    )
    lines = []
    return run_study(config, say=lines.append), lines


def test_a_failing_trial_is_recorded_and_the_study_goes_on(failing_run):
    run_dir, lines = failing_run
    trials = pd.read_parquet(run_dir / "trials.parquet")
    baseline, esd = (trials[trials["method"] == method] for method in ("baseline", "esd"))
    assert len(baseline) and (baseline["status"] == "failed").all()
    for error in baseline["error"]:
        assert "NonFiniteLossError" in error and "'ce'" in error
    assert len(esd) and (esd["status"] == "completed").all() and (esd["miou_img"] > 0).all()
    assert any("FAILED" in line for line in lines)


def test_a_failing_trial_in_a_search_is_told_to_optuna_and_the_study_goes_on(failing_run):
    # The searcher must not stop the study over a failed trial's missing scores: Optuna hears FAIL.
    run_dir, _ = failing_run
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert sorted(trials["status"]) == ["completed", "completed", "failed", "failed"]
    assert set(trials.loc[trials["status"] == "failed", "method"]) == {"baseline"}
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal")))
    states = sorted(t.state.name for t in optuna.load_study(study_name="failing-tpe", storage=journal).trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    final = pd.read_parquet(run_dir / "final.parquet")  # the failed variant has nothing to score
    assert set(final["method"]) == {"esd"}


OBJECTIVES = ["miou_img", "hp_acc", "var"]


@pytest.fixture(scope="module")
def finished_run(local_ray, tmp_path_factory):
    """A multi-objective search of two baseline trials whose test scoring failed (where the scores go
    was a folder), then resumed to its end, as a user types both: each command's exit code and what
    it said, the files the failed one left, and the study's config."""
    import contextlib
    import io
    from types import SimpleNamespace

    from study.run import main

    out = tmp_path_factory.mktemp("finished")
    run_dir = out / "pareto"
    (run_dir / "final.parquet").mkdir(parents=True)  # where the test scores go cannot be written
    argv = ["--preset", "smoke", "--out", str(out), "--name", "pareto", "--trials", "2"]
    search = ["--methods", "baseline", "--sampler", "nsga2", "--objectives", ",".join(OBJECTIVES)]
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        failed = main([*argv, *search, "--quiet"])
    left = {path.name for path in run_dir.iterdir()}
    (run_dir / "final.parquet").rmdir()
    resumed = main([*argv, "--resume", "--quiet", "--no-report"])  # the failed run wrote the report
    config = smoke(out, name="pareto", trials=2, methods=["baseline"], sampler="nsga2", objectives=OBJECTIVES)
    return SimpleNamespace(
        run_dir=run_dir, config=config, failed=failed, said=said.getvalue(), left=left, resumed=resumed
    )


def test_a_failed_test_scoring_fails_the_command_and_resume_scores(finished_run):
    assert finished_run.failed == 1
    assert "test scoring failed" in finished_run.said and "--resume" in finished_run.said
    assert {"trials.parquet", "report.html"} <= finished_run.left
    assert finished_run.resumed == 0
    final = pd.read_parquet(finished_run.run_dir / "final.parquet")
    assert len(final) == 1  # the one variant, its one seed


def test_existing_study_needs_resume(finished_run):
    with pytest.raises(Exception, match="add --resume"):
        run_study(finished_run.config, say=lambda line: None)


def test_resuming_a_finished_study_changes_nothing(finished_run):
    from study.lock import LOCK

    run_dir = finished_run.run_dir

    def written():  # the driver's lock file is taken again, by design
        return {path.name: path.stat().st_mtime_ns for path in run_dir.iterdir() if path.name != LOCK}

    before, said = written(), []
    assert run_study(finished_run.config, resume=True, say=said.append) == run_dir
    assert any("is finished" in line and "nothing to resume" in line for line in said)
    assert written() == before and {"final.parquet", "trials.parquet", "report.html"} <= set(before)


def test_searcher_counts_only_finished_trials_as_complete(tmp_path):
    # Ray hands a scheduler-stopped trial's last intermediate result to on_trial_complete.
    import optuna

    from study.space import resolve_space
    from study.tuner import finished_only_optuna_search

    searcher = finished_only_optuna_search()(
        space=resolve_space(["baseline"], ["stage3", "stage5"]),
        metric="miou_img",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    searcher.set_search_properties(None, None, {})
    for trial_id in ("finished", "stopped", "crashed"):
        config = searcher.suggest(trial_id)
        assert (
            list(config) == ["choice"] and config["choice"].method == "baseline"
        )  # Optuna's names stay inside
    searcher.on_trial_complete("finished", {"miou_img": 0.5, "final": True})
    # a final report is told on completion, never as an intermediate step (a trial Ray restarts
    # after --resume may already be closed in Optuna's journal)
    searcher.suggest("restarted")
    searcher.on_trial_result("restarted", {"miou_img": 0.6, "final": True, "training_iteration": 1})
    assert searcher._ot_study.trials[-1].intermediate_values == {}
    searcher.on_trial_complete("stopped", {"miou_img": 0.9, "epoch": 1})
    searcher.on_trial_complete("crashed", {"miou_img": 0.7}, error=True)
    states = [t.state.name for t in searcher._ot_study.trials]
    assert states == ["COMPLETE", "PRUNED", "FAIL", "RUNNING"]
    assert searcher._ot_study.best_value == 0.5  # the stopped trial's 0.9 was never taken as final


def test_multi_objective_study(finished_run):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(finished_run.run_dir / "optuna.journal")))
    study = optuna.load_study(study_name="pareto", storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE", "MINIMIZE"]
    assert len(study.best_trials) >= 1 and all(len(t.values) == 3 for t in study.best_trials)


def test_the_study_writes_its_report_and_it_draws_in_a_browser(smoke_run):
    report = smoke_run / "report.html"
    text = report.read_text()
    assert "Study smoke" in text and "HP-Acc against Var" in text and "Segmentation samples" in text
    assert "<dt>training views</dt><dd>a fixed bank of 2 augmented views per image" in text
    done = headless(find_chromium(), "--dump-dom", report.as_uri())
    values = dict(re.findall(r'data-(figures|errors|expected)="(\d+)"', done.stdout))
    assert values["errors"] == "0" and int(values["figures"]) == int(values["expected"]) > 0


def test_same_study_file_and_seed_give_the_same_trials(smoke_run, tmp_path):
    # Sequential trials: the sampler sees results in the same order, and training is deterministic on CPU.
    # The study file cut to its first two trials (one of each method): the trials after them cannot
    # change them, so they must be the same two.
    again = run_study(
        smoke(tmp_path, name="again", max_concurrent=1, trials=2, report=False), say=lambda line: None
    )
    assert not (again / "report.html").exists()  # --no-report: the tables only
    tables = [pd.read_parquet(run / "trials.parquet") for run in (smoke_run, again)]
    assert len(tables[1]) == 2
    tables[0] = tables[0].head(2)
    same = [
        "method",
        "split_point",
        "r",
        "lr",
        "feature_lr",
        "frozen_lr",
        "miou",
        "miou_img",
        "hp_acc",
        "var",
        "params",
    ]
    columns = [c for c in same if c in tables[0].columns]
    pd.testing.assert_frame_equal(tables[0][columns], tables[1][columns])


def test_asha_stops_trials_on_the_first_seeds_epochs_and_the_tables_say_so(local_ray, tmp_path):
    import optuna

    config = smoke(
        tmp_path, scheduler="asha", trials=4, seeds=2, epochs=4, methods=["baseline"], report=False
    )
    run_dir = run_study(config, say=lambda line: None)
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and set(trials["status"]) <= {"completed", "stopped"}
    assert "completed" in set(trials["status"])  # the best of the first rung always goes on
    done, stopped = trials[trials["status"] == "completed"], trials[trials["status"] == "stopped"]
    assert done["miou_img"].notna().all() and (done["seeds"] == 2).all()
    assert stopped["miou_img"].isna().all()  # an intermediate score is no result
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run_dir / "optuna.journal"))
    )
    states = [t.state.name for t in optuna.load_study(study_name=config.name, storage=journal).trials]
    assert states.count("COMPLETE") == len(done) and states.count("PRUNED") == len(stopped)
    curves = pd.read_parquet(run_dir / "curves.parquet")
    first_seed = curves[(curves["trial_id"] == done.iloc[0]["trial_id"]) & (curves["seed"] == 0)]
    assert first_seed["miou_img"].notna().sum() == 4  # ASHA reads the first seed after every epoch


def test_evaluate_rescores_the_chosen_students(smoke_run, capsys):
    from study.evaluate import EVALUATION, main

    final = pd.read_parquet(smoke_run / "final.parquet").set_index("trial_id")
    assert main([str(smoke_run)]) == 0 and capsys.readouterr().out.strip().endswith(EVALUATION)
    again = pd.read_parquet(smoke_run / EVALUATION).set_index("trial_id")
    assert set(again["split"]) == {"test"} and set(again["image_size"]) == {"32x64"}
    for metric in ("miou", "miou_img", "hp_acc", "var"):  # the same students on the same images
        assert again[metric].to_dict() == pytest.approx(final[metric].to_dict())
    # on validation, the chosen trials' students give back the scores they were picked on
    assert main([str(smoke_run), "--split", "val"]) == 0
    trials = pd.read_parquet(smoke_run / "trials.parquet").set_index("trial_id")
    table = pd.read_parquet(smoke_run / EVALUATION)
    on_val = table[table["split"] == "val"].set_index("trial_id")
    assert on_val["miou_img"].to_dict() == pytest.approx(trials.loc[on_val.index, "miou_img"].to_dict())
    # another resolution adds rows; the same evaluation again replaces its own
    assert main([str(smoke_run), "--size", "48x96"]) == 0
    assert main([str(smoke_run), "--size", "48x96"]) == 0
    table = pd.read_parquet(smoke_run / EVALUATION)
    assert table.groupby(["split", "image_size"]).size().to_dict() == {
        ("test", "32x64"): len(final),
        ("test", "48x96"): len(final),
        ("val", "32x64"): len(final),
    }
    teacher = json.loads((smoke_run / "teacher.json").read_text())
    assert 0 <= teacher["test"]["miou_img"] <= 1  # the reference on the same test images


def test_evaluate_refuses_bad_input_before_scoring(smoke_run, tmp_path, capsys):
    from study.evaluate import main

    assert main([str(smoke_run), "--size", "big"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    assert main([str(smoke_run), "--data", f"camvid:{tmp_path / 'nowhere'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2 and "not a study's run folder" in capsys.readouterr().err


def test_the_acceptance_smoke_study_on_camvid(local_ray, camvid_root, tmp_path, monkeypatch, capsys):
    """Issue 15's acceptance, as a user types it: a relative --data path, final.parquet, val and
    test images disjoint and never a target image, and study.evaluate on the run."""
    import os

    from study.evaluate import main as evaluate
    from study.run import main

    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(camvid_root, tmp_path)  # Ray's trials run elsewhere: made absolute
    argv = ["--preset", "smoke", "--data", f"camvid:{relative}", "--out", "runs", "--name", "accept"]
    assert main([*argv, "--trials", "2", "--no-report"]) == 0  # one trial of each method
    run_dir = tmp_path / "runs" / "accept"
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert set(trials["status"]) == {"completed"}, trials["error"].dropna().tolist()
    final = pd.read_parquet(run_dir / "final.parquet")
    assert sorted(final["variant"]) == sorted(trials["variant"].unique())
    per_image = pd.read_parquet(run_dir / "per_image.parquet")
    val, test = (set(per_image.loc[per_image["split"] == s, "image_id"]) for s in ("val", "test"))
    target = set(json.loads((run_dir / "roles.json").read_text())["target"]["ids"])
    assert val and test and not val & test and not (val | test) & target
    assert all(name.startswith("0001TP") or name.startswith("Seq05VD") for name in test)  # the test split
    # every trial wrote into the run folder, not into Ray's per-trial working folder
    predictions = trials["predictions"].map(lambda path: (run_dir / path).is_file())
    assert predictions.all() and (run_dir / "samples.npz").is_file()
    capsys.readouterr()
    assert evaluate([str(run_dir)]) == 0
    evaluated = pd.read_parquet(run_dir / "evaluation.parquet").set_index("trial_id")
    assert evaluated["miou_img"].to_dict() == pytest.approx(final.set_index("trial_id")["miou_img"].to_dict())
