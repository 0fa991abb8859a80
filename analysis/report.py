"""One self-contained HTML report of a study: `python -m analysis.report RUN_DIR [--out FILE] [--export DIR]`.

The file opens offline: plotly.js is inlined once, no CDN, no external script. A partial or empty
study (still running, all trials failed) gives a valid report with notes in place of figures.

For automated checks the page sets, once plotly has drawn, `document.body.dataset.figures` (plots
drawn), `.errors` (JavaScript errors caught on the page) and `.expected` (plots embedded).
"""

from __future__ import annotations

import argparse
import html
import math
import re
import sys
from pathlib import Path

import pandas as pd

from analysis import figures, page, tables
from analysis.configuration import grid_size
from analysis.load import load
from kd.data.transforms import FRESH
from kd.metrics import METRICS, OBJECTIVES, THETA
from kd.run_folder import REPORT_PAGE

# (title, figure function, images, caption: what it shows and what to look for, note when there is
# nothing to draw). images: "val" (search figures: every trial, on the validation images the chosen
# trials were picked on), "reported" (results: test once the chosen trials were scored there), or "both".
FIGURES = [
    (
        "HP-Acc against Var",
        figures.hp_acc_vs_var,
        "both",
        "Circles: every completed trial on the validation images; diamonds (once the study scored them): "
        "each variant's chosen trial on the test images (SD paper, Fig. 8). HP-Acc is the share of "
        f"images with mIoU_i > {THETA:g}, Var the spread of mIoU_i. Look up and to the left: robust "
        "variants score many images well and few badly.",
        page.NO_TRIALS,
    ),
    (
        "ESD: the ratio r",
        figures.esd_ratio,
        "both",
        "mIoU and HP-Acc against the proximity-domain ratio r (SD paper, Fig. 7): every completed trial on "
        "the validation images (circles), each ESD variant's chosen trial on the test images (diamonds); "
        "error bars are the standard deviation over the trial's seeds. Look for the r where both peak; "
        "other hyperparameters vary between trials too.",
        "No completed trial has a ratio r (no ESD trials yet).",
    ),
    (
        "Per-image mIoU of the chosen trials",
        figures.per_image_histograms,
        "reported",
        "Distribution of mIoU_i of each variant's chosen trial over all its seeds and images "
        f"(SD paper, Fig. 5). Look for mass moved right of the θ = {THETA:g} line and a thinner left tail.",
        "No per-image scores of a chosen trial yet.",
    ),
    (
        "Pareto front",
        figures.pareto_front,
        "val",
        "Completed trials in the three pairs of miou_img (higher is better), hp_acc (higher) and var "
        "(lower). Diamonds are the non-dominated trials over all three: no other trial is at least as good "
        "in every metric and better in one. Look for which variants own the front.",
        page.NO_TRIALS,
    ),
    (
        "Accuracy against cost",
        figures.miou_vs_gflops,
        "reported",
        "mIoU of each variant's chosen trial against the GFLOPs of one forward pass; bubble area is the "
        "number of parameters (SD paper, Fig. 1). Up and to the left is a better accuracy per computation.",
        "No chosen trial with both mIoU and FLOPs yet.",
    ),
    (
        "Gain against the teacher's margin",
        figures.teacher_gain,
        "reported",
        "One point per method and teacher: its chosen trial's gain over the student alone in mIoU on the "
        "test images (mean of the per-seed differences, error bar its 95 % Student-t interval) against "
        "its teacher's margin over the student alone in mIoU on the validation images (the teacher's "
        "mIoU minus the student alone's, x error bar the student alone's 95 % interval over its seeds). "
        "Dotted lines name each teacher; points above the dashed line gain from distillation. Look for "
        "whether the gain grows with the teacher's margin.",
        "No teacher scores, no student-alone variant (baseline, ifvd_student), or no test scores yet.",
    ),
    (
        "Segmentation samples",
        figures.segmentation_samples,
        "val",
        "Input, ground truth and the prediction of each variant's chosen trial (first seed) on the first "
        "three validation images and on the image each variant found hardest (lowest mIoU_i). Void pixels "
        "are black. Look for where the variants disagree: thin structures, borders, shadows.",
        "The study saved no sample images or no predictions of a chosen trial.",
    ),
    (
        "Training curves",
        figures.curves,
        "val",
        "Loss terms and validation metrics per epoch of each variant's chosen trial (first seed); the stages "
        "of a recipe follow each other on the epoch axis. Look for diverging or still-falling losses.",
        "No training curves of a chosen trial yet.",
    ),
]


