"""Plotly figures of a study. Each returns a go.Figure, or None when there is nothing to draw yet.
Traces are per variant (a method, or one grid point of it; see analysis.tables); a variant has the
same colour in every figure. Points carry the trial id, the method and its hyperparameters in their
hover text.

Everything is drawn as SVG (no 3-D or WebGL traces of our own) so that the report also renders in
browsers without WebGL; only Optuna's parallel-coordinates plot needs WebGL.
"""

from __future__ import annotations

import base64
import html
import io
import math
import warnings

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.tables import (
    SPLITS,
    chosen_trials,
    ci_from_summary,
    format_value,
    higher_is_better,
    hyperparameters,
    mean_ci,
    objective,
    ordered_variants,
    reported_scores,
    reported_split,
    seed_metrics,
    split_images,
    trial_hyperparameters,
)
from kd.metrics import METRICS, THETA

PARETO_METRICS = ("miou_img", "hp_acc", "var")
# Classes by index; void (255) is black. Fixed, so a class has one colour in every study.
CLASS_PALETTE = np.array(
    [
        plotly.colors.hex_to_rgb(c)
        for c in plotly.colors.qualitative.Dark24 + plotly.colors.qualitative.Light24
    ],
    dtype=np.uint8,
)


def variant_colors(study) -> dict[str, str]:
    palette = plotly.colors.qualitative.Plotly + plotly.colors.qualitative.D3
    return {name: palette[i % len(palette)] for i, name in enumerate(ordered_variants(study))}


def by_variant(study, frame: pd.DataFrame):
    """(variant, its rows of `frame`) in the study's order, for the variants with rows."""
    for variant in ordered_variants(study):
        mine = frame[frame["variant"] == variant]
        if not mine.empty:
            yield variant, mine


def hover_text(row: pd.Series, columns: list[str]) -> str:
    chosen = trial_hyperparameters(row, columns)
    lines = [
        f"trial {row['trial_id']}",
        f"method {row['method']}",
        *(f"{k}={format_value(v)}" for k, v in chosen.items()),
    ]
    return "<br>".join(html.escape(line) for line in lines)


def _hover(frame: pd.DataFrame, study) -> list[str]:
    columns = hyperparameters(study.trials)
    return [hover_text(row, columns) for _, row in frame.iterrows()]


def numeric(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """The rows of `frame` whose `columns` all hold numbers, with those columns as numbers."""
    frame = frame.copy()
    for column in columns:
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    return frame.dropna(subset=list(columns))


def on_test(study) -> pd.DataFrame:
    """Each variant's chosen trial with its test means, or nothing before the study scored them."""
    return reported_scores(study, "test") if reported_split(study) == "test" else study.trials.iloc[0:0]


def _scores_by_variant(study):
    """(variant, rows, label, marker) of every completed trial on validation, then of the chosen
    trials on test: one legend entry per variant and split."""
    for frame, label, marker in ((study.completed, "val", "circle"), (on_test(study), "test", "diamond")):
        for variant, mine in by_variant(study, frame):
            yield (
                variant,
                mine,
                f"{variant} ({label})",
                {"symbol": marker, "size": 9 if label == "val" else 13},
            )


def hp_acc_vs_var(study) -> go.Figure | None:
    """HP-Acc against Var, one point per completed trial on validation and one per variant's chosen
    trial on test (SD paper, Fig. 8)."""
    if numeric(study.completed, ["hp_acc", "var"]).empty:
        return None
    fig, colors = go.Figure(), variant_colors(study)
    for variant, mine, name, marker in _scores_by_variant(study):
        mine = numeric(mine, ["hp_acc", "var"])
        if mine.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=mine["var"].tolist(),
                y=mine["hp_acc"].tolist(),
                mode="markers",
                name=name,
                marker={"color": colors[variant], **marker},
                text=_hover(mine, study),
                hovertemplate="%{text}<br>var %{x:.4g}<br>hp_acc %{y:.3f}<extra></extra>",
            )
        )
    return hp_acc_axes(fig, legend_title="variant")


