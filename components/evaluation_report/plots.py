"""The report's figures, drawn with matplotlib from TFMA's plot metrics, as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display: figures are only ever written to files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def confusion_matrix(counts: list[list[int]], class_names: list[str]) -> bytes:
    """Rows: true class, columns: predicted class; each cell shows count and row rate."""
    matrix = np.asarray(counts, dtype=float)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.9 * len(class_names)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="rate of the true class")
    axes.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    for row in range(len(class_names)):
        for col in range(len(class_names)):
            axes.text(
                col,
                row,
                f"{int(matrix[row, col])}\n{rates[row, col]:.0%}",
                ha="center",
                va="center",
                color="white" if rates[row, col] > 0.5 else "black",
            )
    axes.set_title("Confusion matrix (eval split)")
    return _png(figure)


def curves(per_class: dict[str, dict[str, list[float]]], kind: str) -> bytes:
    """kind "roc": x=false positive rate, y=recall; "pr": x=recall, y=precision."""
    figure, axes = plt.subplots(figsize=(5, 4.2))
    for name, points in per_class.items():
        if kind == "roc":
            axes.plot(points["fpr"], points["recall"], label=name)
        else:
            axes.plot(points["recall"], points["precision"], label=name)
    if kind == "roc":
        axes.plot([0, 1], [0, 1], "k:", linewidth=1, label="chance")
        axes.set_xlabel("false positive rate")
        axes.set_ylabel("true positive rate (recall)")
        axes.set_title("ROC, one class vs the rest")
    else:
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_title("Precision-recall, one class vs the rest")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    return _png(figure)


def calibration(per_class: dict[str, dict[str, list[float]]]) -> bytes:
    """Reliability diagram: mean predicted probability vs observed frequency per bucket."""
    figure, axes = plt.subplots(figsize=(5, 4.2))
    axes.plot([0, 1], [0, 1], "k:", linewidth=1, label="perfectly calibrated")
    for name, points in per_class.items():
        axes.plot(points["predicted"], points["observed"], "o-", label=name)
    axes.set_xlabel("mean predicted probability of the class")
    axes.set_ylabel("observed frequency of the class")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_title("Calibration (reliability)")
    axes.legend(loc="upper left", fontsize=8)
    return _png(figure)


def per_class_bars(precision: dict[str, float], recall: dict[str, float]) -> bytes:
    names = list(recall)
    x = np.arange(len(names))
    figure, axes = plt.subplots(figsize=(1.5 + 1.1 * len(names), 3.6))
    axes.bar(x - 0.2, [precision[n] for n in names], 0.4, label="precision")
    axes.bar(x + 0.2, [recall[n] for n in names], 0.4, label="recall")
    axes.set_xticks(x, names, rotation=30, ha="right")
    axes.set_ylim(0, 1.05)
    axes.legend(fontsize=8)
    axes.set_title("Per-class precision and recall")
    return _png(figure)
