"""Study results as tables and an interactive report. Reads a run directory's files only.

    import analysis
    study = analysis.load("runs/default")      # study.trials, study.per_image, study.curves
    python -m analysis.report runs/default     # writes runs/default/report.html
"""
from analysis.load import Study, load

__all__ = ["Study", "load"]
