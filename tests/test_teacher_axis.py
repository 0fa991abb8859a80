"""Teacher strength as a study axis: several teachers in one study, each prepared once, every method
that uses a teacher run with each, and the report's gain-against-margin figure."""

import json
import re
from pathlib import Path

import optuna
import pandas as pd
import pytest

import analysis
from analysis import figures, tables
from kd.errors import UserInputError
from kd.io import content_key
from study import config as study_config
from study.contract import TrialChoice
from study.run import main, run_study

LITE0, OS16 = "deeplabv3_efficientnet_lite0", "deeplabv3_efficientnet_lite0_os16"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "results"


def smoke(tmp_path=None, **changes):
    out = {"out": str(tmp_path)} if tmp_path is not None else {}
    return study_config.resolve("smoke", overrides={**out, "teachers": [LITE0, OS16], **changes})


# ---------------------------------------------------------------- configuration, before Ray


def test_an_unknown_teacher_is_refused_naming_the_choices_before_ray_starts(tmp_path, capsys):
    import ray

    ray.shutdown()  # an earlier module's study may have left its Ray running in this process

    config = smoke(tmp_path, teachers=[LITE0, "deeplabv3_lite9"])
    with pytest.raises(
        UserInputError, match=r"teachers: unknown teacher\(s\) 'deeplabv3_lite9'; choose from"
    ) as err:
        run_study(config, say=lambda line: None)
    assert LITE0 in str(err.value) and "[--teachers, or teachers in the study file]" in str(err.value)
    assert str(err.value).count("deeplabv3_lite9") == 1  # named once, not again as the study's teacher
    assert not ray.is_initialized() and not (config.run_dir / "config.json").exists()
    argv = ["--preset", "smoke", "--out", str(tmp_path), "--teachers", f"{LITE0},nope"]
    assert main(argv) == 2 and "unknown teacher(s) 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"teachers": [LITE0, LITE0]}, f"teachers names {LITE0} more than once"),
        ({"teachers": []}, "teachers must be a list of teacher names"),
        ({"teacher_checkpoint": __file__}, "teacher_checkpoint is one teacher's weights"),
        (
            {"methods": ["sd"], "teachers": [LITE0, "deeplabv3_resnet50"]},
            "deeplabv3_resnet50 has no split point stage1, stage2",
        ),
    ],
)
def test_bad_teacher_axes_are_refused_with_the_fix(changes, problem):
    with pytest.raises(UserInputError, match=re.escape(problem)):
        study_config.validate(smoke(**changes))


def test_teachers_make_their_first_the_study_teacher_and_refuse_another(tmp_path):
    preset = study_config.resolve("camvid-11", overrides={"teachers": [LITE0, OS16]})
    assert preset.teacher == LITE0  # the preset's teacher gives way to the axis
    with pytest.raises(UserInputError, match=r"teacher = 'pspnet_resnet18' and teachers = .* both given"):
        smoke(teacher="pspnet_resnet18")
    study_file = tmp_path / "axis.toml"
    study_file.write_text(f'teacher = "{OS16}"\nteachers = ["{LITE0}", "{OS16}"]\n')
    with pytest.raises(UserInputError, match="leave teacher out"):
        study_config.resolve("smoke", study_file)
    assert smoke(teacher=LITE0).teacher_names == [LITE0, OS16]  # the same teacher twice is no conflict


# ---------------------------------------------------------------- the grid and the search


def test_a_grid_crosses_every_method_that_uses_a_teacher_with_every_teacher():
    config = smoke(
        methods=["baseline", "ftt", "ifvd_kd", "esd"],
        sampler="grid",
        space={"esd": {"r": {"choices": [0.0, 1.0]}}},
    )
    points = study_config.validate(config).grid()
    named = [(c.variant, c.teacher) for c in points]
    assert named == [
        ("baseline", None),  # the student alone: once
        (f"ftt @ {LITE0}", LITE0),  # CT starts from the teacher's weights
        (f"ftt @ {OS16}", OS16),
        (f"ifvd_kd @ {LITE0}", LITE0),
        (f"ifvd_kd @ {OS16}", OS16),
        (f"esd r=0 @ {LITE0}", LITE0),
        (f"esd r=0 @ {OS16}", OS16),
        (f"esd r=1 @ {LITE0}", LITE0),
        (f"esd r=1 @ {OS16}", OS16),
    ]
    assert len({c.key for c in points}) == len(points)  # each its own checkpoints and predictions
    rows = [TrialChoice.from_row(_row(c)) for c in points]
    assert [r.teacher for r in rows] == [c.teacher for c in points]  # test scoring rebuilds the teacher