def hp_acc_axes(fig: go.Figure, **layout) -> go.Figure:
    """The axes of HP-Acc against Var (SD paper, Fig. 4); `layout`: more layout settings."""
    fig.update_layout(
        xaxis_title="Var of mIoU_i (lower is better)",
        yaxis_title=f"HP-Acc (share of mIoU_i > {THETA:g})",
        **layout,
    )
    fig.update_xaxes(tickformat=".2~e")  # variances are small: SI prefixes would print "329µ"
    return fig


def esd_ratio(study) -> go.Figure | None:
    """mIoU and HP-Acc against the ESD ratio r, error bars = sd over the trial's seeds (SD paper,
    Fig. 7): every completed trial on validation, each variant's chosen trial on test."""
    if "r" not in study.completed or numeric(study.completed, ["r"]).empty:
        return None
    fig, colors = make_subplots(rows=1, cols=2, subplot_titles=("mIoU", "HP-Acc")), variant_colors(study)
    for variant, mine, name, marker in _scores_by_variant(study):
        mine = numeric(mine, ["r"]).sort_values("r", kind="stable")
        for col, metric in enumerate(("miou", "hp_acc"), start=1):
            if mine[metric].isna().all():
                continue
            std = pd.to_numeric(mine.get(f"{metric}_std"), errors="coerce")
            fig.add_trace(
                go.Scatter(
                    x=mine["r"].tolist(),
                    y=pd.to_numeric(mine[metric]).tolist(),
                    error_y={"type": "data", "array": std.fillna(0).tolist(), "visible": True},
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    marker={"color": colors[variant], **marker},
                    line={"color": colors[variant]},
                    text=_hover(mine, study),
                    hovertemplate=f"%{{text}}<br>r %{{x}}<br>{metric} %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    if not fig.data:
        return None
    fig.update_xaxes(title_text="r (target images per proximity image in stage 1)")
    return fig


# How every per-image mIoU histogram bins and draws its traces, here and in the comparison report
MIOU_HISTOGRAM = {
    "histnorm": "probability",
    "xbins": {"start": 0, "end": 1.0001, "size": 0.05},
    "opacity": 0.6,
}


def finish_miou_histogram(fig: go.Figure, xaxis_title: str, **layout) -> go.Figure | None:
    """The θ line and the axes of a per-image mIoU histogram; None when it has no trace."""
    if not fig.data:
        return None
    fig.add_vline(x=THETA, line_dash="dash", annotation_text=f"θ = {THETA:g}")
    fig.update_layout(
        barmode="overlay",
        xaxis_title=xaxis_title,
        yaxis_title="share of images (all seeds)",
        xaxis_range=[0, 1],
        **layout,
    )
    return fig


def chosen_histograms(study, split: str, colors: dict, hover, pattern: str | None = None, **options):
    """Histograms of mIoU_i, one per chosen trial of `study` on `split` (its seeds pooled); `hover(top)`
    gives a trial's hover text, `pattern` a bar pattern, `options` more trace settings (legend groups)."""
    images = split_images(study, split)
    for _, top in chosen_trials(study, split).iterrows():
        scores = images[images["trial_id"] == top["trial_id"]]["miou"].dropna()
        if scores.empty:
            continue
        yield go.Histogram(
            x=scores.tolist(),
            name=f"{top['variant']} ({top['trial_id']})",
            marker={"color": colors[top["variant"]]} | ({"pattern": {"shape": pattern}} if pattern else {}),
            hovertemplate=f"{hover(top)}<br>mIoU_i %{{x}}<br>share %{{y:.3f}}<extra></extra>",
            **options,
            **MIOU_HISTOGRAM,
        )


def per_image_histograms(study) -> go.Figure | None:
    """The distribution of mIoU_i of each variant's chosen trial over all its seeds, on the test images
    once scored there, else on validation (SD paper, Fig. 5)."""
    split = reported_split(study)
    fig = go.Figure()
    for trace in chosen_histograms(
        study, split, variant_colors(study), lambda top: hover_text(top, hyperparameters(study.trials))
    ):
        fig.add_trace(trace)
    return finish_miou_histogram(fig, f"mIoU_i on the {SPLITS[split]}")


def pareto_mask(points, maximize) -> np.ndarray:
    """True for the non-dominated rows of points [n, k]; rows with NaN are never on the front.

    A row is dominated when another is at least as good in every column and better in one.
    """
    points = np.asarray(points, dtype=float).reshape(len(points), -1)
    signs = np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    scores = points * signs  # all columns: larger is better
    valid = ~np.isnan(scores).any(axis=1)
    mask = valid.copy()
    for i in np.flatnonzero(valid):
        others = scores[valid]
        mask[i] = not (np.all(others >= scores[i], axis=1) & np.any(others > scores[i], axis=1)).any()
    return mask


def pareto_front(study) -> go.Figure | None:
    """Completed trials in the three pairs of (miou_img, hp_acc, var); the Pareto front as diamonds."""
    done = numeric(study.completed, PARETO_METRICS)
    if done.empty:
        return None
    done = done.assign(
        front=pareto_mask(
            done[list(PARETO_METRICS)].to_numpy(), [higher_is_better(m) for m in PARETO_METRICS]
        )
    )
    pairs = [("miou_img", "hp_acc"), ("miou_img", "var"), ("hp_acc", "var")]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"{y} vs {x}" for x, y in pairs])
    colors = variant_colors(study)
    for variant, rows in by_variant(study, done):
        for on_front in (False, True):
            mine = rows[rows["front"] == on_front]
            if mine.empty:
                continue
            name = f"{variant} (Pareto front)" if on_front else variant
            for col, (x, y) in enumerate(pairs, start=1):
                fig.add_trace(
                    go.Scatter(
                        x=mine[x].tolist(),
                        y=mine[y].tolist(),
                        mode="markers",
                        name=name,
                        legendgroup=name,
                        showlegend=col == 1,
                        text=_hover(mine, study),
                        marker={
                            "color": colors[variant],
                            "size": 13 if on_front else 7,
                            "symbol": "diamond" if on_front else "circle-open",
                        },
                        hovertemplate=f"%{{text}}<br>{x} %{{x:.4g}}<br>{y} %{{y:.4g}}"
                        f"<extra>{html.escape(name)}</extra>",
                    ),
                    row=1,
                    col=col,
                )
                fig.update_xaxes(
                    title_text=x, row=1, col=col, **({"tickformat": ".2~e"} if x == "var" else {})
                )
                fig.update_yaxes(
                    title_text=y, row=1, col=col, **({"tickformat": ".2~e"} if y == "var" else {})
                )
    return fig


