"""kd: knowledge distillation for semantic segmentation (datasets, models, losses, recipes, metrics).

Knows nothing of Ray or Optuna; usable alone from a notebook.
"""