def _row(choice: TrialChoice) -> dict:
    from study.contract import TrialReport

    return TrialReport().to_row("t", choice, "completed")


def test_one_teacher_keeps_the_variant_names_and_records_the_teacher():
    config = study_config.resolve("smoke", overrides={"methods": ["baseline", "esd"], "sampler": "grid"})
    points = study_config.validate(config).grid()
    assert [(c.variant, c.teacher) for c in points] == [("baseline", None), ("esd", LITE0)]
    assert _row(points[1])["teacher"] == LITE0 and _row(points[0])["teacher"] is None
    # a choice without a teacher (every choice of older runs) keeps the key its files were named by
    old = TrialChoice("esd", {"r": 1.0}, "top")
    assert old.key == content_key(
        {"method": "esd", "overrides": {"r": 1.0}, "split_point": "top", "values": {}, "variant": "esd"}
    )


def test_a_search_asks_optuna_for_the_teacher_of_methods_that_use_one():
    config = smoke(methods=["baseline", "ifvd_kd"], trials=8)
    space = study_config.validate(config)
    search = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    choices = []
    for _ in range(8):
        trial = search.ask()
        choices.append(space.suggest(trial))
        search.tell(trial, 0.5)
    assert {c.teacher for c in choices if c.method == "baseline"} == {None}
    kd = [c for c in choices if c.method == "ifvd_kd"]
    assert {c.teacher for c in kd} == {LITE0, OS16} and all(c.variant == f"ifvd_kd @ {c.teacher}" for c in kd)
    assert "ifvd_kd.teacher" in search.trials[1].params and "baseline.teacher" not in search.trials[0].params


# ---------------------------------------------------------------- old run folders


def test_a_single_teacher_run_folder_gets_its_teacher_column_and_one_point_per_method():
    study = analysis.load(DOCS / "default")
    users = study.trials.loc[study.trials["teacher"].notna(), "method"]
    assert (
        set(users) == {"ftt", "sd", "esd"}
        and study.trials.loc[study.trials["method"] == "baseline", "teacher"].isna().all()
    )
    teacher = "sdhead_efficientnet_lite0"  # the committed default's
    assert list(study.teachers()) == [teacher]
    gains = figures.teacher_gains(study)
    distilled = ["ftt", "sd", "esd r=0.25", "esd r=1"]
    assert list(gains["variant"]) == distilled and set(gains["teacher"]) == {teacher}
    chosen = tables.chosen_trials(study, "test").set_index("variant")

    def test_miou(variant):
        return tables.seed_metrics(study, chosen.loc[variant, "trial_id"], "test")["miou"]

    assert gains.iloc[1]["gain"] == pytest.approx((test_miou("sd") - test_miou("baseline")).mean())
    margin = study.teachers()[teacher]["miou"] - chosen.loc["baseline", "miou"]  # validation mIoU
    assert gains.iloc[1]["margin"] == pytest.approx(margin)
    figure = figures.teacher_gain(study)
    assert [t.name for t in figure.data] == ["ftt", "sd", "esd"]  # one trace per method
    assert any(shape.line.dash == "dash" and shape.y0 == 0 == shape.y1 for shape in figure.layout.shapes)


# ---------------------------------------------------------------- a real study of two teachers


@pytest.fixture(scope="module")
def axis_run(local_ray, tmp_path_factory):
    config = smoke(
        tmp_path_factory.mktemp("axis"),
        name="axis",
        methods=["baseline", "sd"],  # the SD student mimics each teacher's features: seconds per trial
        sampler="grid",
        # a few images, one view each: the teachers train, fill their caches and score in seconds
        source_images=4,
        target_images=4,
        proximity_images=4,
        views=1,
    )
    said = []
    return run_study(config, say=said.append), said