def bubble_scale(params: pd.Series) -> float | None:
    """Plotly's sizeref for bubbles whose area is the parameter count (the largest 45 px across);
    None when no count is known."""
    return 2 * params.max() / 45**2 if params.notna().any() and params.max() > 0 else None


def cost_bubble(top: pd.Series, params: float, sizeref: float | None, color: str, hover: str, **options):
    """A chosen trial at (GFLOPs, mIoU) with its seeds' std as the error bar; area = `params` on
    `sizeref`'s scale (a fixed size without one). `options`: more marker settings (`symbol`) and
    trace settings (legend groups)."""
    std = pd.to_numeric(pd.Series([top.get("miou_std")]), errors="coerce").fillna(0).tolist()
    sized = sizeref and not math.isnan(params) and params
    marker_options = {k: options.pop(k) for k in ("symbol",) if k in options}
    return go.Scatter(
        x=[top["flops"] / 1e9],
        y=[top["miou"]],
        mode="markers+text",
        name=top["variant"],
        text=[top["variant"]],
        textposition="top center",
        error_y={"type": "data", "array": std},
        marker={
            "color": color,
            "size": [params] if sized else [14],
            "sizemode": "area",
            "sizeref": sizeref or 1,
            "sizemin": 6,
            **marker_options,
        },
        customdata=[[hover, f"{params:,.0f}"]],
        hovertemplate="%{customdata[0]}<br>GFLOPs %{x:.3g}<br>mIoU %{y:.3f}"
        "<br>params %{customdata[1]}<extra></extra>",
        **options,
    )


def miou_vs_gflops(study) -> go.Figure | None:
    """mIoU of each variant's chosen trial (test once scored, else validation) against its GFLOPs;
    bubble area = parameters (SD paper, Fig. 1)."""
    best = numeric(reported_scores(study), ["miou", "flops"])
    if best.empty:
        return None
    params = pd.to_numeric(best["params"], errors="coerce")
    sizeref = bubble_scale(params)
    fig, colors = go.Figure(), variant_colors(study)
    for index, top in best.iterrows():
        hover = hover_text(top, hyperparameters(study.trials))
        fig.add_trace(cost_bubble(top, params[index], sizeref, colors[top["variant"]], hover))
    fig.update_layout(
        xaxis_title="GFLOPs (one forward pass)",
        yaxis_title=f"mIoU on the {SPLITS[reported_split(study)]}",
        showlegend=True,
    )
    fig.update_xaxes(tickformat=".3~g")
    return fig