MECHANISM_CAPTION = (
    "What SD and ESD claim happens, per variant's chosen trial, not only its score. Stage-1 feature "
    "ratio: after stage 1, the student's feature loss over that of predicting each channel's mean "
    "(0: it reproduces the teacher's features, 1: no better than the channel means), on the images "
    "stage 1 trained on (SD: the target images; ESD: target and proximity images) and on the test "
    "images, which it never trained on. A ratio far lower on its own images than on the test images "
    "is mimicry that fits those images and does not carry over. Shadowed and sunlit: mIoU on the test "
    "images over the ground pixels in cast shadow and over those in sunlight (the same materials, so "
    "the gap is light, not classes), means over seeds with 95 % Student-t intervals; the teacher's "
    "for reference. Look for a lower ratio on the test images and a smaller gap where the student "
    "trained on images with shadows (ESD's proximity images) against SD."
)


def mechanism_html(study) -> str:
    """The mechanism section's table, or "" for a study that records none of it."""
    frame = tables.mechanism(study)
    if frame.empty:
        return ""
    return (
        f'<h2>Mechanism: stage 1 and shadows</h2><p class="caption">{html.escape(MECHANISM_CAPTION)}</p>'
        + page.html_table(page.mechanism_frame(frame))
    )


def split_note(study) -> str:
    """What the results tables and figures are scored on, and, before the test scores exist, why
    the numbers shown are optimistic."""
    if tables.reported_split(study) == "test":
        missing = set(tables.ordered_variants(study)) - set(study.final["variant"])
        return page.note(f"Not scored on the test images: {', '.join(sorted(missing))}.") if missing else ""
    return page.note(
        "Not yet scored on the test images: these are the validation scores each chosen trial was "
        "picked on, biased upward by that choice. The study scores each variant's chosen trial on the "
        "test images once all its trials have finished."
    )


def summary_html(study) -> str:
    summary = tables.method_summary(study)
    if summary.empty:
        return page.note("No methods configured and no trials recorded yet.")
    shown = page.summary_frame(summary)
    objective = tables.objective(study)
    direction = "highest" if tables.higher_is_better(objective) else "lowest"
    images = tables.SPLITS[tables.reported_split(study)]
    text = (
        f'<p class="caption">Chosen trial of each variant (a method, or one point of a grid over it) = '
        f"{direction} {html.escape(objective)} (the study's first objective) on the validation images "
        f"(selection score). Its scores on the <b>{images}</b>: means over that trial's seeds with 95 % "
        "Student-t intervals (none for one seed); miou_img, hp_acc (share of images with mIoU_i "
        f"&gt; {THETA:g}) and var (population variance of mIoU_i) per seed, miou from the summed "
        "confusion matrix per seed (on validation: from the trials table). Steps per stage: the "
        "optimiser steps each stage took (mean over seeds): the budget. Stage-1 feature ratio: the final "
        "feature loss over that of predicting each channel's mean (1 = stage 1 learned nothing). A "
        "DEGENERATE trial predicts one class on every validation pixel: its mIoU is no evidence of "
        "learning.</p>"
    )
    note = page.note(page.NO_TRIALS) if study.completed.empty else split_note(study)
    return note + text + page.html_table(shown)


BOOTSTRAP_CAPTION = (
    "Bootstrap: the difference in mean per-image score with its 95 % percentile interval and "
    f"two-sided p, from {tables.RESAMPLES} resamples that draw the seeds with replacement and, within "
    f"each, blocks of {tables.BLOCK_LENGTH} consecutive frames of one sequence with replacement "
    "(neighbouring frames look alike: counting them as independent overstates the evidence). With few "
    "seeds its interval is narrower than the t-test's: a handful of resampled seeds cannot show the "
    "spread the t distribution allows for."
)


