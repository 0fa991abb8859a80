"""Several studies side by side in one self-contained HTML page:
`python -m analysis.report RUN_A RUN_B ... [--out compare.html]`.

The first run is the reference. The page holds each study's methods table exactly as its own report
computes it, a per-image paired test of each variant in every other run against the same variant in
the reference, and three figures overlaid (per-image histograms, accuracy against cost, HP-Acc
against Var). Each study reports on its own split, as its report does: test once final.parquet has
rows, else validation.

Paired test across studies: the chosen trials of one variant in two studies, on the image ids both
scored on the same split. Seeds are independent trainings in each study, not pairs across studies, so
each image's mIoU_i is first averaged over its study's seeds; d = mean mIoU_i(study) - mean
mIoU_i(reference) per shared image; p: two-sided Wilcoxon signed-rank with the rank-biserial effect
size (analysis.tables.wilcoxon_rank_biserial), Holm-adjusted over every comparison on the page.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go

from analysis import figures, page, tables
from analysis.figures import by_variant, numeric
from analysis.load import Study, load
from kd.metrics import THETA
from kd.run_folder import SAMPLES, TRIALS

PAIRED_COLUMNS = [
    "study",
    "variant",
    "reference",
    "split",
    "trial_id",
    "reference_trial",
    "n_images",
    "mean",
    "reference_mean",
    "mean_diff",
    "p_value",
    "p_adjusted",
    "effect_size",
    "better",
    "significant",
    "note",
]
NUMBERS = ("n_images", "mean", "reference_mean", "mean_diff", "p_value", "p_adjusted", "effect_size")
# One marker shape per study (diamond is left out: the single report's sign of a test score).
SYMBOLS = ["circle", "square", "triangle-up", "cross", "x", "star", "pentagon", "hexagon"]
PATTERNS = ["", "/", ".", "x", "\\", "+", "-", "|"]  # one hatching per study in the histograms


def check_runs(paths) -> list[Path]:
    """The run folders, or a UserInputError naming every path that is not one and the fix: checked
    before anything is read, so a typo in the fifth path costs no work."""
    from kd.errors import UserInputError

    runs, problems = [Path(p) for p in paths], []
    for run in runs:
        if not run.is_dir():
            problems.append(f"{run} is not a folder")
        elif not (run / TRIALS).is_file():
            problems.append(f"{run} is not a run folder: it has no {TRIALS}")
    resolved = [run.resolve() for run in runs]
    problems += [f"{run} is given twice" for i, run in enumerate(runs) if resolved[i] in resolved[:i]]
    if problems:
        raise UserInputError(
            "; ".join(problems) + ". Give each study's run folder once, e.g. runs/default runs/esd (the "
            f"folder a study writes its tables into; it has {TRIALS} once a trial has finished)."
        )
    return runs


def study_labels(runs: list[Path]) -> list[str]:
    """Each run's name on the page: its folder's name, or the path as given where two share a name
    (runs_a/default against runs_b/default)."""
    names = [run.resolve().name for run in runs]
    return [str(run) if names.count(name) > 1 else name for run, name in zip(runs, names, strict=True)]


def sample_classes(study: Study) -> list[str]:
    """The class names the study saved with its samples; only that member is read, not the images."""
    path = study.run_dir / SAMPLES
    if not path.is_file():
        return []
    with np.load(path, allow_pickle=False) as data:
        return [str(c) for c in data["classes"]] if "classes" in data.files else []


def classes_line(study: Study) -> str:
    names = sample_classes(study) or study.config.get("classes") or []
    counted = f"{len(names)} classes ({', '.join(map(str, names))})" if names else "classes not recorded"
    return f"label set {study.config.get('label_set') or 'not recorded'}, {counted}"


def classes_note(studies: list[Study], labels: list[str]) -> str:
    lines = [classes_line(study) for study in studies]
    if len(set(lines)) == 1:
        return ""
    return page.note(
        "The studies differ in their label sets: "
        + "; ".join(f"{label}: {line}" for label, line in zip(labels, lines, strict=True))
        + ". Their mIoU average over different classes: compare their numbers with care. The paired "
        "tests still pair images by id."
    )


def overview_html(studies: list[Study], labels: list[str]) -> str:
    rows = []
    for label, study in zip(labels, studies, strict=True):
        counts = study.trials["status"].value_counts()
        rows.append(
            {
                "study": label,
                "run folder": str(study.run_dir),
                "name": str(study.name),
                "data": study.config.get("data", "–"),
                "classes": classes_line(study),
                "methods": ", ".join(study.config.get("methods") or tables.methods(study)) or "–",
                "trials": ", ".join(
                    f"{int(counts.get(s, 0))} {s}" for s in ("completed", "failed", "stopped")
                ),
                "scored on": tables.SPLITS[tables.reported_split(study)],
            }
        )
    return (
        f'<p class="caption">Reference of the paired tests: <b>{html.escape(labels[0])}</b> (the first run '
        "given). Each study's own report: python -m analysis.report RUN_DIR.</p>"
        + page.html_table(pd.DataFrame(rows))
    )


def split_notes(studies: list[Study], labels: list[str]) -> str:
    """What each study's rows are scored on where that is not every variant on the test images."""
    notes = []
    for label, study in zip(labels, studies, strict=True):
        if tables.reported_split(study) == "val":
            notes.append(
                f"{label}: not yet scored on the test images: its rows are the validation scores each "
                "chosen trial was picked on, biased upward by that choice."
            )
            continue
        missing = set(tables.ordered_variants(study)) - set(study.final["variant"])
        if missing:
            notes.append(f"{label}: not scored on the test images: {', '.join(sorted(missing))}.")
    return "".join(page.note(note) for note in notes)


