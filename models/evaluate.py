"""`iam-writers evaluate`: honest per-image and per-form metrics, and the plots.

Patch models are scored by averaging the log-probabilities of an image's inked windows
(per image) or of all its form's windows (per form). Embedding models identify by the
nearest writer centroid (the mean unit embedding of each writer's training lines, as the
export's gallery holds it) and are also scored on verification pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from iam_writers_tfds import atomic
from models.config import CALIBRATION_FILE, run_labels, trained_run


def aggregate(values: np.ndarray, groups: np.ndarray, keep: np.ndarray | None = None):
    """Mean of `values` rows per group, over the rows in `keep` (all rows of a group when
    none of its rows is kept). Returns (sorted group ids, [n_groups, ...] means)."""
    keep = np.ones(len(values), bool) if keep is None else keep
    ids, inverse = np.unique(groups, return_inverse=True)
    out = np.zeros((len(ids),) + values.shape[1:], np.float64)
    for g in range(len(ids)):
        rows = inverse == g
        chosen = rows & keep if (rows & keep).any() else rows
        out[g] = values[chosen].mean(axis=0)
    return ids, out


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def verification(embeddings: np.ndarray, labels: np.ndarray) -> dict:
    """ROC-AUC, EER, its threshold and TAR at FAR=1% over all pairs of `embeddings`
    (cosine similarity, L2-normalised rows)."""
    iu = np.triu_indices(len(labels), k=1)
    sims = (embeddings @ embeddings.T)[iu]
    same = (labels[:, None] == labels[None, :])[iu].astype(int)
    return roc_figures(same, sims)


def roc_figures(same: np.ndarray, sims: np.ndarray) -> dict:
    """ROC-AUC, EER, its threshold and TAR at FAR=1% of similarity scores `sims` for
    same-writer (1) and different-writer (0) comparisons `same`."""
    if same.min() == same.max():
        return {"note": "no pairs of both kinds: needs two or more images of some writer"}
    fpr, tpr, thr = skm.roc_curve(same, sims)
    i = int(np.nanargmin(np.abs(fpr - (1 - tpr))))
    return {
        "roc_auc": float(skm.roc_auc_score(same, sims)),
        "eer": float((fpr[i] + 1 - tpr[i]) / 2),
        "eer_threshold": float(thr[i]),
        "tar_at_far_1pct": float(np.interp(0.01, fpr, tpr)),
        "n_pairs": int(len(same)),
        "_roc": (fpr, tpr),
    }


def open_set_scores(sims: np.ndarray, writers: np.ndarray, present: np.ndarray,
                    unknown: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) of open-set identification from scores [N, W] of images against
    the `present` writers: an image's score for its own writer (should pass) and its best
    score for any other writer (as if its writer were not enrolled; should be rejected),
    read from `unknown`, the same scores with the own writer absent, where a score depends
    on the gallery (`runtime.fuse`'s `absent`)."""
    own = writers[:, None] == present[None, :]
    keep = own.any(axis=1)
    strangers = np.where(own, -np.inf, sims if unknown is None else unknown)
    return sims[keep][own[keep]], strangers[keep].max(axis=1)


def open_set_figures(sims: np.ndarray, writers: np.ndarray, present: np.ndarray) -> dict:
    """ROC figures of open-set identification (`open_set_scores`)."""
    genuine, impostor = open_set_scores(sims, writers, present)
    same = np.concatenate([np.ones(len(genuine), int), np.zeros(len(impostor), int)])
    return roc_figures(same, np.concatenate([genuine, impostor]))


def far_threshold(sims: np.ndarray, writers: np.ndarray, present: np.ndarray,
                  far: float, unknown: np.ndarray | None = None) -> dict:
    """The lowest score threshold that accepts at most `far` of the queries whose writer is
    not enrolled (their best score against the others, `open_set_scores`, with `unknown`),
    and the rates it gives: `far` measured, and `frr`, the share of genuine queries answered
    unknown."""
    genuine, impostor = open_set_scores(sims, writers, present, unknown)
    t = float(np.nextafter(np.quantile(impostor, 1 - far, method="higher"), np.inf))
    return {"threshold": t, "far_target": far, "far": float((impostor >= t).mean()),
            "frr": float((genuine < t).mean()), "n_genuine": int(len(genuine)),
            "n_impostor": int(len(impostor))}