def paired_html(study) -> str:
    paired = tables.comparisons(study)["baseline"]
    images = tables.SPLITS[tables.reported_split(study)]
    text = (
        "<p class=\"caption\">Each variant's chosen trial against the baseline's, on the "
        f"<b>{images}</b>. Per seed (seeds are the independent repetitions): mean diff and sd of "
        "miou_img(variant) − miou_img(baseline) paired by seed; p: two-sided paired t-test; p adj.: "
        f"Holm-adjusted over the family named below; significant: p adj. &lt; {tables.ALPHA:g}; seeds "
        f"needed: the seeds with which a paired t-test at α = {tables.ALPHA:g} has "
        f"{tables.POWER:.0%} power for the observed mean and sd (inf: more than {tables.MAX_SEEDS}). "
        f"{html.escape(BOOTSTRAP_CAPTION)} "
        "Per image: pairs (seed, image); p: two-sided Wilcoxon signed-rank test (zero differences "
        "dropped; p = 1 when all are zero), Holm-adjusted likewise; effect size: matched-pairs "
        "rank-biserial correlation (R+ − R−)/(R+ + R−), +1 = the variant wins every pair, −1 = the "
        "baseline does. The same image under several seeds counts once per seed, so the per-image pairs "
        "are not independent: read the per-seed test and the bootstrap first.</p>"
    )
    if paired.empty:
        return text + page.note(paired.attrs.get("note", "Nothing to compare."))
    lines = "".join(f'<p class="caption">{html.escape(line)}</p>' for line in comparison_lines(paired))
    return text + lines + page.html_table(paired_frame(paired))


def comparison_lines(paired: pd.DataFrame) -> list[str]:
    """The lines above a comparison table: the multiplicity family and the teacher's margin over
    the reference, which says whether the comparisons can show what distillation adds."""
    family, reported = paired.attrs.get("family", len(paired)), paired.attrs.get("reported", len(paired))
    both_ways = f" ({reported} rows: a pair compared both ways counts once)" if reported > family else ""
    lines = [f"Holm over {family} comparisons: every method against every reference on this page{both_ways}."]
    margin = paired["teacher_margin"].iloc[0]
    if not math.isnan(margin):
        enough = "at least" if margin >= tables.TEACHER_MARGIN else "less than"
        lines.append(
            f"Teacher minus reference, miou_img on the validation images: {margin:+.3f} ({enough} "
            f"{tables.TEACHER_MARGIN:g}; below it the verdicts read uninformative)."
        )
    return lines


def _boot_p(value, bound: float) -> str:
    """A bootstrap p of 0 means no resample crossed 0: p is below the bound those resamples resolve."""
    return f"< {bound:.2g}" if value == 0 else page.p_text(value)


def _interval(low, high) -> str:
    return "–" if math.isnan(low) or math.isnan(high) else f"[{low:.4f}, {high:.4f}]"


def paired_frame(paired: pd.DataFrame) -> pd.DataFrame:
    """paired_comparison as it is shown."""
    resamples = paired.attrs.get("resamples", tables.RESAMPLES)
    family = paired.attrs.get("family", len(paired))
    return pd.DataFrame(
        {
            "variant": paired["variant"],
            "trial": paired["trial_id"],
            "reference trial": paired["baseline_trial"],
            "scored on": paired["split"],
            "seeds": paired["n_seeds"],
            "mean diff (per seed)": [page.number(v, 4) for v in paired["mean_diff"]],
            "sd diff": [page.number(v, 4) for v in paired["sd_diff"]],
            "p (paired t)": [page.p_text(v) for v in paired["p_value"]],
            "p adj. (Holm)": [page.p_text(v) for v in paired["p_adjusted"]],
            "seeds needed": [page.number(v, 0) for v in paired["seeds_needed"]],
            "diff (bootstrap)": [page.number(v, 4) for v in paired["boot_diff"]],
            "95% interval (bootstrap)": [
                _interval(low, high)
                for low, high in zip(paired["boot_ci_low"], paired["boot_ci_high"], strict=True)
            ],
            "p (bootstrap)": [_boot_p(v, 1 / resamples) for v in paired["boot_p"]],
            "p adj. (Holm), bootstrap": [_boot_p(v, family / resamples) for v in paired["boot_p_holm"]],
            "pairs (seed, image)": paired["n_pairs"],
            "mean diff (per image)": [page.number(v, 4) for v in paired["image_mean_diff"]],
            "p (Wilcoxon)": [page.p_text(v) for v in paired["image_p_value"]],
            "p adj. (Holm), images": [page.p_text(v) for v in paired["image_p_adjusted"]],
            "effect size": [page.number(v, 3) for v in paired["effect_size"]],
            "better": paired["better"],
            "significant": [f"yes (p adj. < {tables.ALPHA:g})" if v else "no" for v in paired["significant"]],
            "verdict": paired["verdict"],
        }
    )


