"""What the study driver and its trials hand each other.

The driver makes a TrialChoice for every trial, from a grid point or from the searcher's
suggestion alike; the trial trains it and answers with a TrialReport; the driver turns the
pair into one row of trials.parquet (kd.run_folder names its columns).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from kd.io import content_key
from kd.metrics import METRICS
from kd.run_folder import PREDICTIONS, STEPS
from search_spaces.base import STUDENT


@dataclass(frozen=True)
class TrialChoice:
    """One configuration to train.

    `values`: the parameters the search chose or the grid crossed, by their names in the search
    space (`r`, `feature_lr`, ...), which are also their table columns. `overrides`: every value
    the trial trains with, keyed by the kd.methods override it sets (fixed ones included).
    `variant`: what summaries compare: a grid point's name ("esd r=0.5"), else the method; with a
    teacher axis, followed by " @ <teacher>". `teacher`: the teacher it distils from or starts
    from (None: the method uses none or, in a trials row that names no teacher, the study's).
    """

    method: str
    overrides: dict[str, Any]
    split_point: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    variant: str = ""
    teacher: str | None = None

    def __post_init__(self):
        if not self.variant:
            object.__setattr__(self, "variant", self.method)

    @property
    def key(self) -> str:
        """The trial's name on disk (checkpoints, predictions): the same for the same configuration."""
        fields = dataclasses.asdict(self)
        if self.teacher is None:  # a field left unused keeps out of the key and the names made from it
            del fields["teacher"]
        return content_key(fields)

    @property
    def recipe_overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.overrides.items() if not k.startswith(STUDENT)}

    @property
    def student_options(self) -> dict[str, Any]:
        return {k[len(STUDENT) :]: v for k, v in self.overrides.items() if k.startswith(STUDENT)}

    @classmethod
    def from_row(cls, row: dict) -> TrialChoice:
        """The choice a trials.parquet row was trained with (its `values` left out)."""
        import json

        point = row["split_point"] if isinstance(row["split_point"], str) else None  # parquet: NaN for none
        teacher = row.get("teacher") if isinstance(row.get("teacher"), str) else None
        return cls(row["method"], json.loads(row["overrides"]), point, {}, row["variant"], teacher)

    def __str__(self) -> str:  # Ray names trial folders after this
        return f"{self.variant}-{self.key[:8]}"


@dataclass
class TrialReport:
    """What one trial sends back: means and population standard deviations over its seeds, every
    seed's per-image scores and learning curves, and what the run cost. A trial that failed in its
    own code carries only `error`."""

    seeds: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # miou, miou_std, miou_img, ...
    degenerate: bool | None = None  # some seed predicts one class everywhere
    stage1_feature_ratio: float | None = None  # see kd.engine.Engine.feature_ratio
    stage1_feature_ratio_test: float | None = None  # the same on test images (Engine.test_feature_ratio)
    steps: dict[str, float] = field(default_factory=dict)  # optimiser steps per stage, mean over seeds
    params: int | None = None
    flops: float | None = None
    per_image: list[dict] = field(default_factory=list)  # seed, id, miou
    curves: list[dict] = field(default_factory=list)  # seed, epoch, stage, losses, lr, metrics
    seconds: float | None = None
    node: str | None = None
    workers: int | None = None  # the resources it ran on: workers, CPUs and GPUs per worker
    cpus: float | None = None
    gpus: float | None = None
    precision: str | None = None  # the arithmetic it trained in: fp32, bf16 or fp16 (kd.engine.precision)
    views: str | None = None  # "fresh" or the number of views in the bank, as text
    error: str | None = None
    students: str | None = None  # the folder of the trained students' weights, seed<k>.pt, on the worker

    def objectives(self) -> dict[str, float]:
        """The means a searcher or scheduler reads."""
        return {name: self.metrics[name] for name in METRICS if name in self.metrics}

    @classmethod
    def from_dict(cls, values: dict) -> TrialReport:
        return cls(**values)

    def to_row(
        self, trial_id: str, choice: TrialChoice, status: str, trial_dir: str | None = None, students=None
    ) -> dict:
        """The trial's row of trials.parquet: scores only for a completed trial. `students`: where
        its students' weights are kept (only a variant's chosen trial keeps them)."""
        completed = status == "completed"
        row = {
            "trial_id": trial_id,
            "method": choice.method,
            "variant": choice.variant,
            "status": status,
            "teacher": choice.teacher,
            "split_point": choice.split_point,
        }
        row.update({name: value for name, value in choice.values.items() if name != "split_point"})
        row.update(overrides=_json(choice.overrides), seeds=self.seeds or None)
        for name in METRICS:
            row[name] = self.metrics.get(name) if completed else None
            row[f"{name}_std"] = self.metrics.get(f"{name}_std") if completed else None
        row.update(
            degenerate=self.degenerate if completed else None,
            stage1_feature_ratio=self.stage1_feature_ratio,
            stage1_feature_ratio_test=self.stage1_feature_ratio_test,
        )
        row.update({f"{STEPS}{stage}": steps for stage, steps in self.steps.items()})
        row.update(
            params=self.params,
            flops=self.flops,
            duration_s=self.seconds,
            error=self.error,
            trial_dir=trial_dir,
            node=self.node,
            workers=self.workers,
            cpus=self.cpus,
            gpus=self.gpus,
            precision=self.precision,
            views=self.views,
            predictions=f"{PREDICTIONS}/{choice.key}.npz",
            students=students,
        )
        return row


def short(value) -> str:
    """A value as names and progress lines show it ("r=0.5", "lr=0.00316")."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _json(values: dict) -> str:
    import json

    return json.dumps(values, sort_keys=True, default=str)