def methods_frame(studies: list[Study], labels: list[str]) -> pd.DataFrame:
    """Each study's methods table as its report shows it, one block of rows per study."""
    blocks = []
    for label, study in zip(labels, studies, strict=True):
        summary = tables.method_summary(study)
        if not summary.empty:
            blocks.append(page.summary_frame(summary).assign(study=label))
    if not blocks:
        return pd.DataFrame()
    frame = pd.concat(blocks, ignore_index=True)
    return frame[["study", *frame.columns.drop("study")]]


def methods_html(studies: list[Study], labels: list[str]) -> str:
    shown = methods_frame(studies, labels)
    text = (
        '<p class="caption">Each study\'s Methods table as its own report computes it: the chosen trial '
        "of each variant (picked on the validation images) with its scores on the images in <i>scored "
        "on</i>: test once that study scored its chosen trials there, else validation. Means over the "
        "trial's seeds with 95 % Student-t intervals; a single report's caption explains each column.</p>"
    )
    if shown.empty:
        return text + page.note("No methods configured and no trials recorded yet.")
    return text + split_notes(studies, labels) + page.html_table(shown)


def image_means(study: Study, trial_id: str, split: str) -> pd.Series:
    """A trial's mIoU_i on `split` averaged over its seeds, indexed by image id (as text: one study's
    ids may have been written as numbers)."""
    rows = tables.split_images(study, split)
    mine = rows[rows["trial_id"] == trial_id].dropna(subset=["miou"])
    return pd.to_numeric(mine["miou"]).groupby(mine["image_id"].astype(str)).mean()


def chosen_side(label: str, study: Study, variant: str, split: str) -> tuple[str, pd.Series] | str:
    """(trial id, image_means) of a study's chosen trial of `variant` on `split`, or why there is none."""
    if variant not in tables.ordered_variants(study):
        return f"{label} has no variant {variant!r}"
    chosen = tables.chosen_trials(study, split)
    top = chosen[chosen["variant"] == variant]
    if top.empty:
        scored = "not scored on the test images yet" if split == "test" else "has no completed trial yet"
        return f"{label}: {variant} {scored}"
    trial_id = top["trial_id"].iloc[0]
    means = image_means(study, trial_id, split)
    if means.empty:
        return f"{label}: trial {trial_id} has no per-image scores on the {tables.SPLITS[split]}"
    return trial_id, means