def failed_html(study) -> str:
    failed = tables.failed_trials(study)
    if failed.empty:
        return "<p>No failed trials.</p>"
    return page.html_table(failed.fillna({"error": "unknown error"}), "failed")


def budget_line(config: dict) -> str:
    """What each method got: trials (a search's methods take turns), epochs in all, seeds per trial."""
    methods = config.get("methods") or []
    epochs = config.get("epochs") or "the recipe's own"
    if config.get("sampler") == "grid":
        trials = "one trial per grid point"
    elif methods and isinstance(config.get("trials"), int):
        trials = f"{config['trials'] // len(methods)} trials (methods take turns)"
    else:
        trials = "?"
    return f"{trials}, {epochs} epochs over all stages, {config.get('seeds', '?')} seeds per trial"


def views_line(study) -> str:
    """What the students trained on: fresh views, or a fixed bank of views per image."""
    recorded = sorted({str(v) for v in study.trials["views"].dropna()})
    if not recorded and "views" in study.config:
        recorded = [str(study.config["views"])]
    texts = [
        "fresh (a new augmentation of every image at every epoch; the teacher online)"
        if views == FRESH
        else f"a fixed bank of {views} augmented views per image (the teacher's outputs cached)"
        for views in recorded
    ]
    return "; ".join(texts) or "– (not recorded)"


def teachers_line(study) -> str:
    """Every teacher of a study with a teacher axis, else its one teacher."""
    teachers = study.teachers()
    if len(teachers) > 1:
        return " | ".join(teacher_line({"name": name, **record}) for name, record in teachers.items())
    return teacher_line(study.teacher())


def teacher_line(teacher: dict | None) -> str:
    if not teacher:
        return "– (not recorded)"
    params, gflops = _float(teacher.get("params")) / 1e6, _float(teacher.get("flops")) / 1e9
    scored = {"validation images": teacher} | ({"test images": teacher["test"]} if "test" in teacher else {})
    scores = "; ".join(
        f"on the {images}: "
        + ", ".join(f"{m} {page.number(record.get(m), page.metric_digits(m))}" for m in METRICS)
        for images, record in scored.items()
    )
    size = f"{page.significant(params)} M params, {page.significant(gflops)} GFLOPs"
    return f"{teacher.get('name', '?')} {scores}; {size}"


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def header_html(study) -> str:
    config, trials = study.config, study.trials
    counts = trials["status"].value_counts()
    requested = config.get("trials")
    if config.get("sampler") == "grid":
        requested = grid_size(config)
    try:
        pending = max(0, int(requested) - len(trials))
    except (TypeError, ValueError):
        pending, requested = "?", "?"
    objectives = config.get("objectives") or []
    items = {
        "methods": ", ".join(config.get("methods") or tables.methods(study)) or "–",
        "data": config.get("data", "–"),
        "sampler": config.get("sampler", "–"),
        "objectives": ", ".join(f"{o} ({OBJECTIVES.get(o, '?')})" for o in objectives) or "–",
        "seeds per trial": config.get("seeds", "–"),
        "trials": (
            f"{int(counts.get('completed', 0))} completed, {int(counts.get('failed', 0))} failed, "
            f"{int(counts.get('stopped', 0))} stopped, {pending} running or not started, of {requested} "
            "requested"
        ),
        "budget per method": budget_line(config),
        "training views": views_line(study),
        "teacher (reference)": teachers_line(study),
        "run folder": str(study.run_dir),
    }
    rows = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in items.items())
    return f'<h1>Study {html.escape(str(study.name))}</h1><dl class="header">{rows}</dl>'


def figures_html(study) -> tuple[str, int]:
    """The figure sections, with a note in place of a figure there is nothing for yet, and how many
    plots they embed."""
    parts, plots = [], 0
    for title, build, images, caption, empty in FIGURES:
        heading = f"{title} ({page.images_label(images, study)})"
        parts.append(f'<h2>{html.escape(heading)}</h2><p class="caption">{html.escape(caption)}</p>')
        figure = build(study)
        parts.append(
            page.note(page.NO_TRIALS if study.completed.empty else empty)
            if figure is None
            else page.figure_html(figure)
        )
        plots += figure is not None
    return "\n".join(parts), plots


