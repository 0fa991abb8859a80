"""Result tables: the best trial of each method with confidence intervals, paired tests against the
baseline, failed trials. Every function works on empty and partial studies (no completed trials,
one method, NaN metrics, trials without per-image rows) and then returns empty or NaN cells.

Statistics:
- Per seed, from `per_image` (as kd.metrics.robustness; images with NaN mIoU_i are left out):
  miou_img = mean of mIoU_i, hp_acc = share of images with mIoU_i > 0.75,
  var = population variance of mIoU_i (1/n).
- 95 % confidence interval of a mean over a trial's K seeds: Student's t,
  half-width = t.ppf(0.975, K-1) * sd / sqrt(K) with the sample sd (ddof=1); K = 1: NaN.
- `miou` (dataset mIoU from the summed confusion matrix) cannot be recomputed from mIoU_i, so its
  interval always comes from the trials table: mean `miou`, sd = `miou_std` * sqrt(K/(K-1))
  because study/trial.py stores the population sd (pstdev) over the seeds. The same is used for
  miou_img, hp_acc and var when a trial has no per-image rows (column `ci_from` says which).
- Paired comparison: pairs (seed, image_id) of the method's and the baseline's best trials
  (inner join); d = mIoU_i(method) - mIoU_i(baseline). p-value: scipy.stats.wilcoxon(d) (two-sided,
  zero differences dropped, scipy's default); all differences zero: p = 1.0 (no evidence of a
  difference) and effect size 0. Effect size: matched-pairs rank-biserial correlation
  r = (R+ - R-) / (R+ + R-), R+/R- the sums of the ranks of |d| (ties averaged, zeros dropped as in
  the test) over positive/negative d; +1: the method wins every pair, -1: the baseline does.
  Images seen under several seeds count once per seed, so the pairs are not fully independent.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

METRICS = ("miou", "miou_img", "hp_acc", "var")
THETA = 0.75  # HP-Acc threshold of the SD paper
LOWER_IS_BETTER = {"var", "params", "flops", "duration_s", "seconds", "loss"}
NOT_HYPERPARAMETERS = {"trial_id", "method", "variant", "label", "status", "seeds", "params", "flops", "duration_s", "error",
                       "trial_dir", "node", "predictions", "overrides", "degenerate", "stage1_feature_ratio",
                       *METRICS, *(f"{m}_std" for m in METRICS)}
STEPS = "steps_"  # steps_<stage>: the optimiser steps a stage took
SUMMARY_COLUMNS = ["method", "trials", "completed", "failed", "stopped", "degenerate", "best_trial", "hyperparameters",
                   "seeds", *(c for m in METRICS for c in (m, f"{m}_ci")), "ci_from", "params", "gflops", "steps",
                   "stage1_feature_ratio", "best_degenerate"]
PAIRED_COLUMNS = ["method", "trial_id", "baseline_trial", "n_pairs", "mean_diff", "p_value", "effect_size",
                  "better", "significant"]
FAILED_COLUMNS = ["trial_id", "method", "hyperparameters", "error"]


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def objective(study) -> str:
    """The metric that picks a method's best trial: the study's first objective."""
    objectives = study.config.get("objectives") or ["miou_img"]
    return objectives[0] if isinstance(objectives, list) else str(objectives)


def methods(study) -> list[str]:
    """The configured methods first (in the study's order), then any other method seen in the tables."""
    names = [m for m in study.config.get("methods") or [] if isinstance(m, str)]
    for name in study.trials["method"].dropna().tolist():
        if name not in names:
            names.append(name)
    return names


def labels(trials: pd.DataFrame) -> pd.Series:
    """Each trial's name in summaries: its grid variant ("esd r=0.5") where it has one, else its method."""
    if "variant" not in trials:
        return trials["method"]
    return trials["variant"].where(trials["variant"].map(lambda v: isinstance(v, str) and v != ""), trials["method"])


def entries(study) -> list[str]:
    """What the summaries compare, in the study's order: each method, or a grid's variants of it."""
    trials = study.trials.sort_values("trial_id", kind="stable")  # a grid's trial ids follow its points
    named = labels(trials)
    names = []
    for method in methods(study):
        names += list(dict.fromkeys(named[trials["method"] == method].tolist())) or [method]
    return names


def hyperparameters(trials: pd.DataFrame) -> list[str]:
    return [c for c in trials.columns
            if c not in NOT_HYPERPARAMETERS and not c.startswith(STEPS) and trials[c].notna().any()]


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
    """One row per method (or grid variant, see `entries`): its best completed trial by `metric`
    (default: the first objective). The column `label` names the entry."""
    metric = metric or objective(study)
    done = study.completed
    if metric not in done.columns:
        return done.iloc[0:0].assign(label=pd.Series(dtype=object))
    done = done[pd.to_numeric(done[metric], errors="coerce").notna()].assign(label=lambda d: labels(d))
    rows = []
    for name in entries(study):
        mine = done[done["label"] == name]
        if mine.empty:
            continue
        values = pd.to_numeric(mine[metric])
        rows.append(mine.loc[values.idxmax() if higher_is_better(metric) else values.idxmin()])
    return pd.DataFrame(rows).reset_index(drop=True) if rows else done.iloc[0:0]


def seed_scores(per_image: pd.DataFrame) -> pd.DataFrame:
    """One row per seed of one trial's per-image rows: miou_img, hp_acc, var."""
    scores = per_image.dropna(subset=["miou"])
    groups = scores.groupby("seed")["miou"]
    return pd.DataFrame({"miou_img": groups.mean(),
                         "hp_acc": groups.apply(lambda v: float((v > THETA).mean())),
                         "var": groups.var(ddof=0)})


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


def method_summary(study) -> pd.DataFrame:
    """Per method: trial counts and its best trial's metrics with 95 % intervals over the seeds."""
    trials, columns = study.trials, hyperparameters(study.trials)
    best = best_trials(study).set_index("label") if not study.completed.empty else pd.DataFrame()
    named, rows = labels(trials), []
    for method in entries(study):
        mine = trials[named == method]
        status = mine["status"].value_counts()
        row = {"method": method, "trials": len(mine), "completed": int(status.get("completed", 0)),
               "failed": int(status.get("failed", 0)), "stopped": int(status.get("stopped", 0)),
               "degenerate": int(_flags(mine, "degenerate").sum())}
        if method in best.index:
            top = best.loc[method]
            row.update(best_trial=top["trial_id"], hyperparameters=describe(top, columns),
                       steps=stage_steps(top), stage1_feature_ratio=_number(top.get("stage1_feature_ratio")),
                       best_degenerate=bool(_flags(top.to_frame().T, "degenerate").any()))
            images = study.per_image[study.per_image["trial_id"] == top["trial_id"]]
            seeds = seed_scores(images)
            row["seeds"] = len(seeds) if len(seeds) else _number(top.get("seeds"))
            row["ci_from"] = "per_image" if len(seeds) else "trials table"
            for metric in METRICS:
                if len(seeds) and metric in seeds:
                    row[metric], row[f"{metric}_ci"] = mean_ci(seeds[metric])
                else:
                    row[metric] = _number(top.get(metric))
                    row[f"{metric}_ci"] = ci_from_summary(top.get(metric), top.get(f"{metric}_std"), row["seeds"])
            row["params"] = _number(top.get("params"))
            row["gflops"] = _number(top.get("flops")) / 1e9
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _flags(trials: pd.DataFrame, column: str) -> pd.Series:
    """A boolean column as booleans (missing: False), for tables written before it existed."""
    if column not in trials:
        return pd.Series(False, index=trials.index)
    return trials[column].map(lambda v: bool(v) if isinstance(v, (bool, np.bool_)) else False)


def stage_steps(row: pd.Series) -> str:
    """The optimiser steps each stage of a trial took ("feature 640, frozen 480"), from its steps_<stage> columns."""
    steps = {c[len(STEPS):]: row[c] for c in row.index if c.startswith(STEPS) and not _missing(row[c])}
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
    """Each method's best trial against the baseline's best on the same (seed, image) pairs.

    An empty table (with its columns) when there is nothing to compare; `.attrs["note"]` says why.
    """
    empty = pd.DataFrame(columns=PAIRED_COLUMNS)
    best = best_trials(study)
    if best.empty:
        empty.attrs["note"] = "No completed trials yet."
        return empty
    if baseline not in set(best["label"]):
        empty.attrs["note"] = f"No completed trial of the {baseline!r} method to compare against."
        return empty
    per_image = study.per_image.dropna(subset=["miou"])
    base = best[best["label"] == baseline].iloc[0]
    base_images = per_image[per_image["trial_id"] == base["trial_id"]][["seed", "image_id", "miou"]]
    if base_images.empty:
        empty.attrs["note"] = f"The {baseline!r} best trial {base['trial_id']} has no per-image scores."
        return empty
    rows = []
    for _, top in best[best["label"] != baseline].iterrows():
        mine = per_image[per_image["trial_id"] == top["trial_id"]][["seed", "image_id", "miou"]]
        pairs = mine.merge(base_images, on=["seed", "image_id"], suffixes=("", "_base"))
        if pairs.empty:
            continue
        d = pairs["miou"].to_numpy(float) - pairs["miou_base"].to_numpy(float)
        p, effect = wilcoxon_rank_biserial(d)
        mean = float(d.mean())
        better = top["label"] if mean > 0 else baseline if mean < 0 else "tie"
        rows.append({"method": top["label"], "trial_id": top["trial_id"], "baseline_trial": base["trial_id"],
                     "n_pairs": len(d), "mean_diff": mean, "p_value": p, "effect_size": effect,
                     "better": better, "significant": bool(p < 0.05)})
    if not rows:
        if len(best) == 1:
            empty.attrs["note"] = f"Only the {baseline!r} method has completed trials: nothing to compare."
        else:
            empty.attrs["note"] = "No method's best trial shares (seed, image) pairs with the baseline's."
        return empty
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def failed_trials(study) -> pd.DataFrame:
    trials = study.trials[study.trials["status"] == "failed"]
    columns = hyperparameters(study.trials)
    rows = [{"trial_id": row["trial_id"], "method": row["method"], "hyperparameters": describe(row, columns),
             "error": row.get("error")} for _, row in trials.iterrows()]
    return pd.DataFrame(rows, columns=FAILED_COLUMNS)
