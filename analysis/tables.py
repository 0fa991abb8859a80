"""Result tables: the chosen trial of each variant with confidence intervals, paired tests against the
baseline, failed trials. Every function works on empty and partial studies (no completed trials,
one variant, NaN metrics, trials without per-image rows) and then returns empty or NaN cells.

A variant is what the tables compare: a method, or one point of a grid over it ("esd r=0.5").

Selection and reporting: a variant's chosen trial is picked on the validation images (the trials
table and the `val` rows of per_image). Once the study has scored each variant's chosen trial on
the test images (final.parquet and the `test` rows of per_image), the summary and the comparisons
report those test scores; before that they show the validation scores and say so (column `split`).

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
- Paired comparison: pairs (seed, image_id) of a variant's and the baseline's chosen trials
  (inner join); d = mIoU_i(variant) - mIoU_i(baseline). p-value: scipy.stats.wilcoxon(d) (two-sided,
  zero differences dropped, scipy's default); all differences zero: p = 1.0 (no evidence of a
  difference) and effect size 0. Effect size: matched-pairs rank-biserial correlation
  r = (R+ - R-) / (R+ + R-), R+/R- the sums of the ranks of |d| (ties averaged, zeros dropped as in
  the test) over positive/negative d; +1: the variant wins every pair, -1: the baseline does.
  Images seen under several seeds count once per seed, so the pairs are not fully independent.
- Seed-level comparison (the unit a reviewer accepts: seeds are the independent repetitions): one
  miou_img per seed of each trial, paired by seed; d_s = miou_img(variant) - miou_img(baseline).
  p: two-sided paired t-test (scipy.stats.ttest_rel). p_adjusted: Holm over the family (below;
  as statsmodels' multipletests computes it), the per-image p-values likewise in their own
  column. seeds_needed: the smallest number of seeds with which a paired t-test at alpha 0.05
  (unadjusted) has 80 % power for the observed mean difference and sd of d_s
  (statsmodels TTestPower); NaN when the difference is 0 or cannot be estimated (one seed).
- Hierarchical bootstrap (hierarchical_bootstrap): the per-image pairs are neither independent
  across seeds (the same image) nor within a seed (consecutive video frames look alike), so the
  bootstrap resamples both levels. d[seed, image] as for the Wilcoxon test (paired: both variants
  under the same seed); each resample draws the seeds with replacement and, within each drawn seed,
  its blocks of consecutive frames with replacement (as many blocks as it has); the statistic is the
  mean of d over the drawn pairs: the difference in the mean per-image score (mIoU_i for miou_img,
  [mIoU_i > THETA] for hp_acc; var and the pooled miou are no mean of per-image scores: NaN).
  boot_diff: that mean on the data; boot_ci_low/high: the 2.5 and 97.5 percentiles of the resampled
  means; boot_p: twice the share of resampled means on the far side of 0 (<= 0 for a positive
  difference), at most 1. RESAMPLES resamples from a generator seeded with BOOTSTRAP_SEED: the same
  inputs give the same numbers.
- Blocks (frame_blocks): an image id "<sequence>_<frame>" or "<sequence>_f<frame>" (CamVid
  "0001TP_008550", "Seq05VD_f02370"; synthetic "source_00003"; Cityscapes
  "frankfurt_000000_000294" is sequence "frankfurt_000000") puts the image in its sequence; within
  a sequence, in frame order, every BLOCK_LENGTH images form a block (the last may be shorter), so
  no block crosses sequences. If any id has no such form, all images are one sequence in the order
  they first appear in the per-image rows (the dataset's order).
- The multiplicity family (comparisons): Holm's adjustment (p_adjusted, image_p_adjusted,
  boot_p_holm) runs over every comparison a page reports, every variant against every reference
  listed; a pair compared both ways (sd against baseline, baseline against sd) is one comparison.
  `.attrs["family"]` holds its size.
- Verdict: where the teacher's miou_img on the validation images exceeds the reference's by less
  than TEACHER_MARGIN, the design cannot show what distillation adds, and the verdict says so
  instead of reading a missing difference as a negative result.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestPower

from kd.metrics import METRICS, OBJECTIVES, REGION_METRICS, THETA
from kd.run_folder import STEPS, is_hyperparameter

SPLITS = {"val": "validation images", "test": "test images"}
ALPHA, POWER = 0.05, 0.8  # the comparisons' significance level and the power seeds_needed aims at
MAX_SEEDS = 10_000  # seeds_needed beyond this is reported as inf: no study will run that many
# The interval's ends then carry a Monte Carlo error of a few % of its half-width; p resolves 1/2000.
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
# CamVid is annotated every 30th frame (1 s at 30 fps); ten such frames share scenes and lighting,
# and still leave about two dozen blocks on its 233 test images to resample.
BLOCK_LENGTH = 10
FRAME_ID = re.compile(r"^(?P<sequence>.+?)_f?(?P<frame>\d+)$")
# A teacher less than this much better (miou_img on validation) than the reference gives a KD method
# nothing to transfer that the reference lacks: the comparison cannot show what distillation adds.
TEACHER_MARGIN = 0.01
# The per-image score whose mean is each metric (what the bootstrap resamples).
IMAGE_SCORES = {"miou_img": lambda miou: miou, "hp_acc": lambda miou: (miou > THETA).astype(float)}
SUMMARY_COLUMNS = [
    "variant",
    "method",
    "split",
    "trials",
    "completed",
    "failed",
    "stopped",
    "degenerate",
    "chosen_trial",
    "selection_score",
    "hyperparameters",
    "seeds",
    *(c for m in METRICS for c in (m, f"{m}_ci")),
    "ci_from",
    "params",
    "gflops",
    "steps",
    "stage1_feature_ratio",
    "chosen_degenerate",
]
PAIRED_COLUMNS = [
    "variant",
    "trial_id",
    "baseline_trial",
    "split",
    "n_seeds",
    "mean_diff",
    "sd_diff",
    "p_value",
    "p_adjusted",
    "seeds_needed",
    "boot_diff",
    "boot_ci_low",
    "boot_ci_high",
    "boot_p",
    "boot_p_holm",
    "n_pairs",
    "image_mean_diff",
    "image_p_value",
    "image_p_adjusted",
    "effect_size",
    "better",
    "significant",
    "teacher_margin",
    "verdict",
]
ADJUSTED = {"p_value": "p_adjusted", "image_p_value": "image_p_adjusted", "boot_p": "boot_p_holm"}
FAILED_COLUMNS = ["trial_id", "method", "hyperparameters", "error"]
SEED_COLUMNS = ["variant", "trial_id", "split", "seed", *METRICS]
STAGE_END_COLUMNS = [
    "variant",
    "trial_id",
    "stage_index",
    "stage",
    "seeds",
    "miou_img",
    "miou_img_ci",
    "hp_acc",
    "hp_acc_ci",
]


def higher_is_better(metric: str) -> bool:
    return OBJECTIVES.get(metric) != "min"


def objective(study) -> str:
    """The metric that picks a variant's chosen trial: the study's first objective."""
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


def _chosen_on_validation(study) -> pd.DataFrame:
    """One row per variant: its completed trial with the best validation score on the first
    objective; the first such trial on ties."""
    metric = objective(study)
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


def _as_float(value) -> float:
    """A cell as a float; NaN for a missing or non-numeric one."""
    value = pd.to_numeric(value, errors="coerce")
    return float(value) if not pd.isna(value) else math.nan


def _flag(value) -> bool:
    """A boolean cell as a boolean; a missing one (a table made by hand may lack the column) is False."""
    return bool(value) if isinstance(value, (bool, np.bool_)) else False


def reported_split(study) -> str:
    """ "test" once the study scored its chosen trials on the test images, else "val"."""
    return "test" if study.final is not None and len(study.final) else "val"


def split_images(study, split: str) -> pd.DataFrame:
    return study.test_per_image if split == "test" else study.per_image


def chosen_trials(study, split: str | None = None) -> pd.DataFrame:
    """One row per variant: its chosen trial, the one the tables report. On validation the trial
    with the best validation score; on test the trial the study scored there (the same trial,
    chosen on validation when the search ended)."""
    on_val = _chosen_on_validation(study)
    if (split or reported_split(study)) == "val":
        return on_val
    scored = study.final.drop_duplicates("variant").set_index("variant")["trial_id"]
    trials = study.trials.drop_duplicates("trial_id").set_index("trial_id", drop=False)
    rows = [
        trials.loc[scored[v]]
        for v in ordered_variants(study)
        if v in scored.index and scored[v] in trials.index
    ]
    return pd.DataFrame(rows).reset_index(drop=True) if rows else on_val.iloc[0:0]


def seed_metrics(study, trial_id: str, split: str) -> pd.DataFrame:
    """One row per seed of a trial: its metrics on `split` (test: all four, from final.parquet;
    validation: miou_img, hp_acc and var from the per-image rows)."""
    if split == "test":
        mine = study.final[study.final["trial_id"] == trial_id]
        return mine.set_index("seed")[list(METRICS)].apply(pd.to_numeric, errors="coerce")
    return seed_scores(study.per_image[study.per_image["trial_id"] == trial_id])


def reported_scores(study, split: str | None = None) -> pd.DataFrame:
    """chosen_trials with each metric and `<metric>_std` (population sd over the seeds) on `split`;
    on validation those of the trials table."""
    split = split or reported_split(study)
    chosen = chosen_trials(study, split)
    if split == "val" or chosen.empty:
        return chosen
    chosen = chosen.copy()
    for index, top in chosen.iterrows():
        seeds = seed_metrics(study, top["trial_id"], split)
        for metric in METRICS:
            chosen.loc[index, metric] = seeds[metric].mean()
            chosen.loc[index, f"{metric}_std"] = seeds[metric].std(ddof=0)
    return chosen


def method_summary(study, split: str | None = None) -> pd.DataFrame:
    """Per variant: trial counts and its chosen trial's metrics on `split` (default: test once
    scored, else validation) with 95 % intervals over the seeds."""
    split = split or reported_split(study)
    trials, chosen = study.trials, chosen_trials(study, split).set_index("variant", drop=False)
    rows = []
    for variant in ordered_variants(study):
        mine = trials[trials["variant"] == variant]
        status = mine["status"].value_counts()
        row = {
            "variant": variant,
            "method": mine["method"].iloc[0] if len(mine) else variant,
            "split": split,
            "trials": len(mine),
            "completed": int(status.get("completed", 0)),
            "failed": int(status.get("failed", 0)),
            "stopped": int(status.get("stopped", 0)),
            "degenerate": int(mine["degenerate"].map(_flag).sum()),
        }
        if variant in chosen.index:
            row.update(_chosen_scores(study, chosen.loc[variant], split))
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _chosen_scores(study, top: pd.Series, split: str) -> dict:
    """A variant's chosen trial in the summary: per-seed means and intervals from its scores on
    `split` when it has them, else (validation) from the trials table."""
    seeds = seed_metrics(study, top["trial_id"], split)
    n = len(seeds) if len(seeds) else _as_float(top.get("seeds"))
    row = {
        "chosen_trial": top["trial_id"],
        "selection_score": _as_float(top.get(objective(study))),
        "hyperparameters": describe(top, hyperparameters(study.trials)),
        "seeds": n,
        "ci_from": ("final" if split == "test" else "per_image") if len(seeds) else "trials table",
        "params": _as_float(top.get("params")),
        "gflops": _as_float(top.get("flops")) / 1e9,
        "steps": stage_steps(top),
        "stage1_feature_ratio": _as_float(top.get("stage1_feature_ratio")),
        "chosen_degenerate": _flag(top.get("degenerate")),
    }
    for metric in METRICS:
        if metric in seeds and len(seeds):
            row[metric], row[f"{metric}_ci"] = mean_ci(seeds[metric])
        else:
            row[metric] = _as_float(top.get(metric))
            row[f"{metric}_ci"] = ci_from_summary(top.get(metric), top.get(f"{metric}_std"), n)
    return row


# What a study records of the mechanism SD and ESD claim, where it can: stage 1's feature ratio
# on its own images and on the test images (recipes with a feature stage), and the test mIoU on
# shadowed and on sunlit ground (datasets that mark those regions, kd.metrics.REGIONS)
FEATURE_RATIOS = ["stage1_feature_ratio", "stage1_feature_ratio_test"]
MECHANISM_COLUMNS = [
    "variant",
    *FEATURE_RATIOS,
    *(c for m in REGION_METRICS for c in (m, f"{m}_ci")),
    "shadow_gap",
    "shadow_gap_ci",
]


def mechanism(study) -> pd.DataFrame:
    """Per variant's chosen trial (the teacher first, for its region scores): stage 1's feature
    ratio on its own images and on the test images (means over seeds), and on the test images the
    mIoU on shadowed and on sunlit ground and their gap (sunlit minus shadowed), means over seeds
    with 95 % Student-t intervals. Only the columns some row has; empty when none has any (a
    study without a feature stage on data that marks no regions)."""
    rows = []
    teacher = (study.teacher() or {}).get("test", {})
    if any(_present(teacher.get(m)) for m in REGION_METRICS):
        rows.append({"variant": "teacher", **{m: _as_float(teacher.get(m)) for m in REGION_METRICS}})
        rows[-1]["shadow_gap"] = rows[-1]["miou_sunlit"] - rows[-1]["miou_shadow"]
    scored = reported_split(study) == "test"
    for _, top in chosen_trials(study).iterrows():
        row = {"variant": top["variant"], **{c: _as_float(top.get(c)) for c in FEATURE_RATIOS}}
        mine = study.final[study.final["trial_id"] == top["trial_id"]] if scored else None
        if mine is not None and all(m in mine for m in REGION_METRICS):
            regions = mine[list(REGION_METRICS)].apply(pd.to_numeric, errors="coerce")
            regions["shadow_gap"] = regions["miou_sunlit"] - regions["miou_shadow"]
            for column in regions:
                if regions[column].notna().any():
                    row[column], row[f"{column}_ci"] = mean_ci(regions[column].dropna())
        rows.append(row)
    frame = pd.DataFrame(rows, columns=MECHANISM_COLUMNS)
    kept = [c for c in MECHANISM_COLUMNS if c == "variant" or frame[c].notna().any()]
    return frame[kept] if len(kept) > 1 else frame.iloc[0:0][["variant"]]


def _present(value) -> bool:
    return not math.isnan(_as_float(value))


def seed_table(study, split: str | None = None) -> pd.DataFrame:
    """One row per seed of each variant's chosen trial: its metrics on `split` (default: test once
    scored, else validation), the numbers behind every interval of the summary."""
    split = split or reported_split(study)
    rows = []
    for _, top in chosen_trials(study, split).iterrows():
        for seed, scores in seed_metrics(study, top["trial_id"], split).iterrows():
            rows.append(
                {"variant": top["variant"], "trial_id": top["trial_id"], "split": split, "seed": int(seed)}
            )
            rows[-1].update({m: _as_float(scores.get(m)) for m in METRICS})
    return pd.DataFrame(rows, columns=SEED_COLUMNS)


def stage_ends(study) -> pd.DataFrame:
    """Per variant whose chosen trial was scored at the end of more than one stage: the validation
    scores at each stage's end (means over seeds, 95 % intervals), i.e. whether a later stage helped."""
    curves = study.curves
    if not {"stage_end", "stage_index", "miou_img", "hp_acc"} <= set(curves.columns):
        return pd.DataFrame(columns=STAGE_END_COLUMNS)  # a table made by hand records no stages
    ended = curves[curves["stage_end"].notna() & pd.to_numeric(curves["miou_img"], errors="coerce").notna()]
    rows = []
    for _, top in chosen_trials(study, "val").iterrows():
        mine = ended[ended["trial_id"] == top["trial_id"]]
        if mine["stage_index"].nunique() < 2:
            continue
        for (index, stage), seeds in mine.groupby(["stage_index", "stage"], sort=True):
            row = {"variant": top["variant"], "trial_id": top["trial_id"], "stage_index": int(index)}
            row.update(stage=stage, seeds=seeds["seed"].nunique())
            for metric in ("miou_img", "hp_acc"):
                row[metric], row[f"{metric}_ci"] = mean_ci(seeds[metric])
            rows.append(row)
    return pd.DataFrame(rows, columns=STAGE_END_COLUMNS)


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
    tied = nonzero.size < d.size or np.unique(np.abs(nonzero)).size < nonzero.size
    try:
        if tied and d.size <= EXACT_PERMUTATIONS_UP_TO:
            p = _signed_rank_permutation_p(d)
        else:
            p = float(stats.wilcoxon(d).pvalue)
    except ValueError:
        p = math.nan
    return p, float((plus - minus) / (plus + minus))