def optuna_html(study) -> tuple[str, int]:
    """The Optuna section and how many plots it embeds."""
    parts = [
        '<h2>Optuna</h2><p class="caption">Optuna\'s own views of the search, read from the journal: '
        "objective value per trial, the hyperparameters of every trial, and how much each parameter "
        "explains of the objective (first objective when there are several).</p>"
    ]
    drawn = figures.optuna_figures(study)
    if not drawn:
        parts.append(page.note("No Optuna journal in this run folder."))
    for title, figure in drawn:
        parts += [
            f"<h3>{html.escape(title)}</h3>",
            page.note(figure) if isinstance(figure, str) else page.figure_html(figure),
        ]
    return "\n".join(parts), sum(not isinstance(figure, str) for _, figure in drawn)


def write_report(run_dir, out=None) -> Path:
    """Write the study's report (default RUN_DIR/report.html) and return its path."""
    study = load(run_dir)
    out = Path(out) if out is not None else study.run_dir / REPORT_PAGE
    (figure_part, figure_plots), (optuna_part, optuna_plots) = figures_html(study), optuna_html(study)
    plots = figure_plots + optuna_plots
    parts = [
        header_html(study),
        page.note(page.NO_TRIALS) if study.completed.empty else "",
        "<h2>Methods</h2>",
        summary_html(study),
        "<h2>Against the baseline</h2>",
        paired_html(study),
        mechanism_html(study),
        figure_part,
        optuna_part,
        "<h2>Failed trials</h2>",
        failed_html(study),
    ]
    return page.write_page(out, page.page_html(f"{study.name}: SegKD study report", parts, plots))


def markdown_table(frame: pd.DataFrame) -> str:
    cells = frame.astype(object).where(frame.notna(), "–").astype(str)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in cells.values.tolist()]
    return "\n".join(lines) + "\n"


def seed_frame(seeds: pd.DataFrame) -> pd.DataFrame:
    """seed_table as it is shown: one row per variant, one column per seed, "miou_img / hp_acc"."""
    cells = {
        (variant, f"seed {seed}"): f"{page.number(m, 3)} / {page.number(h, 2)}"
        for variant, seed, m, h in seeds[["variant", "seed", "miou_img", "hp_acc"]].values
    }
    columns = [f"seed {s}" for s in sorted(seeds["seed"].unique())]
    rows = [
        {"variant": v, **{c: cells.get((v, c), "–") for c in columns}}
        for v in dict.fromkeys(seeds["variant"])
    ]
    return pd.DataFrame(rows, columns=["variant", *columns])


def stage_end_frame(ends: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "variant": ends["variant"],
            "stage": [f"{i}: {s}" for i, s in zip(ends["stage_index"], ends["stage"], strict=True)],
            "seeds": ends["seeds"],
            **{
                f"{m} ± 95% CI": [
                    page.with_ci(mean, half, 3) for mean, half in zip(ends[m], ends[f"{m}_ci"], strict=True)
                ]
                for m in ("miou_img", "hp_acc")
            },
        }
    )


def export_tables(study, references: tuple[str, ...] = ("baseline",)) -> str:
    """tables.md: the summary, every seed's scores, the validation scores at each stage's end and
    the paired tests against each reference variant."""
    split = tables.SPLITS[tables.reported_split(study)]
    summary, seeds, ends = tables.method_summary(study), tables.seed_table(study), tables.stage_ends(study)
    text = [
        f"# {study.name}: tables\n",
        f"Teacher (reference): {teachers_line(study)}\n",
        f"Training views: {views_line(study)}\n",
        f"## Methods on the {split} (chosen on validation; means over seeds, 95 % Student-t intervals)\n",
        markdown_table(page.summary_frame(summary)) if not summary.empty else "No trials.\n",
        f"\n## Per seed on the {split} (mIoU_img / HP-Acc)\n",
        markdown_table(seed_frame(seeds)) if not seeds.empty else "No seeds scored.\n",
    ]
    if not ends.empty:
        text += [
            "\n## At the end of each stage, on the validation images (means over seeds)\n",
            markdown_table(stage_end_frame(ends)),
        ]
    mechanism = tables.mechanism(study)
    if not mechanism.empty:
        text += [
            "\n## Mechanism: stage 1 and shadows\n",
            MECHANISM_CAPTION + "\n",
            markdown_table(page.mechanism_frame(mechanism)),
        ]
    explained = False  # the bootstrap's description once, above the first table
    for reference, paired in tables.comparisons(study, references).items():
        text.append(
            f"\n## Against {reference} (paired t-test per seed with Holm adjustment and seeds needed; "
            "Wilcoxon signed-rank per (seed, image))\n"
        )
        if paired.empty:
            text.append(paired.attrs.get("note", "") + "\n")
            continue
        lines = comparison_lines(paired) if explained else [BOOTSTRAP_CAPTION, *comparison_lines(paired)]
        text += [line + "\n" for line in lines]
        text.append(markdown_table(paired_frame(paired)))
        explained = True
    return "\n".join(text)


