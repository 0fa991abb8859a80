"""Result tables: the best trial of each variant with confidence intervals, paired tests against the
baseline, failed trials. Every function works on empty and partial studies (no completed trials,
one variant, NaN metrics, trials without per-image rows) and then returns empty or NaN cells.

A variant is what the tables compare: a method, or one point of a grid over it ("esd r=0.5").

Statistics:
- Per seed, from `per_image` (as kd.metrics.robustness; images with NaN mIoU_i are left out):
  miou_img = mean of mIoU_i, hp_acc = share of images with mIoU_i > kd.metrics.THETA,
  var = population variance of mIoU_i (1/n).
- 95 % confidence interval of a mean over a trial's K seeds: Student's t,
  half-width = t.ppf(0.975, K-1) * sd / sqrt(K) with the sample sd (ddof=1); K = 1: NaN.
- `miou` (dataset mIoU from the summed confusion matrix) cannot be recomputed from mIoU_i, so its
  interval always comes from the trials table: mean `miou`, sd = `miou_std` * sqrt(K/(K-1))
  because study/trial.py stores the population sd (pstdev) over the seeds. The same is used for
  miou_img, hp_acc and var when a trial has no per-image rows (column `ci_from` says which).
- Paired comparison: pairs (seed, image_id) of a variant's and the baseline's best trials
  (inner join); d = mIoU_i(variant) - mIoU_i(baseline). p-value: scipy.stats.wilcoxon(d) (two-sided,
  zero differences dropped, scipy's default); all differences zero: p = 1.0 (no evidence of a
  difference) and effect size 0. Effect size: matched-pairs rank-biserial correlation
  r = (R+ - R-) / (R+ + R-), R+/R- the sums of the ranks of |d| (ties averaged, zeros dropped as in
  the test) over positive/negative d; +1: the variant wins every pair, -1: the baseline does.
  Images seen under several seeds count once per seed, so the pairs are not fully independent.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from kd.metrics import METRICS, OBJECTIVES, THETA
from study.schema import STEPS, is_hyperparameter

SUMMARY_COLUMNS = [
    "variant",
    "method",
    "trials",
    "completed",
    "failed",
    "stopped",
    "degenerate",
    "best_trial",
    "hyperparameters",
    "seeds",
    *(c for m in METRICS for c in (m, f"{m}_ci")),
    "ci_from",
    "params",
    "gflops",
    "steps",
    "stage1_feature_ratio",
    "best_degenerate",
]
PAIRED_COLUMNS = [
    "variant",
    "trial_id",
    "baseline_trial",
    "n_pairs",
    "mean_diff",
    "p_value",
    "effect_size",
    "better",
    "significant",
]
FAILED_COLUMNS = ["trial_id", "method", "hyperparameters", "error"]


def higher_is_better(metric: str) -> bool:
    return OBJECTIVES.get(metric) != "min"


def objective(study) -> str:
    """The metric that picks a variant's best trial: the study's first objective."""
    objectives = study.config.get("objectives") or ["miou_img"]
    return objectives[0] if isinstance(objectives, list) else str(objectives)


def methods(study) -> list[str]:
    """The configured methods first (in the study's order), then any other method seen in the tables."""
    names = [m for m in study.config.get("methods") or [] if isinstance(m, str)]
    return list(dict.fromkeys([*names, *study.trials["method"].dropna()]))


def ordered_variants(study) -> list[str]:
    """The variants in the study's order: by method, a grid's points in the order it ran them. A
    method with no trials yet is its own variant, so that the summary shows it as pending."""
    trials = study.trials.sort_values("trial_id", kind="stable")  # a grid's trial ids follow its points
    names = []
    for method in methods(study):
        names += list(dict.fromkeys(trials.loc[trials["method"] == method, "variant"].dropna())) or [method]
    return names


def hyperparameters(trials: pd.DataFrame) -> list[str]:
    return [c for c in trials.columns if is_hyperparameter(c) and trials[c].notna().any()]


def format_value(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def trial_hyperparameters(row: pd.Series, columns: list[str]) -> dict:
    """The hyperparameters a trial has (NaN: the method has no such parameter)."""
    return {c: row[c] for c in columns if c in row.index and not _missing(row[c])}


def describe(row: pd.Series, columns: list[str]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in trial_hyperparameters(row, columns).items())


def _missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and lists are values, not missing
        return False


def best_trials(study, metric: str | None = None) -> pd.DataFrame:
    """One row per variant: its best completed trial by `metric` (default: the first objective);
    the first such trial on ties."""
    metric = metric or objective(study)
    done = study.completed
    if metric not in done:
        return done.iloc[0:0]
    scores = pd.to_numeric(done[metric], errors="coerce").dropna()
    by_variant = scores.groupby(done.loc[scores.index, "variant"])
    best = by_variant.idxmax() if higher_is_better(metric) else by_variant.idxmin()
    return done.loc[[best[v] for v in ordered_variants(study) if v in best.index]].reset_index(drop=True)


def seed_scores(per_image: pd.DataFrame) -> pd.DataFrame:
    """One row per seed of one trial's per-image rows: miou_img, hp_acc, var."""
    scores = per_image.dropna(subset=["miou"])
    groups = scores.groupby("seed")["miou"]
    return pd.DataFrame(
        {
            "miou_img": groups.mean(),
            "hp_acc": groups.apply(lambda v: float((v > THETA).mean())),
            "var": groups.var(ddof=0),
        }
    )


def mean_ci(values) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t interval (NaN for fewer than two values)."""
    values = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(float)
    if values.size == 0:
        return math.nan, math.nan
    if values.size == 1:
        return float(values[0]), math.nan
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    return float(values.mean()), float(half)


def ci_from_summary(mean, population_std, n) -> float:
    """Half-width of the 95 % interval from a mean and a population sd over n seeds."""
    try:
        mean, std, n = float(mean), float(population_std), int(n)
    except (TypeError, ValueError):
        return math.nan
    if n < 2 or math.isnan(mean) or math.isnan(std):
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * std * math.sqrt(n / (n - 1)) / math.sqrt(n))


def _number(value) -> float:
    value = pd.to_numeric(value, errors="coerce")
    return float(value) if not pd.isna(value) else math.nan


def _flag(value) -> bool:
    """A boolean cell as a boolean; missing (tables written before the column existed) is False."""
    return bool(value) if isinstance(value, (bool, np.bool_)) else False


def method_summary(study) -> pd.DataFrame:
    """Per variant: trial counts and its best trial's metrics with 95 % intervals over the seeds."""
    trials, best = study.trials, best_trials(study).set_index("variant", drop=False)
    rows = []
    for variant in ordered_variants(study):
        mine = trials[trials["variant"] == variant]
        status = mine["status"].value_counts()
        row = {
            "variant": variant,
            "method": mine["method"].iloc[0] if len(mine) else variant,
            "trials": len(mine),
            "completed": int(status.get("completed", 0)),
            "failed": int(status.get("failed", 0)),
            "stopped": int(status.get("stopped", 0)),
            "degenerate": int(mine["degenerate"].map(_flag).sum()),
        }
        if variant in best.index:
            row.update(_best_trial_scores(study, best.loc[variant]))
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _best_trial_scores(study, top: pd.Series) -> dict:
    """A variant's best trial in the summary: per-seed means and intervals from its per-image rows when
    it has them, else from the trials table."""
    seeds = seed_scores(study.per_image[study.per_image["trial_id"] == top["trial_id"]])
    n = len(seeds) if len(seeds) else _number(top.get("seeds"))
    row = {
        "best_trial": top["trial_id"],
        "hyperparameters": describe(top, hyperparameters(study.trials)),
        "seeds": n,
        "ci_from": "per_image" if len(seeds) else "trials table",
        "params": _number(top.get("params")),
        "gflops": _number(top.get("flops")) / 1e9,
        "steps": stage_steps(top),
        "stage1_feature_ratio": _number(top.get("stage1_feature_ratio")),
        "best_degenerate": _flag(top.get("degenerate")),
    }
    for metric in METRICS:
        if metric in seeds and len(seeds):
            row[metric], row[f"{metric}_ci"] = mean_ci(seeds[metric])
        else:
            row[metric] = _number(top.get(metric))
            row[f"{metric}_ci"] = ci_from_summary(top.get(metric), top.get(f"{metric}_std"), n)
    return row


def stage_steps(row: pd.Series) -> str:
    """The optimiser steps each stage of a trial took ("feature 640, frozen 480"), from its
    steps_<stage> columns."""
    steps = {c[len(STEPS) :]: row[c] for c in row.index if c.startswith(STEPS) and not _missing(row[c])}
    return ", ".join(f"{stage} {format_value(float(n))}" for stage, n in steps.items())


def wilcoxon_rank_biserial(differences) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank p-value and matched-pairs rank-biserial correlation."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return 1.0, 0.0  # identical scores on every pair: nothing to test
    ranks = stats.rankdata(np.abs(nonzero))
    plus, minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
    try:
        p = float(stats.wilcoxon(d).pvalue)
    except ValueError:
        p = math.nan
    return p, float((plus - minus) / (plus + minus))


def paired_comparison(study, baseline: str = "baseline") -> pd.DataFrame:
    """Each variant's best trial against the best trial of the variant `baseline` on the same
    (seed, image) pairs. An empty table (with its columns) when there is nothing to compare;
    `.attrs["note"]` says why."""
    best = best_trials(study)
    if best.empty:
        return _nothing_to_compare("No completed trials yet.")
    if baseline not in set(best["variant"]):
        return _nothing_to_compare(f"No completed trial of the {baseline!r} variant to compare against.")
    base = best[best["variant"] == baseline].iloc[0]
    scores = study.per_image.dropna(subset=["miou"])[["trial_id", "seed", "image_id", "miou"]]
    base_scores = scores[scores["trial_id"] == base["trial_id"]].drop(columns="trial_id")
    if base_scores.empty:
        return _nothing_to_compare(f"The {baseline!r} best trial {base['trial_id']} has no per-image scores.")
    rows = []
    for _, top in best[best["variant"] != baseline].iterrows():
        pairs = scores[scores["trial_id"] == top["trial_id"]].merge(
            base_scores, on=["seed", "image_id"], suffixes=("", "_base")
        )
        if not pairs.empty:
            rows.append(
                _paired_row(top, base, pairs["miou"].to_numpy(float) - pairs["miou_base"].to_numpy(float))
            )
    if rows:
        return pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    if len(best) == 1:
        return _nothing_to_compare(f"Only the {baseline!r} variant has completed trials: nothing to compare.")
    return _nothing_to_compare("No variant's best trial shares (seed, image) pairs with the baseline's.")


def _paired_row(top: pd.Series, base: pd.Series, d: np.ndarray) -> dict:
    p, effect = wilcoxon_rank_biserial(d)
    mean = float(d.mean())
    better = top["variant"] if mean > 0 else base["variant"] if mean < 0 else "tie"
    return {
        "variant": top["variant"],
        "trial_id": top["trial_id"],
        "baseline_trial": base["trial_id"],
        "n_pairs": len(d),
        "mean_diff": mean,
        "p_value": p,
        "effect_size": effect,
        "better": better,
        "significant": bool(p < 0.05),
    }


def _nothing_to_compare(note: str) -> pd.DataFrame:
    empty = pd.DataFrame(columns=PAIRED_COLUMNS)
    empty.attrs["note"] = note
    return empty


def failed_trials(study) -> pd.DataFrame:
    trials = study.trials[study.trials["status"] == "failed"]
    columns = hyperparameters(study.trials)
    rows = [
        {
            "trial_id": row["trial_id"],
            "method": row["method"],
            "hyperparameters": describe(row, columns),
            "error": row.get("error"),
        }
        for _, row in trials.iterrows()
    ]
    return pd.DataFrame(rows, columns=FAILED_COLUMNS)
