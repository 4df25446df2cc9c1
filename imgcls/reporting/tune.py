"""``imgcls tune``'s summary.png: how the trials went and which settings mattered."""

from __future__ import annotations

from pathlib import Path

from .plots import save_figure, pyplot


def plot_tune_summary(numbers: list[int], values: list[float], importances: dict[str, float], path: Path) -> Path:
    """Left: each completed trial's val accuracy and the best so far; right: optuna's parameter importances."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4.2))
    left.plot(numbers, values, "o", label="trial")
    left.plot(numbers, [max(values[: i + 1]) for i in range(len(values))], "-", label="best so far")
    left.set_xlabel("trial")
    left.set_ylabel("val accuracy")
    left.set_title("Optimization history")
    left.grid(alpha=0.3)
    left.legend()
    if importances:
        names = list(importances)[::-1]
        right.barh(names, [importances[n] for n in names])
        right.set_xlabel("importance")
    else:
        right.text(0.5, 0.5, "needs 2+ completed trials\nwith varying settings", ha="center", va="center")
    right.set_title("Parameter importances")
    save_figure(fig, path)
    return path