def student_alone(study) -> str | None:
    """The variant that trains the student without a teacher, which distillation is measured
    against: `baseline` when the study has it, else its first variant whose trials use no teacher
    (`ifvd_student`); None when every variant uses one."""
    teacher_free = study.trials.groupby("variant")["teacher"].agg(lambda t: t.isna().all())
    free = [v for v in ordered_variants(study) if teacher_free.get(v, False)]
    return "baseline" if "baseline" in free else next(iter(free), None)


def teacher_gains(study) -> pd.DataFrame:
    """Per variant that uses a teacher and has test scores: its teacher, its gain over the student
    alone in test mIoU (mean over the seeds both have, paired by seed, with the 95 % Student-t
    half-width) and its teacher's margin over the student alone in validation mIoU (the teacher's
    mIoU minus the student alone's chosen trial's, with that trial's 95 % interval over its seeds)."""
    columns = ["variant", "method", "teacher", "gain", "gain_ci", "seeds", "margin", "margin_ci"]
    alone, scores = student_alone(study), study.teachers()
    if alone is None or not scores or reported_split(study) != "test":
        return pd.DataFrame(columns=columns)
    chosen = chosen_trials(study, "test").set_index("variant", drop=False)
    if alone not in chosen.index:
        return pd.DataFrame(columns=columns)
    base = chosen.loc[alone]
    base_seeds = seed_metrics(study, base["trial_id"], "test")["miou"]
    base_miou = pd.to_numeric(base.get("miou"), errors="coerce")
    margin_ci = ci_from_summary(base_miou, base.get("miou_std"), base.get("seeds"))
    rows = []
    for variant, top in chosen.iterrows():
        teacher = top.get("teacher")
        if not isinstance(teacher, str) or teacher not in scores:
            continue
        mine = seed_metrics(study, top["trial_id"], "test")["miou"]
        paired = (mine - base_seeds).dropna()  # aligned on the seed
        gain, gain_ci = mean_ci(paired)
        margin = pd.to_numeric(scores[teacher].get("miou"), errors="coerce") - base_miou
        if math.isnan(gain) or pd.isna(margin):
            continue
        rows.append([variant, top["method"], teacher, gain, gain_ci, len(paired), float(margin), margin_ci])
    return pd.DataFrame(rows, columns=columns)