def compare_variant(reference: tuple[str, Study], other: tuple[str, Study], variant: str) -> dict:
    """One row of the paired table: `variant` in `other` against the same variant in `reference`."""
    (ref_label, ref_study), (label, study) = reference, other
    row = {"study": label, "variant": variant, "reference": ref_label, "note": ""}
    ref_split, split = tables.reported_split(ref_study), tables.reported_split(study)
    if ref_split != split:  # test scores against the validation scores they were picked on: no test
        behind = label if split == "val" else ref_label
        return row | {
            "split": f"{ref_label}: {ref_split}, {label}: {split}",
            "note": f"{behind} not scored on the test images yet",
        }
    row["split"] = split
    sides = [chosen_side(name, s, variant, split) for name, s in (reference, other)]
    reasons = [side for side in sides if isinstance(side, str)]
    if reasons:
        return row | {"note": "; ".join(reasons)}
    (ref_trial, ref_means), (trial_id, means) = sides
    row |= {"trial_id": trial_id, "reference_trial": ref_trial}
    pairs = pd.concat({"mine": means, "ref": ref_means}, axis=1, join="inner")
    if pairs.empty:
        return row | {"note": f"no shared {tables.SPLITS[split]}"}
    d = (pairs["mine"] - pairs["ref"]).to_numpy(float)
    p, effect = tables.wilcoxon_rank_biserial(d)
    return row | {
        "n_images": len(d),
        "mean": float(pairs["mine"].mean()),
        "reference_mean": float(pairs["ref"].mean()),
        "mean_diff": float(d.mean()),
        "p_value": p,
        "effect_size": effect,
        "better": label if d.mean() > 0 else ref_label if d.mean() < 0 else "tie",
    }


def paired_across(studies: list[Study], labels: list[str]) -> pd.DataFrame:
    """Every variant of each later study (and of the reference) against the reference's, one row each;
    rows without a test say why in `note`."""
    reference = (labels[0], studies[0])
    rows = []
    for other in zip(labels[1:], studies[1:], strict=True):
        names = dict.fromkeys([*tables.ordered_variants(studies[0]), *tables.ordered_variants(other[1])])
        rows += [compare_variant(reference, other, variant) for variant in names]
    paired = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    paired["p_adjusted"] = tables.holm(pd.to_numeric(paired["p_value"]))
    paired["significant"] = [bool(p < tables.ALPHA) for p in paired["p_adjusted"]]  # NaN: False
    return paired


def paired_frame(paired: pd.DataFrame) -> pd.DataFrame:
    """paired_across as it is shown."""
    numbers = {c: pd.to_numeric(paired[c]) for c in NUMBERS}
    return pd.DataFrame(
        {
            "study": paired["study"],
            "variant": paired["variant"],
            "reference": paired["reference"],
            "scored on": paired["split"],
            "trial": paired["trial_id"],
            "reference trial": paired["reference_trial"],
            "shared images": [page.number(v, 0) for v in numbers["n_images"]],
            "mean mIoU_i": [page.number(v, 4) for v in numbers["mean"]],
            "reference mean mIoU_i": [page.number(v, 4) for v in numbers["reference_mean"]],
            "mean diff (per image)": [page.number(v, 4) for v in numbers["mean_diff"]],
            "p (Wilcoxon)": [page.p_text(v) for v in numbers["p_value"]],
            "p adj. (Holm)": [page.p_text(v) for v in numbers["p_adjusted"]],
            "effect size": [page.number(v, 3) for v in numbers["effect_size"]],
            "better": paired["better"],
            "significant": [
                "" if math.isnan(p) else f"yes (p adj. < {tables.ALPHA:g})" if s else "no"
                for p, s in zip(numbers["p_adjusted"], paired["significant"], strict=True)
            ],
            "no test because": paired["note"],
        }
    )


def paired_html(studies: list[Study], labels: list[str]) -> str:
    text = (
        "<p class=\"caption\">Each variant's chosen trial in a study against the same variant's chosen "
        f"trial in the reference, <b>{html.escape(labels[0])}</b>, on the images both scored on the same "
        "split (test once both studies scored their chosen trials there). Seeds of two studies are "
        "independent trainings, not pairs: each image's mIoU_i is first averaged over its study's seeds. "
        "Mean diff: mean over the shared images of mIoU_i(study) − mIoU_i(reference); p: two-sided "
        "Wilcoxon signed-rank test over those images (zero differences dropped; p = 1 when all are zero), "
        f"Holm-adjusted over every comparison in this table; significant: p adj. &lt; {tables.ALPHA:g}; "
        "effect size: matched-pairs rank-biserial correlation, +1 = the study wins every image, −1 = the "
        "reference does. On validation images both chosen trials were picked on those very images. "
        "Where there is no test, the last column says why.</p>"
    )
    paired = paired_across(studies, labels)
    if paired.empty:
        return text + page.note("No variants to compare.")
    return text + page.html_table(paired_frame(paired))