def export(
    run_dir, folder, width: int = 1000, height: int = 560, references: tuple[str, ...] = ("baseline",)
) -> list[Path]:
    """Write the report's tables as markdown (`tables.md`) and its figures as PNGs into `folder`;
    the paired tests compare each variant with each of `references`.

    PNGs are drawn by Kaleido in a headless Chrome or Chromium (Debian: apt-get install chromium).
    """
    from kd.errors import UserInputError

    study = load(run_dir)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # checked before any figure is drawn
        raise UserInputError(
            f"cannot export into {folder}: {error.strerror or error}; choose a folder you can "
            "write (--export DIR)."
        ) from None
    written = [folder / "tables.md"]
    written[0].write_text(export_tables(study, references))
    for title, build, *_ in FIGURES:
        figure = build(study)
        if figure is None:
            continue
        path = folder / (re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") + ".png")
        tall = figure.layout.height or height
        try:
            figure.write_image(path, width=width, height=tall, scale=1)
        except Exception as error:  # Kaleido's errors for a missing browser vary by version
            raise UserInputError(
                f"cannot draw {path.name}: {error}. PNG export needs Chrome or Chromium "
                "(Debian: apt-get install chromium; or run plotly_get_chrome)."
            ) from None
        written.append(path)
    return written


def main(argv=None) -> int:
    from kd.errors import UserInputError

    parser = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Write a study's self-contained HTML report, or, given several run folders, one page "
        "comparing them (the first is the reference of the paired tests).",
    )
    parser.add_argument(
        "run_dir",
        nargs="+",
        metavar="RUN_DIR",
        help="a study's run folder, e.g. runs/default; several: one page comparing them, "
        "the first the reference",
    )
    parser.add_argument(
        "--out", help="the report file (default: RUN_DIR/report.html; several runs: compare.html here)"
    )
    parser.add_argument(
        "--export",
        metavar="DIR",
        help="also write the tables as markdown (DIR/tables.md) and "
        "the figures as PNGs into DIR, e.g. for a paper or docs/RESULTS.md (one run folder only)",
    )
    parser.add_argument(
        "--reference",
        metavar="VARIANT",
        action="append",
        help="with --export: the variant each paired test compares with (default: baseline); give it "
        "again for more, e.g. --reference baseline --reference sd",
    )
    args = parser.parse_args(argv)
    if args.reference and not args.export:
        parser.error("--reference sets the paired tests of --export DIR; give --export too")
    try:
        written = _compare(args) if len(args.run_dir) > 1 else _single(args)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def _single(args) -> list[Path]:
    references = tuple(args.reference or ("baseline",))
    if args.reference:  # before the report is written: a typo costs nothing
        _check_references(load(args.run_dir[0]), references)
    path = write_report(args.run_dir[0], args.out)
    return [path, *(export(args.run_dir[0], args.export, references=references) if args.export else [])]


def _check_references(study, references: tuple[str, ...]) -> None:
    from kd.errors import UserInputError

    known = tables.ordered_variants(study)
    unknown = [r for r in references if r not in known]
    if unknown:
        raise UserInputError(
            f"--reference {', '.join(unknown)}: no such variant in {study.name}; "
            f"choose from {', '.join(known)}."
        )


def _compare(args) -> list[Path]:
    from analysis.compare import write_comparison
    from kd.errors import UserInputError

    if args.export:
        raise UserInputError(
            "--export writes one study's tables and figures: run it once per run folder "
            "(python -m analysis.report RUN_DIR --export DIR), without the other runs."
        )
    return [write_comparison(args.run_dir, args.out)]


if __name__ == "__main__":
    sys.exit(main())
