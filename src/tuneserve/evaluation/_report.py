"""HTML reports with plots, readable offline (every image is embedded as PNG data)."""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from ._scored import Evaluation

if TYPE_CHECKING:
    from ._cv import CrossValidation

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
    "img{max-width:100%;margin:0.5em 0}"
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _png(fig: Any) -> str:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def confusion_plot(matrix: list[list[int]], labels: list[str]) -> str:
    plt = _pyplot()
    counts = np.asarray(matrix)
    size = min(3.5 + 0.45 * len(labels), 12)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix")
    if len(labels) <= 20:
        for (i, j), n in np.ndenumerate(counts):
            color = "white" if n > counts.max() / 2 else "black"
            ax.text(j, i, str(n), ha="center", va="center", color=color, fontsize=8)
    return _png(fig)


def roc_plot(y: np.ndarray, proba: np.ndarray, labels: list[str]) -> str:
    from sklearn.metrics import auc, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    shown = [1] if len(labels) == 2 else range(len(labels))
    for k in shown:
        if (y == k).all() or not (y == k).any():
            continue  # no curve without both positives and negatives
        fpr, tpr, _ = roc_curve(y == k, proba[:, k])
        ax.plot(fpr, tpr, label=f"{labels[k]} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC (one vs rest)" if len(labels) > 2 else "ROC")
    if len(labels) <= 12:
        ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def per_class_plot(per_class: dict[str, dict[str, float]]) -> str:
    plt = _pyplot()
    names = list(per_class)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(min(3 + 0.6 * len(names), 14), 3.5))
    for offset, key in zip((-0.27, 0, 0.27), ("precision", "recall", "f1"), strict=True):
        ax.bar(x + offset, [per_class[n][key] for n in names], width=0.27, label=key)
    ax.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title("per class")
    ax.legend(fontsize=8)
    return _png(fig)


def reliability_plot(y: np.ndarray, proba: np.ndarray) -> str:
    from sklearn.calibration import calibration_curve

    plt = _pyplot()
    correct = (proba.argmax(axis=1) == y).astype(int)
    accuracy, confidence = calibration_curve(correct, proba.max(axis=1), n_bins=10)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(confidence, accuracy, marker="o", label="model")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfectly calibrated")
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability")
    ax.legend(fontsize=8)
    return _png(fig)


def regression_plot(y: np.ndarray, pred: np.ndarray) -> str:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    left.scatter(y, pred, s=8, alpha=0.6)
    low, high = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    left.plot([low, high], [low, high], "k--", linewidth=0.8)
    left.set_xlabel("true")
    left.set_ylabel("predicted")
    left.set_title("predicted vs true")
    right.hist(pred - y, bins=30)
    right.set_xlabel("residual (predicted - true)")
    right.set_title("residuals")
    return _png(fig)


def learning_curves(history: list[dict[str, float]]) -> str:
    keys = [k for k in history[0] if k != "epoch"] if history else []
    if not keys:
        return ""
    plt = _pyplot()
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if "loss" not in k and not k.startswith("lr")]
    groups = [g for g in (losses, others) if g]
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.5), squeeze=False)
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(history)]
    for ax, group in zip(axes[0], groups, strict=True):
        for key in group:
            ax.plot(epochs, [r.get(key, np.nan) for r in history], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    axes[0][0].set_title("learning curves")
    return _png(fig)


def metrics_table(metrics: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{e.value:.4f}</td><td>"
        + (f"{e.low:.4f} - {e.high:.4f}" if e.low is not None else "")
        + "</td></tr>"
        for name, e in metrics.items()
    )
    return f"<table><tr><th>metric</th><th>value</th><th>95% interval</th></tr>{rows}</table>"


def page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def evaluation_report(evaluation: Evaluation, history: list[dict[str, float]] | None = None) -> str:
    """One evaluation as a self-contained HTML page."""
    return page(f"Evaluation of {evaluation.name}", _evaluation_body(evaluation, history))


def _evaluation_body(e: Evaluation, history: list[dict[str, float]] | None = None) -> str:
    parts = [
        f"<p>{html.escape(e.name)} ({e.task}) on {html.escape(e.data)}: {len(e.y)} rows, "
        f"{html.escape(e.rows)}. Computed through ONNX Runtime on the package "
        f"<code>{html.escape(e.package)}</code>; intervals are bootstrap 95%.</p>",
        metrics_table(e.metrics),
    ]
    if e.task == "classification" and e.labels:
        parts.append(confusion_plot(e.details["confusion_matrix"], e.labels))
        parts.append(roc_plot(e.y, e.output, e.labels))
        parts.append(per_class_plot(e.details["per_class"]))
        parts.append(reliability_plot(e.y, e.output))
    else:
        parts.append(regression_plot(e.y, e.output))
    if history:
        parts.append(learning_curves(history))
    return "".join(parts)


CV_SHOWN = ("accuracy", "f1_macro", "roc_auc", "log_loss", "ece", "mse", "mae", "r2")


def cv_spread_plot(fold_metrics: list[dict[str, float]]) -> str:
    """Each fold's value of the main metrics, with their mean."""
    plt = _pyplot()
    names = [m for m in CV_SHOWN if m in fold_metrics[0]]
    fig, axes = plt.subplots(1, len(names), figsize=(2.2 * len(names) + 1, 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        values = [m[name] for m in fold_metrics]
        ax.scatter(np.zeros(len(values)), values, alpha=0.7)
        ax.axhline(float(np.mean(values)), color="k", linewidth=0.8)
        ax.set_xticks([])
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"spread over {len(fold_metrics)} folds (line: mean)", fontsize=10)
    return _png(fig)


def cv_report(result: CrossValidation) -> str:
    """A cross-validation as a self-contained HTML page: the summary over folds, the
    spread plot, each fold's metrics, then the pooled out-of-fold evaluation."""
    names = [m for m in result.summary if m in CV_SHOWN] or list(result.summary)
    summary = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{result.summary[m]['mean']:.4f}</td>"
        f"<td>{result.summary[m]['std']:.4f}</td><td>{result.summary[m]['low']:.4f} - "
        f"{result.summary[m]['high']:.4f}</td></tr>"
        for m in result.summary
    )
    folds = "".join(
        f"<tr><td>fold {k}</td>"
        + "".join(f"<td>{fm.get(m, float('nan')):.4f}</td>" for m in names)
        + "</tr>"
        for k, fm in enumerate(result.fold_metrics)
    )
    body = (
        f"<p>{result.folds}-fold cross-validation of {html.escape(result.backbone)} "
        f"({html.escape(result.strategy)}) on {html.escape(result.data)}: {len(result.y)} "
        f"rows, stratified, seed {result.seed}. Every fold model is scored through ONNX "
        "Runtime on the fold it never saw.</p>"
        "<h2>Over folds</h2><table><tr><th>metric</th><th>mean</th><th>std</th>"
        f"<th>95% t-interval of the mean</th></tr>{summary}</table>"
        + cv_spread_plot(result.fold_metrics)
        + "<table><tr><th></th>"
        + "".join(f"<th>{html.escape(m)}</th>" for m in names)
        + f"</tr>{folds}</table><h2>Out-of-fold predictions, pooled</h2>"
        + _evaluation_body(result.as_evaluation())
    )
    return page(f"Cross-validation of {result.backbone} on {result.data}", body)
