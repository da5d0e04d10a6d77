"""`iam-writers export`: a run directory -> SavedModel + TFLite variants + card + parity.

exports/NAME/ holds saved_model/ (signatures `classify`, `embed`, `patches`),
model_{float32,float16,dynamic,int8}.tflite (the `patches` signature, converted from the
SavedModel), model_card.json, labels.json, parity.json and parity.md. The folder is built
under a temporary name and renamed when complete, so a killed export leaves nothing at
its final path; a failed int8 parity gate leaves nothing either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from iam_writers_tfds import atomic
from iam_writers_tfds.console import progress
from models import calibration, inference, runtime
from models.config import (
    COHORT_FILE,
    COHORT_TOP,
    PAGE_MIN_HEIGHT,
    VARIANTS,
    TrainConfig,
    new_folder,
)
from models.evaluate import (
    calibration_forms,
    calibration_writers,
    design_effect,
    far_threshold,
    interval,
    load_run,
    normalise,
    open_set_scores,
    verification,
)
from models.inference import input_spec, split_images, windows_fn
from models.runtime import descriptors
from models.runtime.evidence import rate_brief
from pipelines import PipelineConfig, ops, preprocess


class ExportError(RuntimeError):
    """The export cannot be made as asked; the message says what to pass instead."""


class DegradedExport(ExportError):
    """int8 fell below the parity gate; nothing was written."""


@dataclasses.dataclass
class ExportConfig:
    run: Path
    out: Path
    quantize: tuple[str, ...] = tuple(VARIANTS)
    allow_degraded: bool = False
    min_agreement: float = 0.97  # int8 top-1 agreement with Keras below this fails
    calibration_samples: int = 200
    threads: int = 2
    top_k: int = 5
    stride: int = 0  # window stride at inference; 0: the run's evaluation stride
    far: float = 0.01  # unknown-writer thresholds accept this share of writers not enrolled


    def __post_init__(self) -> None:
        self.run, self.out = Path(self.run), Path(self.out)
        unknown = [q for q in self.quantize if q not in VARIANTS]
        if unknown or not self.quantize:
            raise ValueError(f"unknown quantization {', '.join(unknown) or '(none given)'}; "
                             f"allowed: {', '.join(VARIANTS)}")
        if not 0 < self.far < 1:
            raise ValueError(f"far must be in (0, 1), got {self.far}")
        if self.stride < 0:
            raise ValueError(f"stride must be >= 0 (0: the run's), got {self.stride}")
        if not 100 <= self.calibration_samples <= 500:
            raise ValueError("calibration_samples must be in 100..500")


def serving_archive(model: keras.Model, cfg: TrainConfig, pcfg: PipelineConfig,
                    labels: list[str], centroids: np.ndarray | None,
                    top_k: int) -> keras.export.ExportArchive:
    """The SavedModel's three signatures, preprocessing in the graph where TF ops allow:

    * `windows`: float32 model input (one padded line [1, P, W, 1], or images [N, S, S, 3])
      -> per window {log_probs [N, C], embedding [N, D]} (the part that becomes TFLite;
      embedding-only models have no log_probs);
    * `classify`: one uint8 grayscale image [H, W, 1] of any size -> top-k `writer_ids`
      and `scores` (probabilities, or cosine similarity to training centroids);
    * `embed`: the same image -> its unit `embedding`.
    """
    features, head, windows = windows_fn(model, cfg, pcfg)
    names = tf.constant(labels)
    k = min(top_k, len(labels))

    def prepare(image):
        if pcfg.mode == "resize":
            rgb = ops.resize_rgb(image, pcfg.image_size, pcfg.keep_aspect)
            return ops.scale_input(rgb, pcfg)[None], tf.ones([1], bool)
        line = ops.normalize_line_graph(image, pcfg.patch_size, pcfg.line_band)
        line = ops.pad_line(line, pcfg.patch_size, pcfg.stride)
        # the runtime refuses a line without a kept window; the graph keeps them all
        keep = ops.kept_windows(ops.window_ink(line, pcfg.patch_size, pcfg.stride),
                                pcfg.min_ink)
        return (ops.scale_input(line, pcfg)[None],
                tf.logical_or(keep, tf.logical_not(tf.reduce_any(keep))))

    def embed(image):
        x, keep = prepare(image)
        emb = tf.boolean_mask(windows(x)["embedding"], keep)
        return {"embedding": tf.math.l2_normalize(tf.reduce_mean(emb, axis=0))}

    def classify(image):
        x, keep = prepare(image)
        out = windows(x)
        if head is None:
            emb = tf.math.l2_normalize(tf.reduce_mean(tf.boolean_mask(out["embedding"], keep), 0))
            scores = tf.linalg.matvec(tf.constant(centroids, tf.float32), emb)
        else:
            scores = tf.nn.softmax(tf.reduce_mean(tf.boolean_mask(out["log_probs"], keep), 0))
        top = tf.math.top_k(scores, k)
        return {"writer_ids": tf.gather(names, top.indices), "scores": top.values}

    archive = keras.export.ExportArchive()
    archive.track(features)
    if head is not None:
        archive.track(model)
    image_spec = [tf.TensorSpec([None, None, 1], tf.uint8, name="image")]
    archive.add_endpoint(runtime.SIGNATURE, windows, [input_spec(pcfg)])
    archive.add_endpoint("classify", classify, image_spec)
    archive.add_endpoint("embed", embed, image_spec)
    return archive


def _convert(saved_model: Path, variant: str, calibration: list[np.ndarray]) -> bytes:
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model),
                                                    signature_keys=[runtime.SIGNATURE])
    if variant != "none":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        conv.representative_dataset = lambda: ([x] for x in calibration)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def _fit_vlad(images: list, seed: int) -> descriptors.Vlad:
    """The RootSIFT + VLAD codebook, fitted on a seeded sample of the training lines: no
    calibration or test writer's handwriting shapes it."""
    print(f"fitting the RootSIFT + VLAD codebook on {min(VLAD_FIT_LINES, len(images))} "
          "training lines", flush=True)
    chosen = np.random.default_rng(seed).choice(len(images), min(VLAD_FIT_LINES, len(images)),
                                                replace=False)
    try:
        return descriptors.Vlad.fit([images[i][3] for i in chosen], seed=seed)
    except ValueError as err:
        raise ExportError(f"the training lines' RootSIFT + VLAD codebook: {err}") from None


def _calibration(rt: runtime.Model, images: list, n: int, seed: int) -> list[np.ndarray]:
    """`n` model inputs from the training images (lines, or single images) for int8 ranges."""
    chosen = np.random.default_rng(seed).choice(len(images), min(n, len(images)),
                                                replace=False)
    return [rt.inputs(images[i][3])[0][:1] for i in chosen]