@pytest.mark.slow
def test_a_study_of_two_teachers_prepares_each_once_and_runs_each_method_with_each(axis_run):
    run_dir, said = axis_run
    for teacher in (LITE0, OS16):
        assert sum(line.startswith(f"teacher {teacher}: needed by sd") for line in said) == 1, said
        assert sum(line.endswith("teacher forwards") and f"of {teacher}," in line for line in said) == 1
    record = json.loads((run_dir / "teacher.json").read_text())
    assert set(record["teachers"]) == {LITE0, OS16} and record["name"] == LITE0  # the first, as before
    for teacher, scores in record["teachers"].items():
        assert scores["name"] == teacher and 0 <= scores["miou"] <= 1 and 0 <= scores["test"]["miou"] <= 1
    trials = pd.read_parquet(run_dir / "trials.parquet").sort_values("trial_id")
    assert set(trials["status"]) == {"completed"}
    teachers = trials.set_index("variant")["teacher"]
    assert sorted(teachers.index) == ["baseline", f"sd @ {LITE0}", f"sd @ {OS16}"]
    assert (
        pd.isna(teachers["baseline"])
        and teachers[f"sd @ {LITE0}"] == LITE0
        and teachers[f"sd @ {OS16}"] == OS16
    )
    final = pd.read_parquet(run_dir / "final.parquet")
    assert sorted(final["teacher"].dropna()) == [LITE0, OS16] and final["teacher"].isna().sum() == 1

    study = analysis.load(run_dir)
    gains = figures.teacher_gains(study).set_index("teacher")
    assert sorted(gains.index) == [LITE0, OS16]
    base = study.trials.set_index("variant").loc["baseline", "miou"]
    for teacher in (LITE0, OS16):
        assert gains.loc[teacher, "margin"] == pytest.approx(record["teachers"][teacher]["miou"] - base)
    page = (run_dir / "report.html").read_text()
    assert "Gain against the teacher&#x27;s margin (test images)" in page
    section = page.split("Gain against the teacher&#x27;s margin")[1].split("<h2>")[0]
    assert 'class="plotly-graph-div"' in section and OS16 in section
    header = page.split("<h2>")[0]
    assert "0 running or not started, of 3 requested" in header  # baseline + sd x 2 teachers
    assert header.count("GFLOPs") == 2 and LITE0 in header and OS16 in header  # each teacher's scores
    # each comparison's margin is over its own teacher
    against = tables.comparisons(study, ("baseline",))["baseline"].set_index("variant")["teacher_margin"]
    base_img = study.trials.set_index("variant").loc["baseline", "miou_img"]
    for teacher in (LITE0, OS16):
        expected = record["teachers"][teacher]["miou_img"] - base_img
        assert against[f"sd @ {teacher}"] == pytest.approx(expected)


def split_by_teacher(run_dir: Path, part: Path, teacher: str, with_baseline: bool) -> Path:
    """One part of the axis study: the trials of `teacher` (and the student alone), as a study
    started with `--teachers teacher` would have written them."""
    part.mkdir()
    trials = pd.read_parquet(run_dir / "trials.parquet")
    keep = (trials["teacher"] == teacher) | (trials["teacher"].isna() & with_baseline)
    ids = set(trials.loc[keep, "trial_id"])
    for name in ("trials.parquet", "per_image.parquet", "curves.parquet", "final.parquet"):
        frame = pd.read_parquet(run_dir / name)
        frame[frame["trial_id"].isin(ids)].to_parquet(part / name, index=False)
    config = json.loads((run_dir / "config.json").read_text())
    config.update(teachers=[teacher], teacher=teacher)
    (part / "config.json").write_text(json.dumps(config))
    record = json.loads((run_dir / "teacher.json").read_text())
    mine = record["teachers"][teacher]
    (part / "teacher.json").write_text(json.dumps({**mine, "teachers": {teacher: mine}}))
    (part / "roles.json").write_text((run_dir / "roles.json").read_text())
    return part


@pytest.mark.slow
def test_parts_that_ran_one_teacher_each_merge_into_the_axis_study(axis_run, tmp_path):
    from analysis.merge import merge

    run_dir, _ = axis_run
    first = split_by_teacher(run_dir, tmp_path / "a", LITE0, with_baseline=True)
    second = split_by_teacher(run_dir, tmp_path / "b", OS16, with_baseline=False)
    merged = merge(tmp_path / "merged", [first, second])
    record = json.loads((merged / "teacher.json").read_text())
    assert set(record["teachers"]) == {LITE0, OS16} and record["name"] == LITE0
    assert json.loads((merged / "config.json").read_text())["teachers"] == [LITE0, OS16]
    gains = figures.teacher_gains(analysis.load(merged)).set_index("teacher")
    assert sorted(gains.index) == [LITE0, OS16]
    # one teacher name with other weights in another part is refused
    record = json.loads((second / "teacher.json").read_text())
    record["teachers"][LITE0] = {**record["teachers"][OS16], "name": LITE0}
    (second / "teacher.json").write_text(json.dumps(record))
    with pytest.raises(UserInputError, match=f"teacher {LITE0} differs between the parts"):
        merge(tmp_path / "again", [first, second])