# scipy's wilcoxon tests zeros or ties in up to 13 pairs with every one of the 2**n sign flips
EXACT_PERMUTATIONS_UP_TO = 13


def _positive_rank_sum(d: np.ndarray, axis: int = -1) -> np.ndarray:
    """The signed-rank statistic along `axis`: the ranks of |d| (zeros left out) where d > 0."""
    d = np.moveaxis(d, axis, -1)
    ranks = stats.rankdata(np.where(d == 0, np.nan, np.abs(d)), axis=-1, nan_policy="omit")
    return np.where(d > 0, ranks, 0.0).sum(axis=-1)


def _signed_rank_permutation_p(d: np.ndarray) -> float:
    """The p-value scipy's wilcoxon gives pairs with zeros or ties (an exact permutation test of
    the signed-rank statistic), with the statistic computed for all sign flips at once: scipy's own
    call computes it one flip at a time, seconds for 12 pairs."""
    test = stats.permutation_test(
        (d,), _positive_rank_sum, vectorized=True, permutation_type="samples", axis=-1
    )
    return float(test.pvalue)


def paired_t(differences) -> float:
    """Two-sided p of the paired t-test on per-seed differences (NaN for fewer than two)."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if d.size < 2:
        return math.nan
    if np.ptp(d) == 0:  # the t statistic is undefined: identical differences
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def seeds_needed(differences) -> float:
    """Seeds a paired t-test (alpha ALPHA, unadjusted) needs for power POWER at the observed mean
    and sd of the per-seed differences; inf beyond MAX_SEEDS, NaN for no difference or fewer than
    two seeds."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if d.size < 2 or d.mean() == 0:
        return math.nan
    if np.ptp(d) == 0:
        return 2.0  # every seed moved by the same amount: the fewest a t-test can use
    seeds = np.arange(2, MAX_SEEDS + 1)
    # statsmodels' root finder gives up on very large or small effects; its power function does not
    power = TTestPower().power(effect_size=abs(d.mean()) / d.std(ddof=1), nobs=seeds, alpha=ALPHA)
    enough = np.flatnonzero(power >= POWER)
    return float(seeds[enough[0]]) if enough.size else math.inf