def teacher_gain(study) -> go.Figure | None:
    """Each variant's gain over the student alone (test mIoU, paired by seed, 95 % interval) against
    its teacher's margin over the student alone (validation mIoU; x error bar: the student alone's
    95 % interval over its seeds): one point per (method, teacher), coloured by method, a dashed
    line at no gain, a dotted line at each teacher's margin."""
    gains = teacher_gains(study)
    if gains.empty:
        return None
    palette = plotly.colors.qualitative.Plotly + plotly.colors.qualitative.D3
    fig = go.Figure()
    for index, (method, mine) in enumerate(gains.groupby("method", sort=False)):
        hover = [
            "<br>".join(
                html.escape(line) for line in (r.variant, f"teacher {r.teacher}", f"{r.seeds} seed(s)")
            )
            for r in mine.itertuples()
        ]
        fig.add_trace(
            go.Scatter(
                x=mine["margin"].tolist(),
                y=mine["gain"].tolist(),
                error_x={"type": "data", "array": mine["margin_ci"].fillna(0).tolist(), "visible": True},
                error_y={"type": "data", "array": mine["gain_ci"].fillna(0).tolist(), "visible": True},
                mode="markers",
                name=method,
                marker={"color": palette[index % len(palette)], "size": 11},
                text=hover,
                hovertemplate="%{text}<br>teacher margin %{x:.3f}<br>gain %{y:.3f}<extra></extra>",
            )
        )
    fig.add_hline(y=0, line_dash="dash", line_color="#555")
    for teacher, margin in gains.drop_duplicates("teacher")[["teacher", "margin"]].values:
        fig.add_vline(
            x=margin,
            line_dash="dot",
            line_color="#bbb",
            annotation_text=html.escape(teacher),
            annotation_textangle=-90,
            annotation_font_size=10,
        )
    fig.update_layout(
        xaxis_title="teacher's margin over the student alone: val mIoU (teacher − student alone)",
        yaxis_title="gain over the student alone: test mIoU (method − student alone)",
        showlegend=True,
    )
    return fig


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class indices [H,W] to RGB with the fixed palette; void (255) black."""
    rgb = CLASS_PALETTE[np.asarray(mask, dtype=np.int64) % len(CLASS_PALETTE)]
    rgb[np.asarray(mask) == 255] = 0
    return rgb


def _png(rgb: np.ndarray) -> str:
    # A PNG data URI is a small fraction of the size of the pixel list go.Image(z=...) would embed.
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _first_seed(frame: pd.DataFrame) -> pd.DataFrame:
    seeds = pd.to_numeric(frame["seed"], errors="coerce")
    return frame[seeds == (0 if (seeds == 0).any() else seeds.min())]


def segmentation_samples(study, fixed: int = 3) -> go.Figure | None:
    """Input, ground truth and each variant's chosen-trial prediction on the same images: the first
    `fixed` images and the hardest image (lowest mIoU_i, first seed) of each variant's chosen trial."""
    samples = study.samples()
    if samples is None or len(samples.get("ids", [])) == 0:
        return None
    ids = [str(i) for i in samples["ids"]]
    columns = _sample_columns(study)
    if not columns:
        return None
    rows = _sample_rows(ids, columns, fixed)
    fig = make_subplots(
        rows=len(rows),
        cols=2 + len(columns),
        subplot_titles=_sample_titles(rows, columns),
        horizontal_spacing=0.01,
        vertical_spacing=min(0.08, 0.4 / len(rows)),
    )
    hp = hyperparameters(study.trials)
    for r, (image_id, _) in enumerate(rows, start=1):
        index = ids.index(image_id)
        cells = [
            (samples["images"][index], f"input {image_id}"),
            (colorize(samples["masks"][index]), "ground truth"),
        ]
        for top, predicted, _ in columns:
            prediction = predicted.get(image_id)
            label = f"{hover_text(top, hp)}<br>image {html.escape(image_id)}"
            cells.append((colorize(prediction) if prediction is not None else None, label))
        for c, (rgb, label) in enumerate(cells, start=1):
            if rgb is not None:
                fig.add_trace(
                    go.Image(source=_png(rgb), hovertemplate=f"{label}<extra></extra>"), row=r, col=c
                )
    classes = [str(c) for c in samples.get("classes", [])][: len(CLASS_PALETTE)]
    for k, name in enumerate(classes):  # legend entries for the class colours
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=name,
                showlegend=True,
                marker={"color": "rgb({},{},{})".format(*CLASS_PALETTE[k]), "symbol": "square", "size": 12},
            ),
            row=1,
            col=1,
        )
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_annotations(font_size=11)
    fig.update_layout(height=240 * len(rows) + 100, legend_title="class", margin={"t": 60, "l": 10, "r": 10})
    return fig


def _sample_columns(study) -> list[tuple[pd.Series, dict, dict]]:
    """(chosen trial, {image id: prediction}, {image id: mIoU_i at the first seed}) of each variant that
    saved predictions."""
    columns = []
    for _, top in chosen_trials(study, "val").iterrows():
        predictions = study.predictions(top["trial_id"])
        if predictions is None:
            continue
        scores = _first_seed(study.per_image[study.per_image["trial_id"] == top["trial_id"]]).dropna(
            subset=["miou"]
        )
        columns.append(
            (
                top,
                dict(zip(map(str, predictions["ids"]), predictions["predictions"], strict=False)),
                dict(zip(scores["image_id"].astype(str), scores["miou"], strict=True)),
            )
        )
    return columns


