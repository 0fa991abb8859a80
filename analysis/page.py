"""The pieces of the HTML pages shared by a study's report (analysis.report) and the comparison
of several studies (analysis.compare): the self-contained page, notes, tables, number formats."""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from analysis import tables
from kd.metrics import METRICS

NO_TRIALS = "No completed trials yet: this section fills in as trials finish."
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { background: #f0f2f6; }
td:nth-child(-n+2) { text-align: left; }
.note { color: #8a5a00; background: #fff7e0; padding: 0.4em 0.8em; border-left: 4px solid #e0a800; }
.caption { color: #444; max-width: 80em; }
td.error, .failed td { white-space: pre-wrap; text-align: left; font-family: monospace; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.header dt { font-weight: bold; }
dl.header dd { margin: 0; }
"""
# The error listener is registered before plotly.js so that errors while it loads are counted too.
ERROR_LISTENER = """<script>
window.segkdErrors = 0;
window.addEventListener("error", function () { window.segkdErrors += 1; });
window.addEventListener("unhandledrejection", function () { window.segkdErrors += 1; });
</script>"""
# Plotly draws SVG plots during newPlot; the timeout leaves room for asynchronous parts (WebGL, images).
COUNTER = """<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var drawn = 0;
    document.querySelectorAll(".js-plotly-plot").forEach(function (el) {
      if (el.querySelector("svg.main-svg")) { drawn += 1; }
    });
    document.body.dataset.figures = drawn;
    document.body.dataset.errors = window.segkdErrors;
  }, 500);
});
</script>"""


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def number(value, digits: int = 3) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def significant(value) -> str:
    """Three significant digits: tiny students on small images have GFLOPs far below 0.01."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    return "–" if math.isnan(value) else f"{value:.3g}"


def text_or(value, missing: str) -> str:
    return value if isinstance(value, str) else missing


def with_ci(mean, half, digits: int) -> str:
    text = number(mean, digits)
    return text if text == "–" or number(half, digits) == "–" else f"{text} ± {number(half, digits)}"


def metric_digits(metric: str) -> int:
    return 4 if metric == "var" else 3  # variances of mIoU_i are small


def html_table(frame: pd.DataFrame, css: str = "") -> str:
    return frame.to_html(index=False, escape=True, na_rep="–", border=0, classes=css or None)


def summary_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """method_summary as it is shown: means with their 95 % intervals, formatted."""
    return pd.DataFrame(
        {
            "variant": summary["variant"],
            "trials (completed / failed / stopped)": [
                f"{t} ({c} / {f} / {s})"
                for t, c, f, s in summary[["trials", "completed", "failed", "stopped"]].values
            ],
            "degenerate trials": [str(d) for d in summary["degenerate"]],
            "chosen trial": [
                text_or(v, "–") + (" DEGENERATE" if d is True else "")
                for v, d in zip(summary["chosen_trial"], summary["chosen_degenerate"], strict=True)
            ],
            "hyperparameters": [text_or(v, "") for v in summary["hyperparameters"]],
            "selection score (val)": [number(v, 3) for v in summary["selection_score"]],
            "scored on": summary["split"],
            "seeds": [number(s, 0) for s in summary["seeds"]],
            **{
                f"{m} ± 95% CI": [
                    with_ci(mean, half, metric_digits(m))
                    for mean, half in zip(summary[m], summary[f"{m}_ci"], strict=True)
                ]
                for m in METRICS
            },
            "CI from": [text_or(v, "–") for v in summary["ci_from"]],
            "params (M)": [significant(p / 1e6) for p in summary["params"]],
            "GFLOPs": [significant(g) for g in summary["gflops"]],
            "steps per stage": [text_or(v, "–") for v in summary["steps"]],
            "stage-1 feature ratio": [number(v, 2) for v in summary["stage1_feature_ratio"]],
        }
    )


MECHANISM_HEADINGS = {
    "stage1_feature_ratio": "stage-1 feature ratio, own images",
    "stage1_feature_ratio_test": "stage-1 feature ratio, test images",
    "miou_shadow": "mIoU shadowed ground ± 95% CI",
    "miou_sunlit": "mIoU sunlit ground ± 95% CI",
    "shadow_gap": "sunlit − shadowed ± 95% CI",
}


def mechanism_frame(mechanism: pd.DataFrame) -> pd.DataFrame:
    """tables.mechanism as it is shown: ratios to two places, scores with their intervals."""
    shown = {"variant": mechanism["variant"]}
    for column, heading in MECHANISM_HEADINGS.items():
        if column not in mechanism:
            continue
        if column.startswith("stage1"):
            shown[heading] = [number(v, 2) for v in mechanism[column]]
        else:
            halves = mechanism.get(f"{column}_ci", pd.Series(math.nan, index=mechanism.index))
            shown[heading] = [with_ci(m, h, 3) for m, h in zip(mechanism[column], halves, strict=True)]
    return pd.DataFrame(shown)


def p_text(value) -> str:
    return "–" if math.isnan(value) else f"{value:.3g}"


def figure_html(figure) -> str:
    return pio.to_html(
        figure,
        include_plotlyjs=False,
        full_html=False,
        default_height="480px",
        config={"displaylogo": False, "responsive": True},
    )


def images_label(images: str, study) -> str:
    """Which images a figure's numbers come from, for its title."""
    split = tables.reported_split(study)
    if images == "val" or split == "val":
        return tables.SPLITS["val"]
    return tables.SPLITS["test"] if images == "reported" else "validation: every trial; test: chosen trials"


def page_html(title: str, parts: list[str], plots: int) -> str:
    """The self-contained page around the sections: plotly.js once (only if a plot needs it), the
    error listener and the counter the browser test reads."""
    script = f"<script>{get_plotlyjs()}</script>" if plots else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f'<body data-expected="{plots}">\n{ERROR_LISTENER}\n{script}\n'
        + "\n".join(parts)
        + f"\n{COUNTER}\n</body></html>\n"
    )


def write_page(out: Path, page: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(out)  # a browser refreshing during a study never reads half a report
    return out