def interval(count: int, n: int, level: float = 0.95, design_effect: float = 1.0,
             clusters: int | None = None) -> list[float]:
    """The exact (Clopper-Pearson) `level` interval of a rate seen `count` times in `n`
    trials: a rate measured on a few dozen calibration queries is loose, and this says how
    loose (none in 11 still allows 28%). Trials that come in `clusters` that err together
    (the queries of one writer) count as Korn and Graubard's effective sample size: `n` over
    their `design_effect` (at least 1), times (t(n - 1) / t(clusters - 1))^2 for the
    clusters' fewer degrees of freedom (Korn & Graubard 1998, Survey Methodology 24(2))."""
    alpha = 1 - level
    n_eff = n / max(design_effect, 1.0)
    if clusters is not None and 1 < clusters < n:
        n_eff *= (stats.t.ppf(1 - alpha / 2, n - 1)
                  / stats.t.ppf(1 - alpha / 2, clusters - 1)) ** 2
    x = count / n * n_eff
    low = stats.beta.ppf(alpha / 2, x, n_eff - x + 1) if count else 0.0
    high = stats.beta.ppf(1 - alpha / 2, x + 1, n_eff - x) if count < n else 1.0
    return [float(low), float(high)]


def design_effect(hits: np.ndarray, clusters: np.ndarray,
                  crossed: np.ndarray | None = None) -> float:
    """How far a rate over trials in `clusters` varies beyond independent trials' (Kish's
    design effect): the clusters' with-replacement variance of the ratio over the
    independent trials' unbiased one, at least 1; 1 where every trial or none hit, or all
    are one cluster, which leave nothing to measure it by. Every trial its own cluster
    gives exactly 1. With `crossed`, a second grouping of the same trials (a pair's
    enrolled writer beside its query's), Cameron, Gelbach and Miller's two-way variance:
    the two groupings' less their intersection's, at least either's alone."""
    hits = np.asarray(hits, np.float64)
    n, p = len(hits), float(np.mean(hits)) if len(hits) else 0.0
    if not 0 < p < 1:
        return 1.0
    variance = _cluster_variance(hits, p, clusters)
    if crossed is not None:
        one, other = (np.unique(c, return_inverse=True)[1] for c in (clusters, crossed))
        across = _cluster_variance(hits, p, other)
        both = _cluster_variance(hits, p, one * (other.max() + 1) + other)
        variance = max(variance + across - both, variance, across)
    return max(1.0, variance / (p * (1 - p) / (n - 1)))


def _cluster_variance(hits: np.ndarray, p: float, clusters: np.ndarray) -> float:
    """The with-replacement variance of the mean `p` of `hits` over their `clusters`; 0 for
    one cluster, which leaves nothing to measure it by."""
    ids, which = np.unique(clusters, return_inverse=True)
    m = len(ids)
    if m < 2:
        return 0.0
    spread = np.bincount(which, hits) - p * np.bincount(which)
    return m / (m - 1) * float((spread ** 2).sum()) / len(hits) ** 2


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def load_run(run_dir: Path):
    """(config, labels, model) of a run directory; the model is loaded in safe mode, which
    `trained_run` has already checked that it passes."""
    import keras

    import models.losses  # noqa: F401 - registers the custom objects
    import models.zoo  # noqa: F401

    cfg = trained_run(run_dir)
    labels = run_labels(run_dir)
    return cfg, labels, keras.models.load_model(Path(run_dir) / "model.keras", safe_mode=True)


def calibration_writers(run_dir: Path) -> list[str]:
    """The writers a run held out of training for calibration (none for older runs)."""
    return _held_out(run_dir).get("writers", [])


def calibration_forms(run_dir: Path) -> list[str]:
    """The validation forms a classifier fitted on train + validation held out of training
    for calibration (none for other runs and older ones)."""
    return _held_out(run_dir).get("forms", [])


def _held_out(run_dir: Path) -> dict:
    path = Path(run_dir) / CALIBRATION_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def window_outputs(rt, images: list) -> tuple[list[int], list[dict[str, np.ndarray]]]:
    """(indices of the images with an inked window, their kept windows' outputs) through
    the runtime's preprocessing and the exported computation; an image with no inked
    window is one the deployed model refuses, so it is left out and counted."""
    from models.runtime import NoInkError

    kept, outs = [], []
    for i, (*_, image) in enumerate(images):
        try:
            outs.append(rt.outputs(image))
        except NoInkError:
            continue
        kept.append(i)
    return kept, outs


