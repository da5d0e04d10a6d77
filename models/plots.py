"""Evaluation plots (matplotlib, headless): curves, confusion matrix, ROC, sample grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn import metrics as skm  # noqa: E402
from sklearn.preprocessing import label_binarize  # noqa: E402

from iam_writers_tfds import atomic  # noqa: E402


def _save(fig, out: Path, dpi: int) -> None:
    with atomic.replaced(out) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)


def curves(history_csv: Path, out: Path) -> None:
    hist = pd.read_csv(history_csv)
    keys = [k for k in ("loss", "accuracy") if k in hist]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot(hist["epoch"] + 1, hist[key], label=f"train {key}")
        if f"val_{key}" in hist:
            ax.plot(hist["epoch"] + 1, hist[f"val_{key}"], label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    _save(fig, out, 90)


ANNOTATE_UP_TO = 30  # writers; beyond this the counts in the cells are too small to read


def confusion_matrices(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(writer indices present, line counts, recall): counts normalised per true writer, so
    that a writer with 400 lines does not take the whole colour scale from writers with 30."""
    present = np.unique(np.concatenate([y_true, y_pred]))
    counts = skm.confusion_matrix(y_true, y_pred, labels=present)
    rows = counts.sum(axis=1, keepdims=True)
    return present, counts, np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)


def confusion(y_true, y_pred, labels: list[str], out: Path) -> None:
    """Colour: the share of each true writer's lines given to each writer (recall on the
    diagonal); numbers: line counts, when there are few enough writers to read them."""
    present, counts, recall = confusion_matrices(y_true, y_pred)
    size = min(14, 3 + 0.3 * len(present))
    fig, ax = plt.subplots(figsize=(size, size))
    skm.ConfusionMatrixDisplay(recall, display_labels=[labels[i] for i in present]).plot(
        ax=ax, colorbar=True, include_values=False, xticks_rotation="vertical",
        im_kw={"vmin": 0, "vmax": 1})
    ax.set(xlabel="predicted writer", ylabel="true writer")
    if len(present) <= ANNOTATE_UP_TO:
        for (i, j), n in np.ndenumerate(counts):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                        color="white" if recall[i, j] < 0.5 else "black")
    ax.set_title("line-level confusion matrix\n(colour: share of the true writer's lines; "
                 + ("numbers: lines)" if len(present) <= ANNOTATE_UP_TO else "per row)"),
                 fontsize=9)
    fig.tight_layout()
    _save(fig, out, 90)


def roc(scores: np.ndarray, y: np.ndarray, verification_roc, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if verification_roc is not None:
        fpr, tpr = verification_roc
        ax.plot(fpr, tpr, label="verification (same writer?)")
    if scores.shape[1] > 1:
        onehot = label_binarize(y, classes=np.arange(scores.shape[1]))
        if onehot.shape[1] == 1:
            onehot = np.hstack([1 - onehot, onehot])
        fpr, tpr, _ = skm.roc_curve(onehot.ravel(), scores.ravel())
        ax.plot(fpr, tpr, label=f"identification, micro AUC {skm.auc(fpr, tpr):.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    _save(fig, out, 90)


def samples(cfg, split: str, labels: list[str], predicted: dict, out: Path, n: int = 12) -> None:
    """The notebooks' visualisation: test images titled with true and predicted writer."""
    import tensorflow_datasets as tfds

    from pipelines import load_split

    ds = tfds.as_numpy(load_split(cfg.config, split, cfg.data_dir).take(n))
    fig, axes = plt.subplots(n // 2, 2, figsize=(12, 1.3 * n))
    for ax, ex in zip(axes.ravel(), ds):
        import cv2

        img = cv2.imdecode(np.frombuffer(ex["image"], np.uint8), cv2.IMREAD_GRAYSCALE)
        pred = predicted.get(ex["image_id"], -1)
        ok = pred == ex["writer"]
        ax.imshow(img, cmap="gray", aspect="auto")
        ax.set_title(f"true {labels[ex['writer']]}  predicted {labels[pred]}",
                     color="green" if ok else "red", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    _save(fig, out, 80)


def write_all(folder: Path, history_csv: Path, y_true, y_pred, labels, scores, y_idx,
              verification_roc, cfg, split, predicted) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if history_csv.is_file():
        curves(history_csv, folder / "curves.png")
    confusion(y_true, y_pred, labels, folder / "confusion.png")
    roc(scores, y_idx, verification_roc, folder / "roc.png")
    samples(cfg, split, labels, predicted, folder / "samples.png")