def holm(p_values) -> list[float]:
    """Holm-adjusted p-values; NaN stays NaN and is not counted as a test."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    tested = ~np.isnan(p)
    if tested.any():
        # statsmodels' multipletests(method="holm") computes the same, then runs a full garbage
        # collection: most of a second in a process holding torch's objects, once per family
        order = np.argsort(p[tested])
        scaled = p[tested][order] * np.arange(order.size, 0, -1)
        corrected = np.empty(order.size)
        corrected[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
        adjusted[tested] = corrected
    return adjusted.tolist()


def frame_blocks(image_ids, length: int = BLOCK_LENGTH) -> np.ndarray:
    """The block number of each image (in the order given): runs of `length` consecutive frames of
    one sequence, by the rule in the module's docstring."""
    ids = [str(i) for i in image_ids]
    parsed = [FRAME_ID.match(i) for i in ids]
    if all(parsed):
        keys = [(m["sequence"], int(m["frame"])) for m in parsed]
    else:  # no sequence to respect: the dataset's order is the only adjacency known
        keys = [("", index) for index in range(len(ids))]
    blocks = np.empty(len(ids), dtype=int)
    block, sequence, filled = -1, None, 0
    for index in sorted(range(len(ids)), key=keys.__getitem__):
        if keys[index][0] != sequence or filled == length:
            block, sequence, filled = block + 1, keys[index][0], 0
        blocks[index] = block
        filled += 1
    return blocks


