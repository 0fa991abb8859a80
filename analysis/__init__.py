"""Study results as tables and an interactive report. Reads a run directory's files only.

    import analysis
    study = analysis.load("runs/default")  # .trials, .per_image (val), .final, .test_per_image, .curves
    analysis.method_summary(study)         # chosen trial per variant on test, 95 % intervals over seeds
    analysis.paired_comparison(study)      # against the baseline: per seed (t, Holm), per image (Wilcoxon)
    python -m analysis.report runs/default # writes runs/default/report.html

A variant is what the tables and figures compare: a method, or one point of a grid over it
("esd r=0.5"); `analysis.variants(trials)` names each trial's.
"""

from analysis.load import Study, load, variants
from analysis.tables import failed_trials, method_summary, paired_comparison

__all__ = [
    "Study",
    "load",
    "variants",
    "method_summary",
    "paired_comparison",
    "failed_trials",
    "write_report",
]


def __getattr__(name):
    # Imported on first use: `python -m analysis.report` warns when the package imported it already.
    if name == "write_report":
        from analysis.report import write_report

        return write_report
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