def variant_colors(studies: list[Study]) -> dict[str, str]:
    """One colour per variant name over all studies, so esd is one colour in every study's traces."""
    palette = plotly.colors.qualitative.Plotly + plotly.colors.qualitative.D3
    names = dict.fromkeys(v for study in studies for v in tables.ordered_variants(study))
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _legend(label: str) -> dict:
    """A trace's legend group: one per study, titled with it."""
    return {"legendgroup": label, "legendgrouptitle_text": label}


def _hover(label: str, row: pd.Series, study: Study) -> str:
    return f"study {html.escape(label)}<br>" + figures.hover_text(row, tables.hyperparameters(study.trials))


def _axis_images(studies: list[Study]) -> str:
    """' on the test images' when every study reports on the same split, else nothing: the title says."""
    splits = {tables.reported_split(study) for study in studies}
    return f" on the {tables.SPLITS[splits.pop()]}" if len(splits) == 1 else ""


def per_image_histograms(studies: list[Study], labels: list[str]) -> go.Figure | None:
    """mIoU_i of each study's chosen trials over all their seeds and images, on each study's split."""
    fig, colors = go.Figure(), variant_colors(studies)
    for k, (label, study) in enumerate(zip(labels, studies, strict=True)):
        for trace in figures.chosen_histograms(
            study,
            tables.reported_split(study),
            colors,
            lambda top, label=label, study=study: _hover(label, top, study),
            pattern=PATTERNS[k % len(PATTERNS)],
            **_legend(label),
        ):
            fig.add_trace(trace)
    return figures.finish_miou_histogram(
        fig, f"mIoU_i{_axis_images(studies)}", legend_groupclick="toggleitem"
    )


def _cost_points(studies: list[Study], labels: list[str]) -> list[tuple[str, str, Study, pd.Series]]:
    """(study, its marker, study, chosen trial with its reported scores) with both mIoU and FLOPs."""
    return [
        (label, SYMBOLS[k % len(SYMBOLS)], study, top)
        for k, (label, study) in enumerate(zip(labels, studies, strict=True))
        for _, top in numeric(tables.reported_scores(study), ["miou", "flops"]).iterrows()
    ]


def accuracy_vs_cost(studies: list[Study], labels: list[str]) -> go.Figure | None:
    """mIoU of every study's chosen trials against their GFLOPs; bubble area = parameters, on one scale
    over all studies so that sizes compare across them."""
    points = _cost_points(studies, labels)
    if not points:
        return None
    params = pd.to_numeric(pd.Series([top.get("params") for *_, top in points]), errors="coerce")
    sizeref = figures.bubble_scale(params)
    fig, colors = go.Figure(), variant_colors(studies)
    for (label, symbol, study, top), size in zip(points, params, strict=True):
        hover = _hover(label, top, study)
        color = colors[top["variant"]]
        fig.add_trace(figures.cost_bubble(top, size, sizeref, color, hover, symbol=symbol, **_legend(label)))
    fig.update_layout(
        xaxis_title="GFLOPs (one forward pass)",
        yaxis_title=f"mIoU{_axis_images(studies)}",
        showlegend=True,
        legend_groupclick="toggleitem",
    )
    fig.update_xaxes(tickformat=".3~g")
    return fig


def _hp_acc_traces(label: str, symbol: str, study: Study, colors: dict):
    """Open markers: every completed trial on validation; filled: chosen trials on test."""
    for frame, split, marker in (
        (study.completed, "val", {"symbol": f"{symbol}-open", "size": 9}),
        (figures.on_test(study), "test", {"symbol": symbol, "size": 13}),
    ):
        for variant, mine in by_variant(study, numeric(frame, ["hp_acc", "var"])):
            yield go.Scatter(
                x=mine["var"].tolist(),
                y=mine["hp_acc"].tolist(),
                mode="markers",
                name=f"{variant} ({split})",
                **_legend(label),
                marker={"color": colors[variant], **marker},
                text=[_hover(label, row, study) for _, row in mine.iterrows()],
                hovertemplate="%{text}<br>var %{x:.4g}<br>hp_acc %{y:.3f}<extra></extra>",
            )