def _features(rt: runtime.Model, images: list, descriptor: descriptors.Descriptor | None,
              what: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(writers [N], forms [N], unit embeddings [N, D], descriptor rows [N, K], or None
    without a descriptor) of the inked images through the runtime."""
    kept, emb = runtime.embed_inked(rt, [image for *_, image in images])
    counts = None if descriptor is None else np.stack(list(progress(
        descriptors.each(descriptor, [images[i][3] for i in kept]),
        f"descriptors of {what or 'the images'}", "image", total=len(kept))))
    forms = np.array([images[i][1] for i in kept])
    return np.array([images[i][2] for i in kept]), forms, emb, counts


def _parity(models: dict[str, runtime.Model], test: list, classes: np.ndarray) -> list[dict]:
    """Per variant on the test images: top-1 agreement with Keras, accuracy, largest
    probability difference, file size and median latency per image. `classes` are the
    writers (label indices) the scores are over, in order."""
    images = [image for *_, image in test]
    truth = np.searchsorted(classes, np.array([writer for *_, writer, _ in test]))
    scores, latency = {}, {}
    for name, model in models.items():
        rows, times = [], []
        for img in progress(images, f"parity {name}", "image", leave=False):
            start = time.perf_counter()
            rows.append(model.scores(img)[0])
            times.append(time.perf_counter() - start)
        scores[name], latency[name] = np.stack(rows), float(np.median(times)) * 1000
    ref = scores["keras"].argmax(1)
    table = []
    for name, model in models.items():
        s = scores[name]
        size = model.path.stat().st_size if model.path.suffix == ".tflite" else None
        table.append({
            "variant": name, "file": model.path.name if size else None, "size_bytes": size,
            "top1_agreement": float((s.argmax(1) == ref).mean()),
            "accuracy": float((s.argmax(1) == truth).mean()),
            "max_abs_prob_diff": float(np.abs(s - scores["keras"]).max()),
            "median_ms_per_image": latency[name], "n_images": len(images),
        })
    return table


def parity_markdown(table: list[dict]) -> str:
    lines = ["| variant | size | top-1 agreement | accuracy | max prob diff | ms / image |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in table:
        size = f"{r['size_bytes'] / 1024:.0f} KiB" if r["size_bytes"] else "(in memory)"
        lines.append(f"| {r['variant']} | {size} | {r['top1_agreement']:.3f} | "
                     f"{r['accuracy']:.3f} | {r['max_abs_prob_diff']:.4f} | "
                     f"{r['median_ms_per_image']:.1f} |")
    return "\n".join(lines) + "\n"


FUSION_STEP = 0.05  # the grid of fusion weights searched (each score's share)
VLAD_FIT_LINES = 400  # training lines the RootSIFT + VLAD codebook is fitted on
VLAD_FILE = "vlad.npz"
# the training writers' share in the cohort; the rest are different writers for the
# unknown-writer thresholds (docs/results.md, open set)
COHORT_SHARE = 0.5
UNKNOWN_RULE = ("threshold for a gallery of N writers: a + b ln N, fitted to the score that the "
                "best of n different-writer scores passes with probability far (tail: "
                "their empirical quantile, or for the cohort-normalised fused score a "
                "Gumbel's fitted by moments where too few queries lie beyond it), for n up to "
                "what the comparisons hold: every calibration form, and the first form of "
                "each training writer outside the cohort, enrolled alone and compared with the "
                "others' lines and forms (runtime.gallery_threshold); in a gallery of two "
                "or more, the best score plus lead.weight times its lead over the second "
                "is held to lead's threshold, measured the same way for n from 2 and "
                "interpolated in ln N, rising by b beyond the largest n "
                "(runtime.query_thresholds)")
UNKNOWN_DRAWS = 20  # random galleries drawn per query and size
# fewer calibration queries than this beyond the far point (lines: about 7 at 1%,
# documents: under 1) and the fused score's point is a fitted Gumbel tail's, not the
# empirical quantile, which one or two lookalike pairs set (docs/results.md, the document
# tail)
UNKNOWN_TAIL_QUERIES = 5
# the unknown-writer rule adds this share of the best writer's lead over the second to the
# best score: fewer genuine lines answered unknown, at fewer false accepts (docs/results.md,
# the lead rule)
UNKNOWN_LEAD = 0.5
# each enrolled writer's VLAD score an exemplar SVM against the cohort: fewer genuine
# queries answered unknown at the same rate of strangers accepted (docs/results.md,
# exemplar SVMs)
EXEMPLAR = {"method": "exemplar SVM per writer: its VLAD vector against the cohort's "
                      "(runtime.descriptors.exemplar_svms)",
            "c": descriptors.EXEMPLAR_C}
# a reference of so few lines gets LRs of its own; from 4 lines the form's weigh it as well
# (docs/results.md, LRs for a b of a few lines)
FEW_LINE_LRS = (1, 2, 3)
# a writer enrolled from so few lines gets an unknown-writer threshold of its own: the form's
# answered a sixth of its genuine lines unknown still at 4 lines (docs/results.md, a rule of
# its own for writers enrolled from 1 to 5 lines)
FEW_LINE_RULES = (1, 2, 3, 4, 5)
FEW_LINE_DRAWS = 3  # seeded draws of k lines a reference, the rule fitted to each
ENROLLED = ("each image's own writer vs the best other writer, each writer enrolled from one "
            "form")


def _enrolled_one_form(writers: np.ndarray, forms: np.ndarray, emb: np.ndarray,
                       counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """(writers [W], mean unit embedding [W, D], summed hinge counts [W, K], and the lines
    they were enrolled from) of each writer enrolled from one form (its first), as `enroll`
    would from a page."""
    present = np.unique(writers)
    rows = [(writers == w) & (forms == np.sort(forms[writers == w])[0]) for w in present]
    chosen = np.any(rows, axis=0)
    return (present, normalise(np.stack([emb[r].mean(0) for r in rows])),
            np.stack([counts[r].sum(0) for r in rows]),
            tuple(a[chosen] for a in (writers, forms, emb, counts)))


def _standardisation(sims: np.ndarray, writers: np.ndarray, present: np.ndarray) -> dict:
    """Mean and spread of different-writer similarities: fused scores keep their meaning
    (and their threshold) whatever the size of the gallery they are computed against."""
    other = writers[:, None] != present[None, :]
    return {"mean": float(sims[other].mean()), "std": float(sims[other].std())}


def _by_form(writers: np.ndarray, forms: np.ndarray, emb: np.ndarray, counts: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each form's lines as one document, as `identify --document` takes them and `enroll`
    stores them: (writers, forms, mean unit embeddings, summed hinge counts)."""
    ids = np.unique(forms)
    rows = [forms == f for f in ids]
    return (np.array([writers[r][0] for r in rows]), ids,
            normalise(np.stack([emb[r].mean(0) for r in rows])),
            np.stack([counts[r].sum(0) for r in rows]))


def _as_references(enrolled: tuple) -> tuple:
    """Enrolled writers (`_enrolled_one_form`) as references of comparisons: (writers, no
    form, mean unit embeddings, summed descriptor rows); no query's form is theirs."""
    return enrolled[0], np.full(len(enrolled[0]), ""), *enrolled[1:3]


def weight_grid(names: list[str], step: float = FUSION_STEP) -> np.ndarray:
    """Every weighting [G, len(names)] of the scores on a grid of `step`, summing to 1."""
    n = round(1 / step)
    grid = [w for w in itertools.product(range(n + 1), repeat=len(names)) if sum(w) == n]
    return np.array(grid, np.float64) / n


def _margin(scores: np.ndarray, writers: np.ndarray, present: np.ndarray,
            spread: bool) -> float:
    """The mean over the queries of enrolled writers (scores [Q, W] against `present`) of
    the own writer's score less the best other writer's (`open_set_scores`); with `spread`,
    each over the spread of the query's scores (cohort-normalised scores are already on
    that scale)."""
    genuine, impostor = open_set_scores(scores, writers, present)
    margin = genuine - impostor
    if spread:
        margin = margin / scores[np.isin(writers, present)].std(1)
    return float(np.mean(margin))


def _query_calibration(writers: np.ndarray, emb: np.ndarray, counts: np.ndarray,
                       enrolled: tuple, descriptor: descriptors.Descriptor,
                       far: float, cohort: runtime.Prepared | None) -> dict:
    """For one kind of query (lines, or documents) against the enrolled writers: each
    similarity's standardisation, the weights whose fused score (against the `cohort`,
    `runtime.fuse`) puts each query's own writer furthest above its best other writer on
    average (`_margin`), top-1 of each score, and the unknown-writer threshold of each score
    at `far` with the rates measured. The most queries named right was the rule before: on
    eight calibration writers it chose by chance among many ties and once gave the hinge
    0.9 of a line's score (docs/results.md, open set)."""
    present, enrolled_emb, enrolled_counts = enrolled[:3]
    sims = _prepared(enrolled_emb, enrolled_counts, descriptor, cohort).scores(emb, counts)
    against = None if cohort is None else cohort.scores(emb, counts)
    keep = np.isin(writers, present)
    label = np.searchsorted(present, writers[keep])
    cal = {name: _standardisation(s, writers, present) for name, s in sims.items()}
    names = list(sims)
    grid = weight_grid(names)

    def fused(w: np.ndarray, absent: np.ndarray | None = None) -> np.ndarray:
        return runtime.fuse(sims, {**cal, "weights": dict(zip(names, w))}, against, absent)

    best = grid[int(np.argmax([_margin(fused(w), writers, present, against is None)
                               for w in grid]))]
    cal["weights"] = {name: float(w) for name, w in zip(names, best)}
    sims["fused"] = fused(best)
    cal["top1"] = {name: float((s[keep].argmax(1) == label).mean()) for name, s in sims.items()}
    own = writers[:, None] == present[None, :]
    rates = {name: far_threshold(s, writers, present, far,
                                 fused(best, own) if name == "fused" else None)
             for name, s in sims.items()}
    cal["thresholds"] = {name: r.pop("threshold") for name, r in rates.items()}
    cal["rates"] = rates
    cal["n_queries"] = int(keep.sum())
    return cal


def _fusion(queries: tuple, enrolled: tuple, descriptor: descriptors.Descriptor, far: float,
            source: str, cohort: runtime.Prepared | None) -> dict:
    """The fusion of the embedding's and the descriptor's similarities, calibrated on the
    query lines, and on their forms as documents, against the `enrolled` writers (each from
    one form): a line and a document score on different scales."""
    writers, forms, emb, counts = queries
    doc_writers, _, doc_emb, doc_counts = _by_form(*queries)
    exemplar = {"exemplar": EXEMPLAR} if cohort is not None and descriptor.vlad else {}
    return {"descriptor": descriptor.name, "split": source, "compared": ENROLLED, **exemplar,
            "line": _query_calibration(writers, emb, counts, enrolled, descriptor, far, cohort),
            "document": _query_calibration(doc_writers, doc_emb, doc_counts, enrolled,
                                           descriptor, far, cohort)}


def _prepared(emb: np.ndarray, counts: np.ndarray, descriptor: descriptors.Descriptor,
              cohort: runtime.Prepared | None) -> runtime.Prepared:
    """Writers as `identify` prepares a gallery of them: with a cohort, the VLAD score each
    writer's exemplar SVM against it."""
    prepared = runtime.Prepared(emb, counts, descriptor)
    return prepared.exemplars(cohort) if cohort is not None else prepared


def _training_writers(rt: runtime.Model, train_images: list,
                      descriptor: descriptors.Descriptor) -> tuple:
    """`_enrolled_one_form` of the training writers, from their first forms' lines only."""
    first: dict[int, str] = {}
    for _, form, writer, _ in sorted(train_images, key=lambda i: i[1]):
        first.setdefault(writer, form)
    return _enrolled_one_form(*_features(rt, [i for i in train_images if i[1] == first[i[2]]],
                                         descriptor, "the training writers' first forms"))


def _cohort(rt: runtime.Model, train_images: list, descriptor: descriptors.Descriptor,
            labels: list[str], seed: int, folder: Path) -> tuple[runtime.Prepared, dict, tuple]:
    """A seeded half of the training writers, each enrolled from its first form, saved in
    `folder` as the cohort that fused scores are normalised against (`runtime.fuse`); its
    card entry; and the other half's first-form lines (writers, forms, embeddings,
    descriptor rows), more different writers for the unknown-writer thresholds. A query is
    never compared with the writers it was normalised against: scores against them are
    low by construction."""
    writers, centroids, sums, lines = _training_writers(rt, train_images, descriptor)
    order = np.random.default_rng(seed).permutation(len(writers))
    chosen = np.sort(order[:round(COHORT_SHARE * len(writers))])
    others = np.isin(lines[0], np.delete(writers, chosen))
    np.savez(folder / COHORT_FILE, writers=np.array([labels[w] for w in writers[chosen]]),
             centroids=centroids[chosen].astype(np.float32),
             sums=sums[chosen].astype(np.float32))
    cohort = runtime.Prepared(centroids[chosen], sums[chosen], descriptor)
    return cohort.exemplars(cohort), {
        "file": COHORT_FILE, "writers": len(chosen), "top": COHORT_TOP,
        "rule": "each query's fused scores less the mean of its best `top` fused scores "
                "against these writers, over the spread of all its fused scores",
        "impostors": int(len(writers) - len(chosen)),
        "impostors_rule": "the other training writers, each from its first form: different "
                          "writers for the unknown-writer thresholds, beside the calibration "
                          "writers"}, tuple(a[others] for a in lines)


def _calibration_set(rt: runtime.Model, cfg: TrainConfig, labels: list[str], held: list[str],
                     forms: list[str], train_images: list, descriptor: descriptors.Descriptor
                     ) -> tuple[tuple, tuple, str, tuple, list]:
    """(queries, enrolled writers, what they are, every calibration line, their images)
    that calibrate fusion, thresholds and likelihood ratios: the writers held out of
    training, each enrolled from one form and identified from its others, or, for runs that
    held none out, the validation lines (of the held `forms` only, where the run trained on
    the others) against the training writers each enrolled from one training form."""
    if not held:
        images = [i for i in split_images(cfg, "validation") if not forms or i[1] in forms]
        lines = _features(rt, images, descriptor, "the validation lines")
        source = (f"the {len(forms)} validation forms held out of training "
                  f"(calibration_writers.json) against the training writers" if forms
                  else "validation lines of the training writers")
        return lines, _training_writers(rt, train_images, descriptor), source, lines, images
    images = [i for split in ("train", "validation", "test") for i in split_images(cfg, split)
              if labels[i[2]] in held]
    lines = _features(rt, images, descriptor, "the calibration writers")
    writers, forms = lines[:2]
    enrolled = _enrolled_one_form(*lines)
    first = {w: np.sort(forms[writers == w])[0] for w in enrolled[0]}
    probe = np.array([forms[i] != first[w] for i, w in enumerate(writers)])
    single = sum(len(set(forms[writers == w])) == 1 for w in enrolled[0])
    return (tuple(a[probe] for a in lines), enrolled,
            f"the {len(held)} writers held out of training (calibration_writers.json; "
            f"{single} with one form, compared as different writers only)", lines, images)


def composed_page(lines: list[np.ndarray]) -> np.ndarray:
    """A page of a form's cut lines stacked on white paper, a fifth of a line's height apart:
    the dataset holds no page scans, so pages are calibrated on these, read back through
    line finding as a scan is."""
    gap = max(8, int(np.median([line.shape[0] for line in lines]) / 5))
    height = sum(line.shape[0] + gap for line in lines) + 2 * gap
    page = np.full((max(height, PAGE_MIN_HEIGHT), max(line.shape[1] for line in lines)
                    + 4 * gap), 255, np.uint8)
    y = gap
    for line in lines:
        page[y:y + line.shape[0], 2 * gap:2 * gap + line.shape[1]] = line
        y += line.shape[0] + gap
    return page


def _page_queries(rt: runtime.Model, images: list, descriptor: descriptors.Descriptor
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(writers, forms, unit embeddings, summed descriptor rows) of each form as a page
    scan."""
    forms = np.array(sorted({i[1] for i in images}))
    pages = [composed_page([i[3] for i in images if i[1] == f]) for f in forms]
    writers = np.array([next(i[2] for i in images if i[1] == f) for f in forms])
    emb, counts = runtime.Features(rt, descriptor, "page")(
        pages, names=[f"form {f}, its lines composed as a page (export's calibration)"
                      for f in forms])
    return writers, forms, emb, counts


def _likelihood_ratios(lines: tuple, pages: tuple, enrolled: tuple | None, fusion: dict,
                       descriptor: descriptors.Descriptor, source: str, held: list[str],
                       cohort: runtime.Prepared | None, impostors: tuple | None = None,
                       seed: int = 0) -> dict:
    """log10 LR calibrators of every score of identification (which `verify` uses too), for
    lines, documents (a form's cut lines) and pages (a form's lines composed into a page);
    the fused score against the `cohort`. Each query is compared with every calibration
    form enrolled alone but its own (with `enrolled`, the training writers each enrolled
    from one form, for runs that held no writers out): the same writer's forms as scored
    with them enrolled, every other writer's as scored with the query's own writer left
    out of the gallery, as a writer who is not enrolled meets them. The fused score's
    spread otherwise holds the query's own high scores, which reads different writers
    low, and an unknown writer's best match would get an LR too high. Lines also count the
    `impostors` (the other training writers' first forms) among the queries and the forms:
    more different writers for the tail that unknown writers' best matches reach; with
    documents, those single forms flattened the LRs (docs/results.md, the likelihood
    ratios of unknown writers). The same again with each reference k lines of its form
    (`FEW_LINE_LRS`, seeded), for a b or an enrolled writer of so few lines: a form's
    calibrator weighs one line's scores wrong (docs/results.md, LRs for a b of a few
    lines)."""
    notes: list[str] = []
    documents = _by_form(*lines)
    references = documents if enrolled is None else _as_references(enrolled)
    # each side prepared once (hinge distributions, VLAD encodings, exemplar SVMs)
    side = (references, _prepared(references[2], references[3], descriptor, cohort))
    line_side = side
    if impostors is not None:
        lines = tuple(np.concatenate(a) for a in zip(lines, impostors))
        if enrolled is None:
            widened = _by_form(*lines)
            line_side = (widened, _prepared(widened[2], widened[3], descriptor, cohort))
    queries = {"line": lines, "document": documents, "page": pages}

    def fitted(level: str, on: tuple, what: str) -> dict:
        (ref_writers, ref_forms, *_), prepared = on
        w, f, e, c = queries[level]
        calibrated = fusion["line" if level == "line" else "document"]
        own = w[:, None] == ref_writers[None, :]
        sims = prepared.scores(e, c, calibrated, cohort)
        strangers = prepared.scores(e, c, calibrated, cohort, own)
        keep = f[:, None] != ref_forms[None, :]
        return _fitted(
            {name: calibration.comparisons(np.where(own, s, strangers[name]), w, ref_writers,
                                           keep) for name, s in sims.items()},
            what, notes)

    identification = {level: fitted(level, line_side if level == "line" else side, level)
                      for level in queries}
    by_lines = {}
    for k in FEW_LINE_LRS:
        few = _few_lines(references[:2], lines if enrolled is None else enrolled[3], k,
                         seed, by_form=enrolled is None)
        few_side = (few, _prepared(few[2], few[3], descriptor, cohort))
        by_lines[str(k)] = {level: fitted(level, few_side, f"{level} against {k} line(s)")
                            for level in queries}
    for note in notes:
        print(f"no likelihood ratio for {note}", flush=True)
    return {"method": calibration.METHOD, "source": source, "writers": held,
            "compared": ("each query against every calibration form enrolled alone but its own"
                         if enrolled is None else ENROLLED),
            "different_writers": "scored with the query's own writer left out of the gallery",
            **({"line_impostors": "lines also compared as and with the other training "
                                  "writers' first forms"} if impostors is not None else {}),
            "pages": "each form's cut lines stacked into a page (composed_page)",
            "identification": identification,
            "by_lines": f"identification_by_lines: each reference k lines drawn (seeded) from "
                        f"its form, k = {', '.join(map(str, FEW_LINE_LRS))}: for a b or an "
                        "enrolled writer of k lines",
            "identification_by_lines": by_lines, "not_fitted": notes}


def _few_lines(references: tuple, lines: tuple, k: int, seed: int, by_form: bool,
               draw: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The references (writers, forms) each enrolled from k of its lines (seeded, a `draw`
    of them; all of them where it has k or fewer): of its form's `lines` where the
    references are forms (`by_form`), else of its writer's (the training writers' first
    forms). As `_by_form`: (writers, forms, mean unit embeddings, summed descriptor rows)."""
    ref_writers, ref_forms = references
    w, f, e, c = lines
    rng = np.random.default_rng([seed, k] + ([draw] if draw else []))  # draw 0: as before
    emb, rows = [], []
    for writer, form in zip(ref_writers, ref_forms):
        mine = np.flatnonzero(f == form if by_form else w == writer)
        chosen = np.sort(rng.choice(mine, k, replace=False)) if len(mine) > k else mine
        emb.append(e[chosen].mean(0))
        rows.append(c[chosen].sum(0))
    return ref_writers, ref_forms, normalise(np.stack(emb)), np.stack(rows)


def _unknown_writers(lines: tuple, references: tuple, fusion: dict,
                     descriptor: descriptors.Descriptor, cohort: runtime.Prepared | None,
                     far: float, seed: int, reference_lines: tuple, by_form: bool) -> None:
    """Into `fusion`: each score's unknown-writer threshold as it grows with the gallery
    (`_unknown_growth`), for the lines and the documents (a form's lines) of `lines` against
    `references` (each: writers, forms, embeddings, descriptor rows); a form is never
    compared with itself, a writer only as a different one. The same again with each
    reference k lines (`FEW_LINE_RULES`) of `reference_lines` (`_few_lines`: of its form's
    where the references are forms, `by_form`), for a writer enrolled from so few: a
    stranger's best score against such writers is lower, and the form's threshold answered
    half the genuine lines unknown (docs/results.md, a rule of its own for writers enrolled
    from 1 to 5 lines)."""
    queries = {"line": lines, "document": _by_form(*lines)}

    def fitted(refs: tuple) -> dict[str, dict]:
        ref_writers, ref_forms = refs[:2]
        prepared = _prepared(*refs[2:], descriptor, cohort)
        rules = {}
        for level, (w, f, e, c) in queries.items():
            # each query as a stranger's: its own writer's forms are in no gallery it is
            # asked of
            sims = prepared.scores(e, c, fusion[level], cohort,
                                   w[:, None] == ref_writers[None, :])
            keep = f[:, None] != ref_forms[None, :]
            rules[level] = {name: _unknown_growth(
                s, w, ref_writers, keep, far, seed,
                standardised=name == "fused" and cohort is not None)
                for name, s in sims.items()}
        return rules

    for level, rule in fitted(references).items():
        fusion[level]["unknown_writer"] = {"rule": UNKNOWN_RULE, **rule}
    by_lines = {k: _strictest([fitted(_few_lines(references[:2], reference_lines, k, seed,
                                                   by_form, draw))
                                 for draw in range(FEW_LINE_DRAWS)])
                for k in FEW_LINE_RULES}
    for level in ("line", "document"):
        fusion[level]["unknown_writer"] |= {
            "by_lines_rule": f"for a writer enrolled from k lines, k = "
                             f"{', '.join(map(str, FEW_LINE_RULES))}: the same with each "
                             f"reference k lines drawn (seeded) from its form, the highest "
                             f"threshold of {FEW_LINE_DRAWS} draws at each gallery size",
            "by_lines": {str(k): rules[level] for k, rules in by_lines.items()}}


def _strictest(fits: list[dict[str, dict[str, dict]]]) -> dict[str, dict[str, dict]]:
    """{level: {score: growth}} of several draws' `fits` (`_unknown_growth`), the highest
    of their thresholds at each gallery size (the sizes are the same in every draw): a
    stranger named as an enrolled writer costs more than a genuine query answered unknown,
    and one draw of k lines from each of few calibration forms sets a loose threshold."""
    def strictest(growths: list[dict]) -> dict:
        out = dict(growths[0])
        out["thresholds"] = np.max([g["thresholds"] for g in growths], 0).tolist()
        out |= _in_log_n(out["sizes"], out["thresholds"])
        if "lead" in out:
            out["lead"] = {**out["lead"], "thresholds": np.max(
                [g["lead"]["thresholds"] for g in growths], 0).tolist()}
        return out

    return {level: {name: strictest([fit[level][name] for fit in fits]) for name in rules}
            for level, rules in fits[0].items()}


def _rule_rates(queries: tuple, enrolled: tuple, fusion: dict,
                descriptor: descriptors.Descriptor, cohort: runtime.Prepared | None,
                seed: int) -> None:
    """Into each kind of query's `unknown_writer`: the rates of the rule `identify` applies
    (`runtime.identify.query_thresholds`: the gallery's size, the lead), measured on the
    calibration queries against the calibration writers each enrolled from one form
    (`enrolled`, as `_enrolled_one_form`): `far`, the share of queries accepted with their
    own writer taken out of the gallery, and `frr`, the share of genuine queries whose best
    score is answered unknown; each with its interval (`_rate`), and the number of forms and
    writers the queries came from. Into `verify_rates`: the same of `verify`'s rule
    (`_pair_rates`). Under `by_lines_rates` and `by_lines_verify_rates`: the same of each
    rule for writers enrolled from k lines (`by_lines`), every writer enrolled from k lines
    of its form drawn anew (seeded; not a draw the rule was fitted on)."""
    present = enrolled[0]
    if len(present) < 2:  # no gallery without the query's own writer to measure
        return
    first_forms = np.array([enrolled[3][1][enrolled[3][0] == w][0] for w in present])
    by_lines = fusion["line"]["unknown_writer"].get("by_lines", {})
    galleries = {None: enrolled[1:3]} | {
        k: _few_lines((present, first_forms), enrolled[3], int(k), seed, by_form=True,
                      draw=FEW_LINE_DRAWS)[2:] for k in by_lines}
    for k, references in galleries.items():
        prepared = _prepared(*references, descriptor, cohort)
        for level in ("line", "document"):
            rule = fusion[level]["unknown_writer"]
            rates, pairs = _rates_of(queries, level, prepared, present,
                                     rule if k is None else rule["by_lines"][k],
                                     fusion[level], cohort)
            if k is None:
                rule["rates"], rule["verify_rates"] = rates, pairs
                continue
            for key, measured in (("by_lines_rates", rates), ("by_lines_verify_rates", pairs)):
                rule.setdefault(key, {})[k] = {n: r | {"enrolled_lines": int(k)}
                                               for n, r in measured.items()}


def _rates_of(queries: tuple, level: str, prepared: runtime.Prepared, present: np.ndarray,
              rules: dict, weights: dict, cohort: runtime.Prepared | None
              ) -> tuple[dict, dict]:
    """({score: rates of identify's rule}, {score: rates of verify's}) of a kind of query
    (`level`) against the writers `present`, enrolled as `prepared`, under `rules`
    ({score: growth}): `_rule_rates`."""
    w, f, e, c = queries if level == "line" else _by_form(*queries)
    keep = np.isin(w, present)
    writers = w[keep]
    own = writers[:, None] == present[None, :]
    counted = {"gallery": len(present), "n_queries": len(writers),
               "forms": len(np.unique(f[keep])), "writers": len(np.unique(writers))}
    rates = {}
    unknown = prepared.scores(e[keep], c[keep], weights, cohort, own)
    for name, s in prepared.scores(e[keep], c[keep], weights, cohort).items():
        # the gallery without the query's writer
        stranger = unknown[name][~own].reshape(len(s), -1)
        rates[name] = {
            **_rate("far", stranger.max(1) >= runtime.identify.query_thresholds(
                rules[name], stranger), writers),
            **_rate("frr", s.max(1) < runtime.identify.query_thresholds(rules[name], s),
                    writers),
            **counted}
    alone = prepared.alone(e[keep], c[keep], weights, cohort)
    pairs = {name: _pair_rates(s, own, rules[name], writers)
             | {k: counted[k] for k in ("forms", "writers")} for name, s in alone.items()}
    return rates, pairs


def _pair_rates(scores: np.ndarray, own: np.ndarray, growth: dict, writers: np.ndarray
                ) -> dict:
    """The rates of `verify`'s rule on every pair of a calibration query and a calibration
    writer enrolled alone (`scores` [Q, W], `own` [Q, W] the query's writer): `far`, the
    share of different-writer pairs said to be one writer's, and `frr`, of same-writer pairs
    said to be two writers', at the unknown-writer threshold of a gallery of one; each with
    its interval (`_rate`: the pairs of one writer, asked or enrolled, err together)."""
    same = scores >= runtime.identify.query_thresholds(growth, scores[:, :1])[:, None]
    asked = np.broadcast_to(writers[:, None], scores.shape)[~own]
    enrolled = np.broadcast_to(np.arange(scores.shape[1])[None, :], scores.shape)[~own]
    return {**_rate("far", same[~own], asked, enrolled), **_rate("frr", ~same[own], writers),
            "different_pairs": int((~own).sum()), "same_pairs": int(own.sum())}


def _rate(name: str, hits: np.ndarray, writers: np.ndarray,
          enrolled: np.ndarray | None = None) -> dict:
    """A rate over queries with its 95% interval, the queries of one writer (a form's lines,
    a writer's forms) taken as erring together: by writer, not by form, as errors gather in
    writers beyond their forms (docs/results.md, "A rate's interval counts writers"). Pairs
    given the `enrolled` writer each was compared with err together by it too (a writer
    whom strangers' handwriting resembles): two-way, with the fewer writers' degrees of
    freedom (docs/results.md, verify's rule)."""
    effect = design_effect(hits, writers, enrolled)
    clusters = len(np.unique(writers))
    if enrolled is not None:
        clusters = min(clusters, len(np.unique(enrolled)))
    return {name: float(hits.mean()), f"{name}_design_effect": effect,
            f"{name}_95": interval(int(hits.sum()), len(hits), design_effect=effect,
                                   clusters=clusters)}


def rates_words(fusion: dict, score: str, far: float) -> list[str]:
    """The lines `export` prints of the unknown-writer rule's rates on the calibration
    queries (`_rule_rates`) for `score`, each with its 95% interval, a note where too few
    queries were there to show a false-accept rate as low as `far`, and `verify`'s rule's
    on the same queries paired with each writer alone."""
    measured = {level: r for level in ("line", "document")
                if (r := runtime.identify.measured_rates(fusion, level, score))}
    if not measured:
        return []
    gallery = next(iter(measured.values()))["gallery"]
    words = [f"the unknown-writer rule ({score}) on the calibration queries, "
             f"{gallery} writers enrolled (95% intervals; a writer's queries may err together):"]
    for level, r in measured.items():
        words.append(f"  {level + 's':<9} {r['n_queries']:>4}: strangers accepted "
                     f"{rate_brief(r, 'far')}, genuine answered unknown {rate_brief(r, 'frr')}")
    thin = [f"{r['n_queries']} {level}s" for level, r in measured.items()
            if interval(0, r["n_queries"], clusters=r.get("writers", r.get("forms")))[1] > far]
    if thin:
        words.append(f"  {' and '.join(thin)} are too few to show {far * 100:g}% of strangers "
                     "accepted; more calibration writers or forms narrow the intervals")
    few = {k: {level: r for level in measured if "enrolled_lines" in (
        r := runtime.identify.measured_rates(fusion, level, score, lines=k))}
        for k in FEW_LINE_RULES}
    if any(few.values()):
        words.append("  each enrolled from k lines, by the rule for so few (strangers "
                     "accepted, genuine answered unknown):")
    for k, by_level in few.items():
        if by_level:
            words.append(f"    k = {k}: " + "; ".join(
                f"{level}s {rate_brief(r, 'far')}, {rate_brief(r, 'frr')}"
                for level, r in by_level.items()))
    pairs = {level: r for level in measured
             if (r := runtime.identify.measured_rates(fusion, level, score, pairs=True))}
    if pairs:
        words.append(f"verify's rule ({score}), each calibration writer enrolled alone:")
    for level, r in pairs.items():
        words.append(f"  {level + 's':<9} different-writer pairs said one writer "
                     f"{rate_brief(r, 'far')} of {r['different_pairs']}, same-writer pairs "
                     f"said two {rate_brief(r, 'frr')} of {r['same_pairs']}")
    return words


def _unknown_growth(sims: np.ndarray, writers: np.ndarray, references: np.ndarray,
                    keep: np.ndarray, far: float, seed: int, *, standardised: bool) -> dict:
    """How the unknown-writer threshold grows with the gallery: for galleries of n writers
    not the query's (n = 1, 2, 4, ... as many as the comparisons hold; seeded draws), the
    score that the best of a query's n scores passes with probability `far`, fitted as
    a + b ln(n) by least squares. Under "lead", the same for the best score plus
    `UNKNOWN_LEAD` times its lead over the second (n from 2), the statistic that
    `runtime.query_thresholds` decides on in a gallery of two writers or more: it rises or
    falls with n by score, and flattens (docs/results.md, the lead rule), so its points are kept
    and interpolated. Each point is read off the draws by `_tail`: a fitted Gumbel's where
    fewer than `UNKNOWN_TAIL_QUERIES` queries lie beyond it and the scores are
    `standardised` (each query's taken against the cohort, on one unbounded scale); raw
    cosines and hinge similarities are bounded at 1, their levels vary by query, and a
    Gumbel fitted to them put thresholds past 1 (docs/results.md, the document tail)."""
    rng = np.random.default_rng(seed)
    other = (writers[:, None] != references[None, :]) & keep
    most = int(other.sum(1).min())
    sizes = sorted({2 ** k for k in range(int(np.log2(max(most, 1))) + 1)} | {most})
    tail = ("gumbel" if standardised and len(sims) * far < UNKNOWN_TAIL_QUERIES
            else "quantile")
    best, led = {}, {}
    for n in sizes:
        drawn = np.concatenate([_best_two(sims, other, n, rng) for _ in range(UNKNOWN_DRAWS)])
        best[n] = _tail(drawn[:, -1], far, tail)
        if n > 1:
            led[n] = _tail(drawn[:, 1] + UNKNOWN_LEAD * (drawn[:, 1] - drawn[:, 0]), far, tail)
    growth = {**_in_log_n(sizes, list(best.values())), "sizes": sizes, "tail": tail,
              "thresholds": [round(t, 5) for t in best.values()]}
    if len(led) > 1:  # not a line in ln(n): interpolated between the sizes measured
        growth["lead"] = {"weight": UNKNOWN_LEAD, "sizes": list(led),
                          "thresholds": [round(t, 5) for t in led.values()]}
    return growth


def _best_two(sims: np.ndarray, other: np.ndarray, n: int, rng: np.random.Generator
              ) -> np.ndarray:
    """[Q, min(n, 2)]: each query's second and best of its `sims` [Q, R] over a gallery of
    n of its `other` references [Q, R] drawn at random, all queries at once: the n smallest
    of random keys, the others' set past them, are a uniform draw of n without
    replacement (each query holds at least n others)."""
    keys = np.where(other, rng.random(sims.shape), np.inf)
    chosen = np.argpartition(keys, n - 1, axis=1)[:, :n]
    return np.sort(np.take_along_axis(sims, chosen, axis=1), axis=1)[:, -2:]


def _in_log_n(sizes: list[int], thresholds: list[float]) -> dict[str, float]:
    """{"a", "b"}: the thresholds measured at gallery sizes fitted as a + b ln(n) by least
    squares, b at least 0 (a larger gallery never lowers the bar)."""
    b, a = (np.polyfit(np.log(sizes), thresholds, 1) if len(sizes) > 1
            else (0.0, thresholds[0]))
    return {"a": float(a), "b": float(max(b, 0.0))}


def _tail(values: np.ndarray, far: float, method: str) -> float:
    """The value that `values` (a statistic of the best of a stranger's scores, over seeded
    draws) exceeds with probability `far`: their empirical quantile, or by "gumbel" the
    quantile of a Gumbel fitted by its moments. The best of many scores is a maximum, whose
    tail is an extreme value's; fitted to all the draws, the point no longer rests on the
    few queries beyond it (docs/results.md, the document tail)."""
    if method == "quantile":
        return float(np.quantile(values, 1 - far))
    scale = float(values.std()) * np.sqrt(6) / np.pi
    return float(values.mean() - scale * (np.euler_gamma + np.log(-np.log(1 - far))))


def _fitted(comparisons: dict[str, tuple], what: str, notes: list[str]) -> dict:
    """{score: fitted calibrator} of the scores whose comparisons can calibrate one; each
    that cannot is named in `notes`, with the reason."""
    fitted = {}
    for name, (scores, same) in comparisons.items():
        try:
            fitted[name] = calibration.fit(scores, same, calibration.TRANSFORMS.get(name))
        except calibration.CalibrationError as err:
            notes.append(f"{what} {name}: {err}")
    return fitted


def _threshold(figures: dict, against: str) -> dict:
    """A decision threshold at the EER point of validation comparisons (0.5 without any)."""
    figures.pop("_roc", None)
    return {"threshold": figures.get("eer_threshold", 0.5), "split": "validation",
            "compared": against, **figures}


def _card(cfg: TrainConfig, pcfg: PipelineConfig, run: Path, labels: list[str],
          fingerprint: str, thresholds: dict, files: dict[str, str]) -> dict:
    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics.pop("per_writer", None)
    if pcfg.mode == "patches":
        steps = ["decode to 8-bit grayscale (16-bit scaled, alpha over white)",
                 "ink: pixels darker than half-way from paper to the darkest ink",
                 f"crop the columns holding ink and the {pcfg.line_band} rows centred on the "
                 "row that halves the ink, padding with paper" if pcfg.line_band else
                 "crop to the ink bounding box",
                 f"scale the height to {pcfg.patch_size} px keeping the aspect ratio "
                 "(area resize when shrinking)",
                 "subtract the paper level, stretch ink to 0..255 (bright ink on black)",
                 f"pad on the right with black to {pcfg.patch_size} + k x {pcfg.stride} px",
                 "divide by 255; the model runs once over the whole line and gives one output "
                 f"per {pcfg.patch_size}x{pcfg.patch_size} window every {pcfg.stride} px",
                 f"keep windows with at least {pcfg.min_ink:.0%} ink pixels (> 127); in a "
                 f"line with none, those with at least {preprocess.THIN_LINE_INK:.0%}",
                 "average the windows' log-probabilities (or embeddings)"]
    else:
        steps = ["decode to 8-bit grayscale", "to RGB",
                 f"{'pad' if pcfg.keep_aspect else 'squash'} to {pcfg.image_size} px",
                 "ResNet50 caffe preprocessing" if pcfg.normalization == "resnet50"
                 else "divide by 255"]
    return {
        "model": cfg.model, "labels": labels, "fingerprint": fingerprint,
        "source_run": str(run.resolve()), "train_config": cfg.to_json(),
        "input": inference.input_card(pcfg),
        "preprocessing": steps,
        "identify_by": "gallery" if cfg.by_gallery else "softmax",
        "metrics": metrics, **thresholds, "files": files,
    }


def _variants(ecfg: ExportConfig, tmp: Path, card: dict, rt: runtime.Model,
              train_images: list, test: list, classes: np.ndarray
              ) -> tuple[dict[str, str], list[dict]]:
    """The TFLite files asked for, converted from the SavedModel in `tmp`, and their parity
    against Keras (`rt`) on the test images. A failed int8 gate raises DegradedExport here,
    before the minutes of calibration are spent on a model that would not be written."""
    representative = (_calibration(rt, train_images, ecfg.calibration_samples,
                                   card["train_config"]["seed"])
                      if "int8" in ecfg.quantize else [])
    files = {}
    for q in ecfg.quantize:
        name = f"model_{VARIANTS[q]}.tflite"
        print(f"converting {name}", flush=True)
        (tmp / name).write_bytes(_convert(tmp / "saved_model", q, representative))
        files[VARIANTS[q]] = name
    (tmp / runtime.CARD).write_text(json.dumps({**card, "files": files}, indent=2))
    models = {"keras": rt, **{variant: runtime.Model(tmp / name, ecfg.threads)
                              for variant, name in files.items()}}
    print("parity on the test split", flush=True)
    parity = _parity(models, test, classes)
    print(parity_markdown(parity))
    int8 = next((r for r in parity if r["variant"] == "int8"), None)
    if int8 and int8["top1_agreement"] < ecfg.min_agreement and not ecfg.allow_degraded:
        raise DegradedExport(
            f"int8 top-1 agreement {int8['top1_agreement']:.3f} is below "
            f"{ecfg.min_agreement:.2f}; nothing written to {ecfg.out}. Pass "
            "--allow-degraded to accept it, or leave int8 out of --quantize.")
    return files, parity


def export(ecfg: ExportConfig) -> dict:
    """Write the export folder; returns its model card (with the parity table). The model
    files and their parity come first, the calibration (codebook, fusion, thresholds,
    likelihood ratios) after: a model that fails the int8 gate is refused early."""
    new_folder(ecfg.out)
    cfg, labels, model = load_run(ecfg.run)
    held, forms = calibration_writers(ecfg.run), calibration_forms(ecfg.run)
    if cfg.fit_on_validation and not (held or forms):
        raise ExportError(
            f"{ecfg.run}: trained on all its validation lines (fit_on_validation) and held "
            "no writers or forms out, so no line it has not seen is left to calibrate fusion "
            "and thresholds on. Train it again with this version and --calibration-share "
            "above 0, which holds a share of the validation forms out (a tuning best_run: "
            "run the same tune --retrain-best again, which trains it anew), or without "
            "--fit-on-validation.")
    try:
        pcfg = cfg.inference_pipeline(ecfg.stride)
    except ValueError as err:
        raise ExportError(str(err)) from None
    fingerprint = hashlib.sha256((ecfg.run / "model.keras").read_bytes()).hexdigest()[:16]
    keras_backend = inference.keras_backend(model, cfg, pcfg)

    with atomic.replaced(ecfg.out, directory=True) as tmp:
        card = _card(cfg, pcfg, ecfg.run, labels, fingerprint, {"verification": {}}, {})
        (tmp / runtime.CARD).write_text(json.dumps(card, indent=2))
        rt = runtime.Model(tmp / runtime.CARD, backend=keras_backend)
        train_images = [i for i in split_images(cfg, "train") if labels[i[2]] not in held]
        gallery_labels, centroids, classes = labels, None, np.arange(len(labels))
        if cfg.by_gallery:  # the training writers' centroids: the gallery the model ranks
            print(f"embedding {len(train_images)} training images", flush=True)
            writers, _, emb, _ = _features(rt, train_images, None)
            classes = np.unique(writers)
            gallery_labels = [labels[i] for i in classes]
            if len(classes) < len(labels) - len(held):
                raise ExportError(f"{ecfg.run}: writers without training images: "
                                  f"{sorted(set(labels) - set(held) - set(gallery_labels))}. "
                                  "Rebuild the dataset so every writer has a training form.")
            centroids = normalise(np.stack([emb[writers == w].mean(0) for w in classes]))
            gallery = runtime.Gallery.open(tmp / "train_gallery", create=True,
                                           fingerprint=fingerprint, journal="DELETE")
            for label, centroid in zip(gallery_labels, centroids):
                gallery.add(label, [label], [f"training writer {label}"], centroid[None], None)
            gallery.close()
        print(f"writing the SavedModel to {ecfg.out / 'saved_model'}", flush=True)
        archive = serving_archive(model, cfg, pcfg, gallery_labels, centroids, ecfg.top_k)
        archive.write_out(str(tmp / "saved_model"), verbose=False)
        test = [i for i in split_images(cfg, "test") if labels[i[2]] not in held]
        files, parity = _variants(ecfg, tmp, card, rt, train_images, test, classes)

        on = (f"{len(held)} held-out writers" if held else
              f"{len(forms)} held-out validation forms" if forms else
              "the validation lines of the training writers")
        print(f"calibrating fusion and thresholds on {on}", flush=True)
        descriptor = descriptors.Descriptor(descriptors.Hinge(),
                                            _fit_vlad(train_images, cfg.seed))
        rt.vlad = descriptor.vlad
        descriptor.vlad.save(tmp / VLAD_FILE)
        # thresholds and fusion as they will be used: each writer enrolled from one form
        queries, enrolled, source, lines, images = _calibration_set(
            rt, cfg, labels, held, forms, train_images, descriptor)
        cohort, cohort_card, impostors = (
            _cohort(rt, train_images, descriptor, labels, cfg.seed, tmp) if held
            else (None, None, None))
        identification = far_threshold(queries[2] @ enrolled[1].T, queries[0], enrolled[0],
                                       ecfg.far)
        thresholds = {
            "verification": _threshold(verification(queries[2], queries[0]), "image pairs"),
            "identification": {**identification, "split": source, "compared": ENROLLED},
            "fusion": _fusion(queries, enrolled, descriptor, ecfg.far, source, cohort),
            "calibration": {"writers": held, "forms": forms, "source": source,
                            "far": ecfg.far},
            "vlad": {"name": descriptor.vlad.name, "file": VLAD_FILE,
                     "fitted_on": f"up to {VLAD_FIT_LINES} lines of the training writers "
                                  f"(seed {cfg.seed})"},
        }
        if held:  # every calibration form enrolled alone, and the impostors' first forms
            growth = tuple(np.concatenate(a) for a in zip(lines, impostors))
            _unknown_writers(growth, _by_form(*growth), thresholds["fusion"], descriptor,
                             cohort, ecfg.far, cfg.seed, growth, by_form=True)
            thresholds["cohort"] = cohort_card
        else:
            _unknown_writers(lines, _as_references(enrolled), thresholds["fusion"],
                             descriptor, None, ecfg.far, cfg.seed, enrolled[3], by_form=False)
        _rule_rates(queries, enrolled, thresholds["fusion"], descriptor, cohort, cfg.seed)
        for line in rates_words(thresholds["fusion"], "fused", ecfg.far):
            print(line, flush=True)
        print("fitting likelihood ratios", flush=True)
        thresholds["likelihood_ratio"] = _likelihood_ratios(
            lines, _page_queries(rt, images, descriptor), None if held else enrolled,
            thresholds["fusion"], descriptor, source, held, cohort, impostors, cfg.seed)

        card = {**_card(cfg, pcfg, ecfg.run, labels, fingerprint, thresholds, files),
                "parity": parity}
        (tmp / "labels.json").write_text(json.dumps(labels, indent=2))
        (tmp / runtime.CARD).write_text(json.dumps(card, indent=2))
        (tmp / "parity.json").write_text(json.dumps(parity, indent=2))
        (tmp / "parity.md").write_text(parity_markdown(parity))
    return card