def mean_embeddings(outs: list[dict[str, np.ndarray]]) -> np.ndarray:
    """[N, D] unit mean embedding of each image's windows, as the runtime embeds a line."""
    return normalise(np.stack([o["embedding"].mean(axis=0) for o in outs]))


def evaluate(run_dir: Path, split: str = "test") -> dict:
    """Write `metrics_<split>.json` and `plots/` into the run dir; the test split's figures
    are also `metrics.json`, the run's headline metrics that export copies into its card.

    Lines are scored through the computation the exported model runs (`models.inference`:
    the runtime's preprocessing, one pass over each whole line), so these figures are the
    deployed model's: export's parity table shows the same accuracy for Keras."""
    from models import inference, zoo

    run_dir = Path(run_dir)
    cfg, labels, model = load_run(run_dir)
    if split == "train" or (split == "validation" and cfg.fit_on_validation):
        forms = calibration_forms(run_dir)
        print(f"note: {run_dir} trained on the {split} lines"
              f"{f' (but its {len(forms)} calibration forms)' if forms else ''}: these figures "
              "measure what it learnt, not how it names handwriting it has not seen "
              "(--split test does)", flush=True)
    rt = inference.line_model(model, cfg, labels)
    # writers held out for calibration are not known to the model: an open-set matter
    held = set(calibration_writers(run_dir))
    images = [i for i in inference.split_images(cfg, split) if labels[i[2]] not in held]
    kept, outs = window_outputs(rt, images)
    image_ids = np.array([images[i][0] for i in kept])
    forms = np.array([images[i][1] for i in kept])
    image_label = np.array([images[i][2] for i in kept])
    form_ids, form_of_image = np.unique(forms, return_inverse=True)
    form_label = np.array([image_label[form_of_image == f][0] for f in range(len(form_ids))])
    emb = mean_embeddings(outs)
    if cfg.by_gallery:
        train = [i for i in inference.split_images(cfg, "train") if labels[i[2]] not in held]
        train_kept, train_outs = window_outputs(rt, train)
        writers = np.array([train[i][2] for i in train_kept])
        class_of, centroids = aggregate(mean_embeddings(train_outs), writers)
        centroids = normalise(centroids)
        img_scores = emb @ centroids.T
        form_scores = normalise(aggregate(emb, forms)[1]) @ centroids.T
    else:
        class_of = np.arange(len(labels))
        img_scores = np.stack([o["log_probs"].mean(axis=0) for o in outs])
        windows = np.concatenate([o["log_probs"] for o in outs])
        form_scores = aggregate(windows, np.repeat(forms, [len(o["log_probs"]) for o in outs]))[1]
    to_class = lambda y: np.searchsorted(class_of, y)  # noqa: E731
    img_y, form_y = to_class(image_label), to_class(form_label)
    img_pred = class_of[img_scores.argmax(1)]
    result: dict = {
        "split": split, "model": cfg.model, "config": cfg.config,
        "top1": topk_accuracy(img_scores, img_y, 1),
        "top5": topk_accuracy(img_scores, img_y, 5),
        "form_top1": topk_accuracy(form_scores, form_y, 1),
        "n_images": int(len(image_ids)),
        "n_forms": int(len(form_ids)),
        "n_writers": int(len(np.unique(image_label))),
        "n_no_ink": len(images) - len(kept),
        "held_out_writers": len(held),
        "scored_by": "the exported model's whole-line computation (models/inference.py)",
    }
    present = np.unique(np.concatenate([image_label, img_pred]))
    result["per_writer"] = skm.classification_report(
        image_label, img_pred, labels=present, target_names=[labels[i] for i in present],
        output_dict=True, zero_division=0,
    )
    roc = None
    if cfg.by_gallery or zoo.embedding_model(model) is not None:
        ver = verification(emb, image_label)
        roc = ver.pop("_roc", None)
        result["verification"] = ver
    from models import plots

    plots.write_all(run_dir / "plots", run_dir / "history.csv", image_label, img_pred, labels,
                    img_scores, img_y, roc, cfg, split, dict(zip(image_ids, img_pred)))
    text = json.dumps(result, indent=2)
    atomic.write_text(run_dir / f"metrics_{split}.json", text)
    if split == "test":
        atomic.write_text(run_dir / "metrics.json", text)
    return result