def hp_acc_vs_var(studies: list[Study], labels: list[str]) -> go.Figure | None:
    fig, colors = go.Figure(), variant_colors(studies)
    for k, (label, study) in enumerate(zip(labels, studies, strict=True)):
        for trace in _hp_acc_traces(label, SYMBOLS[k % len(SYMBOLS)], study, colors):
            fig.add_trace(trace)
    if not fig.data:
        return None
    return figures.hp_acc_axes(fig, legend_groupclick="toggleitem")


# (title, figure function, images, caption, note when there is nothing to draw); images as in
# analysis.report.FIGURES.
FIGURES = [
    (
        "Per-image mIoU of the chosen trials",
        per_image_histograms,
        "reported",
        "Distribution of mIoU_i of each study's chosen trial of each variant over all its seeds and images "
        "(SD paper, Fig. 5). Colour: variant; hatching and legend group: study (click an entry to hide "
        f"it). Look for mass moved right of the θ = {THETA:g} line and a thinner left tail.",
        "No per-image scores of a chosen trial yet.",
    ),
    (
        "Accuracy against cost",
        accuracy_vs_cost,
        "reported",
        "mIoU of each study's chosen trials against the GFLOPs of one forward pass; bubble area is the "
        "number of parameters, on one scale for all studies (SD paper, Fig. 1). Colour: variant; marker "
        "shape: study. Up and to the left is a better accuracy per computation.",
        "No chosen trial with both mIoU and FLOPs yet.",
    ),
    (
        "HP-Acc against Var",
        hp_acc_vs_var,
        "both",
        "Open markers: every completed trial of each study on the validation images; filled (once that "
        "study scored them): each variant's chosen trial on the test images (SD paper, Fig. 8). Colour: "
        "variant; marker shape: study. HP-Acc is the share of images with mIoU_i > "
        f"{THETA:g}, Var the spread of mIoU_i. Look up and to the left: robust variants score many "
        "images well and few badly.",
        page.NO_TRIALS,
    ),
]


def images_label(images: str, studies: list[Study], labels: list[str]) -> str:
    """Which images a figure reads, in the single report's words; per study where they differ."""
    texts = [page.images_label(images, study) for study in studies]
    if len(set(texts)) == 1:
        return texts[0]
    return " | ".join(f"{label}: {text}" for label, text in zip(labels, texts, strict=True))


def figures_html(studies: list[Study], labels: list[str]) -> tuple[str, int]:
    parts, plots = [], 0
    nothing = all(study.completed.empty for study in studies)
    for title, build, images, caption, empty in FIGURES:
        heading = f"{title} ({images_label(images, studies, labels)})"
        parts.append(f'<h2>{html.escape(heading)}</h2><p class="caption">{html.escape(caption)}</p>')
        figure = build(studies, labels)
        parts.append(
            page.note(page.NO_TRIALS if nothing else empty) if figure is None else page.figure_html(figure)
        )
        plots += figure is not None
    return "\n".join(parts), plots


def write_comparison(paths, out=None) -> Path:
    """Write the page comparing the studies in `paths` (the first is the reference) to `out`
    (default: compare.html in the current folder) and return its path."""
    runs = check_runs(paths)
    studies, labels = [load(run) for run in runs], study_labels(runs)
    figure_part, plots = figures_html(studies, labels)
    parts = [
        f"<h1>Comparison of {len(studies)} studies: {html.escape(', '.join(labels))}</h1>",
        overview_html(studies, labels),
        classes_note(studies, labels),
        "<h2>Methods</h2>",
        methods_html(studies, labels),
        f"<h2>Against {html.escape(labels[0])} (per image)</h2>",
        paired_html(studies, labels),
        figure_part,
    ]
    title = f"{', '.join(labels)}: SegKD study comparison"
    return page.write_page(Path(out or "compare.html"), page.page_html(title, parts, plots))