def _sample_rows(ids: list[str], columns, fixed: int) -> list[tuple[str, str]]:
    """(image id, why it is shown besides being one of the first `fixed`) per row of the figure."""
    rows = {i: [] for i in ids[:fixed]}
    for top, predicted, scores in columns:
        known = {k: v for k, v in scores.items() if k in ids and k in predicted}
        if known:
            rows.setdefault(min(known, key=known.get), []).append(f"hardest for {top['variant']}")
    return [(i, ", ".join(why)) for i, why in rows.items()]


def _sample_titles(rows, columns) -> list[str]:
    titles = []
    for image_id, why in rows:
        titles += [f"{image_id} {why}".strip(), "ground truth"]
        for top, _, scores in columns:
            score = scores.get(image_id)
            titles.append(f"{top['variant']}" + (f": mIoU_i {score:.2f}" if score is not None else ""))
    return titles


def curves(study) -> go.Figure | None:
    """Per-epoch loss terms and validation metrics of each variant's chosen trial, first seed."""
    chosen, data = chosen_trials(study, "val"), study.curves
    if chosen.empty or data.empty:
        return None
    data = data[data["trial_id"].isin(chosen["trial_id"])]
    data = pd.concat([_first_seed(part) for _, part in data.groupby("trial_id")]) if not data.empty else data
    losses = ["loss", *sorted(c for c in data.columns if c.startswith("loss_"))]
    names = [
        c
        for c in [*losses, "lr", *METRICS]
        if c in data and pd.to_numeric(data[c], errors="coerce").notna().any()
    ]
    if not names:
        return None
    cols = min(3, len(names))
    n_rows = math.ceil(len(names) / cols)
    height = 300 * n_rows + 80
    # ~110 px between rows leaves room for a row's x-axis title and the next row's subplot titles
    spacing = min(110 / height, 0.9 / max(1, n_rows - 1))
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=names, vertical_spacing=spacing)
    colors, hp = variant_colors(study), hyperparameters(study.trials)
    for _, top in chosen.iterrows():
        mine, legend = data[data["trial_id"] == top["trial_id"]].sort_values("epoch"), True
        for k, name in enumerate(names):
            values = pd.to_numeric(mine[name], errors="coerce")
            points = mine[values.notna()]
            if points.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=points["epoch"].tolist(),
                    y=values[values.notna()].tolist(),
                    mode="lines+markers",
                    name=top["variant"],
                    legendgroup=top["variant"],
                    showlegend=legend,
                    marker={"color": colors[top["variant"]], "size": 5},
                    line={"color": colors[top["variant"]]},
                    text=[f"stage {s}" for s in points["stage"].astype(str)],
                    hovertemplate=f"{hover_text(top, hp)}<br>%{{text}}<br>epoch %{{x}}<br>{name} %{{y:.4g}}"
                    "<extra></extra>",
                ),
                row=k // cols + 1,
                col=k % cols + 1,
            )
            legend = False  # one legend entry per variant
    if not fig.data:
        return None
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=height)
    return fig


def optuna_figures(study) -> list[tuple[str, go.Figure | str]]:
    """Optuna's optimisation history, parallel coordinates and parameter importances, read from the
    journal. A figure Optuna cannot draw (too few trials, parameters not shared by all trials ...) comes
    back as (title, note) with the reason instead of a figure."""
    path = study.journal()
    if path is None:
        return []
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # reasons go in the notes
    try:
        storage = JournalStorage(JournalFileBackend(str(path)))
        name = study.config.get("name") or study.name
        optimized = optuna.load_study(study_name=name, storage=storage)
    except Exception as error:  # a journal of another study or a damaged file: report it, draw the rest
        return [("Optuna", f"the journal {path.name} could not be read: {type(error).__name__}: {error}")]
    first = objective(study)
    target = (
        {"target": lambda t: t.values[0], "target_name": first}
        if len(optimized.directions) > 1
        else {"target_name": first}
    )
    plots = [
        ("Optimisation history", optuna.visualization.plot_optimization_history),
        ("Parallel coordinates", optuna.visualization.plot_parallel_coordinate),
        ("Parameter importances", optuna.visualization.plot_param_importances),
    ]
    out = []
    for title, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's experimental warnings are not the reader's concern
                figure = plot(optimized, **target)
            if not figure.data:
                raise ValueError("no completed trials with values")
            out.append((title, figure))
        except Exception as error:
            out.append((title, f"not drawn: {type(error).__name__}: {error}"))
    return out