def hierarchical_bootstrap(
    differences, blocks, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> dict[str, float]:
    """boot_diff, boot_ci_low, boot_ci_high and boot_p of `differences` [seeds, images] (NaN: no
    pair), resampling seeds, then each drawn seed's blocks (`blocks[image]`, e.g. frame_blocks)."""
    d = np.atleast_2d(np.asarray(differences, dtype=float))
    nothing = dict.fromkeys(("boot_diff", "boot_ci_low", "boot_ci_high", "boot_p"), math.nan)
    present = ~np.isnan(d)
    d, present = d[present.any(axis=1)], present[present.any(axis=1)]
    if not present.any():
        return nothing
    _, block_of = np.unique(np.asarray(blocks), return_inverse=True)
    members = np.eye(block_of.max() + 1)[block_of]  # [images, blocks], one 1 per row
    sums, counts = np.where(present, d, 0.0) @ members, present.astype(float) @ members  # [seeds, blocks]
    rng = np.random.default_rng(seed)
    n_seeds, n_blocks = sums.shape
    drawn_seeds = rng.integers(n_seeds, size=(resamples, n_seeds, 1))
    drawn_blocks = rng.integers(n_blocks, size=(resamples, n_seeds, n_blocks))
    with np.errstate(invalid="ignore"):  # a resample of empty blocks only has no mean
        means = sums[drawn_seeds, drawn_blocks].sum(axis=(1, 2)) / counts[drawn_seeds, drawn_blocks].sum(
            axis=(1, 2)
        )
    means = means[~np.isnan(means)]
    if not means.size:
        return nothing
    low, high = np.percentile(means, [2.5, 97.5])
    far_side = min(np.mean(means <= 0), np.mean(means >= 0))
    return {
        "boot_diff": float(sums.sum() / counts.sum()),
        "boot_ci_low": float(low),
        "boot_ci_high": float(high),
        "boot_p": float(min(1.0, 2 * far_side)),
    }


def teacher_margin(study, reference: pd.Series, compared: pd.Series | None = None) -> float:
    """The validation miou_img of the teacher `compared` distilled from (a study with a teacher
    axis), else of the study's teacher, minus the reference's chosen trial's (NaN when either was
    not recorded)."""
    name = None if compared is None else compared.get("teacher")
    teacher = study.teachers().get(name) if isinstance(name, str) else None
    teacher = teacher or study.teacher() or {}
    return _as_float(teacher.get("miou_img")) - _as_float(reference.get("miou_img"))


def verdict(row: pd.Series | dict, reference_method: str) -> str:
    """What one comparison shows, worded by what its design can show."""
    margin = _as_float(row["teacher_margin"])
    if margin < TEACHER_MARGIN:
        stronger_than = "the student alone" if reference_method == "baseline" else "the reference"
        return (
            f"uninformative: the teacher is not stronger than {stronger_than} on validation "
            f"(margin {margin:+.3f})"
        )
    shown = [
        test for test, p in (("paired t", row["p_adjusted"]), ("bootstrap", row["boot_p_holm"])) if p < ALPHA
    ]
    if not shown:
        return f"no difference shown (Holm, α = {ALPHA:g})"
    if len(shown) == 2:
        return f"{row['better']} better (paired t and bootstrap; Holm, α = {ALPHA:g})"
    # With few seeds the bootstrap's intervals are narrower than the t-test's (resampling a handful
    # of seeds misses the t distribution's tails), so a difference it alone shows is not claimed.
    return f"not shown: the {shown[0]} alone favours {row['better']} (Holm, α = {ALPHA:g})"


def comparisons(
    study,
    references=("baseline",),
    split: str | None = None,
    metric: str = "miou_img",
    resamples: int = RESAMPLES,
) -> dict[str, pd.DataFrame]:
    """paired_comparison against each of `references`, Holm-adjusted over the whole family: every
    comparison of every table, a pair compared both ways counted once. Each table's
    `.attrs["family"]` is the family's size."""
    found = {reference: _compare(study, reference, split, metric, resamples) for reference in references}
    tested = [frame for frame in found.values() if not frame.empty]
    family = pd.concat(tested, ignore_index=True) if tested else pd.DataFrame(columns=PAIRED_COLUMNS)
    distinct = family.assign(pair=_pairs(family)).drop_duplicates("pair").set_index("pair")
    adjusted = {raw: pd.Series(holm(distinct[raw]), index=distinct.index, dtype=float) for raw in ADJUSTED}
    for reference, frame in found.items():
        if not frame.empty:
            for raw, column in ADJUSTED.items():
                frame[column] = adjusted[raw].loc[_pairs(frame)].to_numpy()
            _conclude(frame, _reference_method(study, reference))
        frame.attrs.update(family=len(distinct), reported=len(family), resamples=resamples)
    return found


def _pairs(paired: pd.DataFrame) -> list[frozenset]:
    """Each comparison as the set of its two trials: the same whichever is the reference."""
    return [frozenset(p) for p in zip(paired["trial_id"], paired["baseline_trial"], strict=True)]


def _reference_method(study, reference: str) -> str:
    methods = study.trials.loc[study.trials["variant"] == reference, "method"].dropna()
    return str(methods.iloc[0]) if len(methods) else reference


def _conclude(paired: pd.DataFrame, reference_method: str) -> None:
    paired["significant"] = [bool(p < ALPHA) for p in paired["p_adjusted"]]  # NaN: False
    paired["verdict"] = [verdict(row, reference_method) for _, row in paired.iterrows()]


def paired_comparison(
    study,
    baseline: str = "baseline",
    split: str | None = None,
    metric: str = "miou_img",
    resamples: int = RESAMPLES,
) -> pd.DataFrame:
    """Each variant's chosen trial against the baseline's on `split` (default: test once scored,
    else validation): per seed (paired t on `metric`, seeds needed), per (seed, image) pair
    (Wilcoxon on the image's mIoU) and by the hierarchical bootstrap (`metric`'s per-image score);
    Holm over this table's rows, the family of a page with this one reference. `metric = "miou"`,
    the pooled mIoU the IFVD paper reports, exists per seed on the test images only. An empty
    table (with its columns) when there is nothing to compare; `.attrs["note"]` says why."""
    return comparisons(study, (baseline,), split, metric, resamples)[baseline]


def _compare(study, baseline: str, split: str | None, metric: str, resamples: int) -> pd.DataFrame:
    """paired_comparison before the Holm adjustment and the verdicts, which need the family."""
    split = split or reported_split(study)
    per_seed = METRICS if split == "test" else [m for m in METRICS if m != "miou"]
    if metric not in per_seed:
        raise ValueError(
            f"paired_comparison(metric={metric!r}) on the {SPLITS[split]}: choose one of {per_seed}"
            + (" (the pooled miou per seed is scored on the test images only)" if metric == "miou" else "")
        )
    chosen = chosen_trials(study, split)
    if chosen.empty:
        return _nothing_to_compare(f"No trial scored on the {SPLITS[split]} yet.")
    if baseline not in set(chosen["variant"]):
        return _nothing_to_compare(
            f"No trial of the {baseline!r} variant scored on the {SPLITS[split]} to compare against."
        )
    base = chosen[chosen["variant"] == baseline].iloc[0]
    scores = split_images(study, split).dropna(subset=["miou"])[["trial_id", "seed", "image_id", "miou"]]
    base_scores = scores[scores["trial_id"] == base["trial_id"]].drop(columns="trial_id")
    if base_scores.empty:
        return _nothing_to_compare(f"The {baseline!r} trial {base['trial_id']} has no per-image scores.")
    base_seeds = seed_metrics(study, base["trial_id"], split)[metric]
    rows = []
    for _, top in chosen[chosen["variant"] != baseline].iterrows():
        pairs = scores[scores["trial_id"] == top["trial_id"]].merge(
            base_scores, on=["seed", "image_id"], suffixes=("", "_base")
        )
        if pairs.empty:
            continue
        seeds = seed_metrics(study, top["trial_id"], split)[metric]
        seed_d = (seeds - base_seeds).dropna().to_numpy(float)  # aligned on the seed index
        image_d = pairs["miou"].to_numpy(float) - pairs["miou_base"].to_numpy(float)
        row = _paired_row(top, base, split, seed_d, image_d)
        row.update(_bootstrap(pairs, metric, resamples), teacher_margin=teacher_margin(study, base, top))
        rows.append(row)
    if not rows:
        if len(chosen) == 1:
            return _nothing_to_compare(f"Only the {baseline!r} variant has scores: nothing to compare.")
        return _nothing_to_compare("No variant's trial shares (seed, image) pairs with the baseline's.")
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _bootstrap(pairs: pd.DataFrame, metric: str, resamples: int) -> dict[str, float]:
    """hierarchical_bootstrap of the difference in `metric`'s per-image score over a comparison's
    (seed, image) pairs."""
    if metric not in IMAGE_SCORES:
        return {}  # the columns stay NaN
    score = IMAGE_SCORES[metric]
    d = pairs.assign(d=score(pairs["miou"].to_numpy(float)) - score(pairs["miou_base"].to_numpy(float)))
    images = list(dict.fromkeys(d["image_id"]))  # the order the per-image rows list them
    grid = d.pivot_table(index="seed", columns="image_id", values="d", aggfunc="mean")[images]
    return hierarchical_bootstrap(grid.to_numpy(float), frame_blocks(images), resamples)


def _paired_row(top: pd.Series, base: pd.Series, split: str, seed_d: np.ndarray, image_d: np.ndarray) -> dict:
    image_p, effect = wilcoxon_rank_biserial(image_d)
    mean = float(seed_d.mean()) if seed_d.size else math.nan
    sign = mean if seed_d.size else float(image_d.mean())
    return {
        "variant": top["variant"],
        "trial_id": top["trial_id"],
        "baseline_trial": base["trial_id"],
        "split": split,
        "n_seeds": int(seed_d.size),
        "mean_diff": mean,
        "sd_diff": float(seed_d.std(ddof=1)) if seed_d.size > 1 else math.nan,
        "p_value": paired_t(seed_d),
        "seeds_needed": seeds_needed(seed_d),
        "n_pairs": len(image_d),
        "image_mean_diff": float(image_d.mean()),
        "image_p_value": image_p,
        "effect_size": effect,
        "better": top["variant"] if sign > 0 else base["variant"] if sign < 0 else "tie",
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
