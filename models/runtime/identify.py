"""Enrolment and identification: features of images, into a gallery and against it.

Scores rank a gallery's writers (`models.config.SCORES`): `embedding` (cosine to each
writer's mean embedding), `hinge` (1 - chi-square to each writer's summed contour-hinge
counts), `vlad` (cosine of RootSIFT + VLAD vectors of each writer's summed residuals, for
models whose export fitted a codebook) and `fused` (all of them standardised and weighted
as calibrated at export).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from iam_writers_tfds.atomic import check_can_write
from iam_writers_tfds.console import progress
from iam_writers_tfds.images import SCAN_DPI, SUFFIXES, ImageError
from models.config import COHORT_TOP, SCORES
from models.runtime import descriptors, evidence
from models.runtime.descriptors import Descriptor
from models.runtime.gallery import (
    Enrolled,
    Exemplar,
    Gallery,
    GalleryError,
    ReadAs,
    Source,
    check_name,
    gallery_file,
    lost_files,
    lost_words,
    new_in_memory,
    refuse_other_writer,
    sha256_of,
)
from models.runtime.model import UNREADABLE, Model, ModelError, document_embedding, unit

# the writers among which `Identifier.alike_either` looks for those whose handwriting reads
# as one writer's: the whole gallery up to this size, one chunk of `alike` past it
ALIKE_CANDIDATES = 256


def fuse(sims: dict[str, np.ndarray], calibration: dict,
         cohort: dict[str, np.ndarray] | None = None,
         absent: np.ndarray | None = None, same_hand: np.ndarray | None = None) -> np.ndarray:
    """The fused score [Q, W]: each similarity standardised by the mean and spread of
    different-writer similarities measured at export for this kind of query (so that a
    score, and its threshold, mean the same whatever the gallery's size), weighted by
    `weights` (older cards: `weight`, the hinge's share beside the embedding).

    Given the same queries' similarities to a `cohort` of writers they do not belong to
    ({score: [Q, C]}, the training writers), each query's fused scores are then taken
    relative to the mean of its `COHORT_TOP` best cohort scores, over the spread of all its
    fused scores (gallery and cohort). Some handwriting (a short line, a neat common hand)
    scores high against everyone: against an unknown-writer threshold it is compared with
    the writers it most resembles, not with a fixed number. The order of a query's
    candidates does not change; a score moves a little as writers are enrolled (the spread
    includes the gallery's scores: dividing by the cohort's alone did worse; docs/results.md,
    open set).

    `absent` [Q, W] marks writers outside each query's gallery: scored minus infinity and
    left out of its spread. A writer who is not enrolled is measured so (export, the
    benchmark): masking its own writer after the fact keeps that writer's high score in the
    spread and reads strangers' scores low (docs/results.md, the spread).

    `same_hand` [W, C] marks, for each writer, the cohort writer it is (`cohort_hands`):
    its column is taken against the cohort without that writer, as a writer is never
    measured against its own hand."""
    weights = calibration.get("weights") or {"embedding": 1 - calibration["weight"],
                                             "hinge": calibration["weight"]}

    def fused(s: dict[str, np.ndarray]) -> np.ndarray:
        return sum(w * (s[name] - calibration[name]["mean"]) / calibration[name]["std"]
                   for name, w in weights.items())

    scores = fused(sims)
    gone = np.zeros(scores.shape, bool) if absent is None else np.asarray(absent, bool)
    if cohort is not None:
        against = fused(cohort)
        best = _best_mean(against)
        if same_hand is not None and same_hand.any():  # those writers' columns apart
            best = np.repeat(best, scores.shape[1], axis=1)
            for w in np.flatnonzero(same_hand.any(axis=1)):
                best[:, w] = _best_mean(against[:, ~same_hand[w]])[:, 0]
        spread = np.ma.masked_array(np.concatenate([scores, against], axis=1),
                                    np.concatenate([gone, np.zeros(against.shape, bool)],
                                                   axis=1)).std(axis=1).filled(0)[:, None]
        scores = (scores - best) / np.maximum(spread, 1e-12)
    return np.where(gone, -np.inf, scores)


def _best_mean(against: np.ndarray) -> np.ndarray:
    """[Q, 1]: the mean of each query's `COHORT_TOP` best scores against the cohort."""
    return np.sort(against, axis=1)[:, -COHORT_TOP:].mean(axis=1, keepdims=True)


def gallery_threshold(growth: dict, writers: int) -> float:
    """The score that a query of a writer who is not enrolled passes against some writer of
    a gallery of `writers` with the probability `far` set at export: a + b ln(writers), as
    measured on the calibration writers. A threshold set for one gallery size accepts more
    unknown writers in a larger gallery, as the best of more different-writer scores rises
    (docs/results.md, open set)."""
    return growth["a"] + growth["b"] * float(np.log(max(writers, 1)))


def lead_threshold(growth: dict, writers: int) -> float:
    """The lead rule's threshold (`growth["lead"]`) for a gallery of `writers`: measured at
    export for galleries of 2, 4, ... writers and interpolated in ln(writers) between them;
    beyond the largest measured it rises as the best score's threshold does (`b`), which
    the lead can only slow (docs/results.md, the lead rule)."""
    lead = growth["lead"]
    largest = lead["sizes"][-1]
    beyond = growth["b"] * float(np.log(writers / largest)) if writers > largest else 0.0
    return float(np.interp(np.log(writers), np.log(lead["sizes"]), lead["thresholds"])) + beyond


def query_thresholds(growth: dict, scores: np.ndarray) -> np.ndarray:
    """Each query's unknown-writer threshold on its best score, from its scores [Q, W]
    against a gallery. Where the export measured a "lead" rule and the gallery has two
    writers or more, the best score s1 passes when s1 + w (s1 - s2) reaches the rule's
    threshold T for the gallery's size (`lead_threshold`), s2 the second best: a threshold
    on s1 of (T + w s2) / (1 + w), lower the further the best writer leads the next. A
    writer far ahead of the rest is rarely a stranger's best match; one among several
    close ones often is (docs/results.md, the lead rule). Else `gallery_threshold` for
    every query."""
    queries, writers = scores.shape
    lead = applied_lead(growth, writers)
    if lead is None:
        return np.full(queries, gallery_threshold(growth, writers))
    second = np.partition(scores, -2, axis=1)[:, -2]
    return (lead_threshold(growth, writers) + lead["weight"] * second) / (1 + lead["weight"])


def measured_rates(fusion: dict, level: str, score: str, pairs: bool = False,
                   lines: int | None = None) -> dict | None:
    """What the unknown-writer rule of `score` gave at export on the calibration queries of
    `level` ("line" or "document"): `far`, `frr`, each with its 95% interval and design
    effect, the calibration gallery's size, the queries' number and the forms and writers
    they came from; None on cards without them (cards before the intervals have rates
    alone, cards before writers were counted no `writers`). With `pairs`, what `verify`'s
    rule gave on every pair of a query and a writer enrolled alone: `far`, `frr` and their
    intervals as before, `different_pairs` and `same_pairs` for the queries' number (cards
    before it: None). With `lines`, those of the rule for writers enrolled from so few
    lines (`Identifier.rule_lines`), which say so (`enrolled_lines`), where the card
    measured them (cards before them: the form's, as they stated)."""
    rule = fusion[level].get("unknown_writer", {})
    kind = "verify_rates" if pairs else "rates"
    return (lines and rule.get(f"by_lines_{kind}", {}).get(str(lines), {}).get(score)
            or rule.get(kind, {}).get(score))


def applied_lead(growth: dict, writers: int) -> dict | None:
    """The lead rule of `growth` where it applies to a gallery of `writers`: exported with
    it, and a second writer to lead."""
    return growth.get("lead") if writers > 1 else None


class Prepared:
    """A gallery side (writers' unit mean embeddings and summed descriptor rows) made ready
    to score many queries: the hinge's distributions bin-major (`descriptors.References`),
    the VLAD vectors encoded once (`encoded`); the VLAD score is their cosine, or after
    `exemplars` each writer's exemplar SVM. `same_hand` [W, C]: the cohort writer each
    writer is (`cohort_hands`), left out of its SVM and of its column's normalisation
    (`fuse`)."""

    def __init__(self, centroids: np.ndarray | None, sums: np.ndarray | None,
                 descriptor: Descriptor | None):
        self.centroids, self.sums, self.descriptor = centroids, sums, descriptor
        self.same_hand: np.ndarray | None = None
        hinge, vlad = descriptor.split(sums) if descriptor else (None, None)
        self.hinge = descriptors.References(hinge) if hinge is not None else None
        self.encoded = descriptor.vlad.encode(vlad) if vlad is not None else None
        self.vlad, self.bias, self.duals = self.encoded, 0.0, None

    def exemplars(self, cohort: Prepared, stored: list[np.ndarray | None] = ()) -> Prepared:
        """This side, its VLAD score each writer's exemplar SVM against the `cohort`'s VLAD
        vectors (`descriptors.exemplar_svms`; the cohort itself: each of its writers
        against the others), as export calibrated it where the card says `exemplar`.
        `stored`: the writers' SVMs as a gallery keeps them for this cohort
        (`Snapshot.duals`, solved against the whole cohort); only the writers without one,
        or with a cohort writer to leave out (`same_hand`), are solved. `duals` then holds
        every writer's."""
        if self.encoded is not None and cohort.encoded is not None:
            self.duals = np.zeros((len(self.encoded), len(cohort.encoded) + 1))
            apart = (np.eye(len(self.encoded), dtype=bool) if cohort is self
                     else self.same_hand)
            todo = np.ones(len(self.encoded), bool)
            for i, duals in enumerate(stored):
                if duals is not None and len(duals) == self.duals.shape[1]:
                    self.duals[i], todo[i] = duals, False
            if apart is not None:
                todo |= apart.any(axis=1)
            if todo.any():
                self.duals[todo] = descriptors.exemplar_duals(
                    self.encoded[todo], cohort.encoded,
                    None if apart is None else apart[todo])
            self.vlad, self.bias = descriptors.exemplar_weights(self.encoded, cohort.encoded,
                                                                self.duals)
        return self

    def scores(self, emb: np.ndarray | None, counts: np.ndarray | None,
               calibration: dict | None = None, cohort: Prepared | None = None,
               absent: np.ndarray | None = None,
               encoded: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """{score: [Q, W]} of queries' unit embeddings [Q, D] and descriptor rows [Q, K];
        given one kind of query's fusion `calibration`, also `fused` (`fuse`), against the
        same queries' scores on the `cohort` side when there is one. `absent` [Q, W]: the
        writers outside each query's gallery, every score minus infinity there (`fuse`).
        `encoded`: the queries' VLAD vectors, where another side has encoded them."""
        sims = {}
        if self.centroids is not None:
            sims["embedding"] = emb @ self.centroids.T
        if self.descriptor is not None:
            hinge, vlad = self.descriptor.split(counts)
            sims["hinge"] = self.hinge.similarity(hinge)
            if self.vlad is not None:
                if encoded is None:
                    encoded = self.descriptor.vlad.encode(vlad)
                sims["vlad"] = encoded @ self.vlad.T + self.bias
        if calibration is not None:
            sims["fused"] = fuse(sims, calibration,
                                 None if cohort is None else cohort.scores(emb, counts), absent,
                                 self.same_hand)
        if absent is not None:
            sims = {name: np.where(absent, -np.inf, s) for name, s in sims.items()}
        return sims

    def alone(self, emb: np.ndarray | None, counts: np.ndarray | None,
              calibration: dict | None = None, cohort: Prepared | None = None
              ) -> dict[str, np.ndarray]:
        """`scores` [Q, W] with each writer enrolled alone, as `verify` weighs a pair (a
        query against one reference): only the fused score differs from a gallery's, its
        spread taken over that one writer's score beside the cohort's (`fuse`)."""
        sims = self.scores(emb, counts)
        if calibration is None:
            return sims
        against = None if cohort is None else cohort.scores(emb, counts)
        hands = self.same_hand
        return sims | {"fused": np.concatenate(
            [fuse({k: v[:, [w]] for k, v in sims.items()}, calibration, against,
                  same_hand=None if hands is None else hands[[w]])
             for w in range(next(iter(sims.values())).shape[1])], axis=1)}


class CohortHands(NamedTuple):
    """`cohort_hands`: `reads` [W, C] marks the cohort writer each enrolled writer's
    handwriting reads as, `same` those of them it is also named as; `scores` [W, C] and
    `thresholds` [W] are what decided it."""
    reads: np.ndarray
    same: np.ndarray
    scores: np.ndarray
    thresholds: np.ndarray


def cohort_hands(cohort: Prepared, cohort_writers: list[str], writers: list[str],
                 centroids: np.ndarray, sums: np.ndarray, document: dict,
                 encoded: np.ndarray | None = None,
                 lr: Callable[[np.ndarray], np.ndarray] | None = None) -> CohortHands | None:
    """The training writer of the `cohort`, if any, whose handwriting each enrolled writer's
    reads as: its enrolled images (`centroids`, `sums`), asked about as one document
    against the cohort's writers as a gallery (each scored by its SVM against the others,
    and normalised against the others), named as one of them at the `document` threshold
    for a gallery of the cohort's size.

    Someone who enrols a cohort writer (IAM's writers, with a model trained on IAM) would
    have its queries measured against its own hand, and its SVM trained to reject it: a
    quarter of its genuine lines answered "unknown". Such a writer is taken without that
    cohort writer (`same`) where it is also enrolled under that writer's label, as IAM's
    layouts name writers. The score alone does not tell one hand from a lookalike: 5 of
    147 IAM writers outside the cohort read as a cohort writer, and taking them without it
    let strangers through (docs/results.md, training writers enrolled). The label is
    evidence of its own: a writer enrolled under it is also taken where that writer is its
    closest in the cohort and the document's calibrated `lr` (log10) supports the same
    writer, though under the threshold (IAM's 286 from its second page). None where the
    card has no document rule for the fused score. `encoded`: the writers' VLAD vectors,
    where the gallery's side has encoded them (`Prepared.encoded`)."""
    rule = document.get("unknown_writer", {}).get("fused")
    if rule is None or cohort_writers is None:
        return None
    sims = cohort.scores(centroids, sums, encoded=encoded)
    scores = fuse(sims, document, sims, same_hand=np.eye(len(cohort.centroids), dtype=bool))
    rows = np.arange(len(scores))
    best = scores.argmax(axis=1)
    thresholds = query_thresholds(rule, scores)
    reads = np.zeros(scores.shape, bool)
    reads[rows, best] = scores[rows, best] >= thresholds
    supported = np.zeros(scores.shape, bool)  # closest, and the score supports it
    if lr is not None:
        supported[rows, best] = lr(scores[rows, best]) > 0
    named = np.array(writers, object)[:, None] == np.array(cohort_writers, object)[None, :]
    return CohortHands(reads, named & (reads | supported), scores, thresholds)


def exemplar_key(cohort: np.ndarray, descriptor: Descriptor) -> str:
    """What a gallery keeps exemplar SVMs against a cohort under: a hash of the cohort's
    summed descriptor rows as the export saved them, the descriptor's name and the SVMs'
    cost. Not of the encoded vectors, whose last bits may differ from machine to machine."""
    digest = hashlib.sha256(np.ascontiguousarray(cohort, np.float32).tobytes())
    digest.update(f"{descriptor.name} C={descriptors.EXEMPLAR_C}".encode())
    return digest.hexdigest()[:16]


def hinge_similarity(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """[Q, R] 1 - chi-square distance between contour-hinge counts (1: the same), by the
    computation `Identifier` runs against a gallery."""
    return descriptors.References(references).similarity(queries)


class Read(NamedTuple):
    """How `Features` read one image: the handwritten lines found on it (None: read as a
    line), its lines of machine print left out, the resolution it was read at, for a
    PDF or a TIFF of several pages the pages read and the blank ones left out, and for a
    photo the paper its sheet was straightened onto, or where no sheet was found on it the
    camera its EXIF names (read as if at 300 dpi: its handwriting's size is not known)."""

    lines: int | None
    printed: int
    dpi: float
    pages: int = 1
    blank: int = 0
    paper: str | None = None
    camera: str | None = None

    @property
    def resampled(self) -> float | None:
        """The resolution it was read at, where not SCAN_DPI (it was resampled from it)."""
        return None if self.dpi == SCAN_DPI else self.dpi

    @property
    def read_as(self) -> ReadAs:
        """As a gallery records it: a photo without its measured resolution, so that
        `gallery rebuild` finds its sheet again, and with its paper and lines."""
        return ReadAs(None if self.paper else self.dpi, "line" if self.lines is None else "page",
                      self.paper, self.camera, 1 if self.lines is None else self.lines)


class Features:
    """What a gallery needs of images: a model's embeddings and/or a descriptor's rows.
    Each image is read as `input` (`models.config.INPUTS`): a page's lines make one document, the
    unit mean of their embeddings and the sum of their descriptor rows. `dpi` is the images'
    scan resolution (None: each file's declared one, else 300), `paper` a photo's (None: A4,
    Letter or Legal by its shape; `handwriting`)."""

    def __init__(self, model: Model | None, descriptor: Descriptor | None,
                 input: str = "auto", dpi: float | None = None, paper: str | None = None):
        if model is None and descriptor is None:
            raise ModelError("no model and no descriptor: pass --model MODEL, or "
                             "--descriptor hinge")
        self.model, self.local, self.input = model, descriptor, input
        self.dpi, self.paper = dpi, paper

    @property
    def fingerprint(self) -> str | None:
        return self.model.fingerprint if self.model else None

    @property
    def descriptor(self) -> str | None:
        return self.local.name if self.local else None

    def __call__(self, images: list, thumbnails: bool = False, names: list[str] | None = None,
                 skip: bool = False) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(unit embeddings [N, D] or None, descriptor rows [N, K] or None) of the images;
        a blank or unreadable image (`UNREADABLE`) raises, naming it: by its path, or for an
        array by its entry in `names` (what the caller knows it as). With `skip` it is left
        out instead (of the rows and of what follows), and `self.skipped` maps its index to
        the reason; nothing read leaves (None, None). `self.read` then holds how each
        image was read (`Read`), and with `thumbnails` `self.thumbnails` each
        image drawn as reports show it (`evidence.thumbnail`, a page's lines outlined),
        from the pixels already read. The descriptor describes every image's lines on one
        pool of threads while the next image is read and embedded, so many single lines
        gain as a page's lines do."""
        emb, sizes, self.thumbnails = [], [], []
        self.read: list[Read] = []
        self.skipped: dict[int, str] = {}

        def lines_of_each_image() -> Iterator[np.ndarray]:
            for i, image in enumerate(progress(images, "reading", "image", leave=False)):
                name = (str(image) if not isinstance(image, np.ndarray)
                        else names[i] if names else "<array>")
                try:
                    scan = Model.read(image, name, self.input, self.dpi, self.paper)
                    parts, found = scan.parts()
                    if self.model:
                        emb.append(document_embedding(self.model.outputs_of(parts, name,
                                                                            found)))
                except UNREADABLE as err:
                    if not skip:
                        raise
                    self.skipped[i] = str(err)
                    continue
                if thumbnails:
                    self.thumbnails.append(evidence.thumbnail(scan.pages, scan.lines))
                self.read.append(Read(found, scan.printed, scan.dpi, len(scan.pages),
                                      scan.blank, scan.paper, scan.camera))
                sizes.append(len(parts))
                yield from parts

        counts: list[np.ndarray] = []
        if self.local:
            total, seen = None, 0
            # rows come in order, and an image's count of lines is known before its first
            for row in descriptors.each(self.local, lines_of_each_image()):
                total, seen = (row if total is None else total + row), seen + 1
                if seen == sizes[len(counts)]:
                    counts.append(total)
                    total, seen = None, 0
        else:
            for _ in lines_of_each_image():
                pass
        if not self.read:
            return None, None
        return (np.stack(emb) if self.model else None), (np.stack(counts) if self.local else None)


def model_descriptor(model: Model) -> Descriptor:
    """The descriptor a model's fusion was calibrated with (the hinge's parameters, and its
    VLAD codebook when the export fitted one); the default hinge for older cards."""
    fusion = model.card.get("fusion")
    if not fusion:
        return Descriptor(descriptors.Hinge())
    return Descriptor(Descriptor.hinge_of(fusion["descriptor"]),
                      model.vlad if Descriptor.vlad_of(fusion["descriptor"]) else None)


def features_for(model: Model | None, score: str | None, input: str = "auto",
                 dpi: float | None = None, paper: str | None = None) -> Features:
    """What `enroll` stores for a score: `embedding`, `hinge`, or the rest (`fused`, the
    default with a model: the embedding and the model's descriptor, so that one gallery
    serves every score)."""
    score = score or ("fused" if model else "hinge")
    if score not in SCORES:
        raise ModelError(f"unknown descriptor {score!r}; allowed: {', '.join(SCORES)}")
    if model is None and score != "hinge":
        raise ModelError(f"--descriptor {score} needs --model MODEL (or pass --descriptor "
                         "hinge to enroll without a model)")
    if score == "hinge":  # the model's hinge parameters, without loading its VLAD codebook
        fusion = model.card.get("fusion") if model else None
        hinge = Descriptor.hinge_of(fusion["descriptor"]) if fusion else descriptors.Hinge()
        return Features(None, Descriptor(hinge), input, dpi, paper)
    return Features(model, model_descriptor(model) if score != "embedding" else None, input,
                    dpi, paper)


def open_for(gallery: str | Path | Gallery, features: Features) -> Gallery:
    """The gallery to enrol `features` into, created for them when missing."""
    if not isinstance(gallery, Gallery):
        gallery = Gallery.open(gallery, create=True, fingerprint=features.fingerprint,
                               descriptor=features.descriptor)
    gallery.require(features.fingerprint, features.descriptor, exact=True)
    gallery.check_writable()
    return gallery


def enroll(gallery: str | Path | Gallery, features: Features, writer: str,
           images: list) -> Enrolled:
    """Add `writer`'s images to the gallery in one transaction. Images already enrolled (the
    same file content) are skipped without computing their features; an image already
    enrolled as another writer's refuses the whole enrolment. A missing gallery is created
    once the features are computed, so a failed first enrolment leaves no file behind. The
    writer's name is one line of text (`check_name`)."""
    check_name(gallery.path if isinstance(gallery, Gallery) else gallery, writer)
    return _enroll(gallery, features, writer, images)


def _enroll(gallery: str | Path | Gallery, features: Features, writer: str,
            images: list) -> Enrolled:
    """`enroll`, the name as it is: a gallery's own names enrolled again (`rebuild`) are
    kept, though made before `check_name`."""
    if not images:
        raise ValueError(f"enroll {writer}: no images given. Pass one or more scans of "
                         f"{writer}'s handwriting.")
    first: dict[str, int] = {}  # the same content twice in one call is one image
    for i, image in enumerate(images):
        first.setdefault(sha256_of(image), i)
    hashes = list(first)
    names = [f"<array {h[:12]}>" if isinstance(images[i], np.ndarray) else str(images[i])
             for h, i in first.items()]
    # stored as absolute paths, so that `gallery rebuild` finds them from any folder
    stored = [n if isinstance(images[i], np.ndarray) else os.path.abspath(n)
              for n, i in zip(names, first.values())]
    if not isinstance(gallery, Gallery):
        if Gallery.exists(gallery):
            gallery = open_for(gallery, features)
        else:
            check_can_write(gallery_file(gallery))
    owners = gallery.owners(hashes) if isinstance(gallery, Gallery) else {}
    for name, digest in zip(names, hashes):
        refuse_other_writer(name, writer, owners.get(digest))
    skipped = [n for n, h in zip(names, hashes) if h in owners]
    new = [i for i, h in enumerate(hashes) if h not in owners]
    if not new:
        return Enrolled(writer, 0, skipped)
    chosen = [images[first[hashes[i]]] for i in new]
    computed = features(chosen, thumbnails=True)
    read = [r.read_as for r in features.read]
    result = open_for(gallery, features).add(writer, [stored[i] for i in new],
                                             [hashes[i] for i in new], *computed,
                                             features.thumbnails, read, exemplar_of(features))
    unmeasured = {names[i]: r.camera for i, r in zip(new, features.read) if r.camera}
    return Enrolled(writer, result.added, skipped + result.skipped, unmeasured)


def exemplar_of(features: Features) -> Exemplar | None:
    """How an enrolment solves the writer's exemplar SVM, stored with its images so that
    `identify` need not solve it at every open (2.7 s for 10,000 writers at 128 centres;
    docs/results.md, RootSIFT read along the contours): against the model's cohort where
    its export calibrated them (the card's `fusion.exemplar`) and the features hold its
    VLAD codebook; else None."""
    model, local = features.model, features.local
    if not (local and local.vlad and model and model.card.get("fusion", {}).get("exemplar")
            and model.cohort is not None):
        return None
    # only the VLAD vectors and the duals: no hinge references, no weights
    negatives = local.vlad.encode(local.split(model.cohort[1])[1])
    key = exemplar_key(model.cohort[1], local)

    def solve(sums: np.ndarray) -> tuple[str, np.ndarray]:
        return key, descriptors.exemplar_duals(local.vlad.encode(local.split(sums)[1]),
                                               negatives)[0]
    return solve


class Identifier:
    """Ranks a gallery's writers for a query (one image, or several as one document) by one
    score (`SCORES`). Below the score's threshold the answer is "unknown writer". The
    gallery's aggregates are read once, from one transaction."""

    def __init__(self, gallery: Gallery, model: Model | None = None, score: str | None = None,
                 threshold: float | None = None, input: str = "auto",
                 dpi: float | None = None, paper: str | None = None):
        fusion = model.card.get("fusion") if model else None
        self.asked = score is not None
        self.score = score or ("fused" if fusion else "embedding" if model else "hinge")
        if self.score not in SCORES:
            raise ModelError(f"unknown score {self.score!r}; allowed: {', '.join(SCORES)}")
        if self.score != "hinge" and model is None:
            raise ModelError(f"--descriptor {self.score} needs --model MODEL")
        if self.score in ("fused", "vlad") and not fusion:
            raise ModelError(f"{model.path}: its export calibrated no fusion with a descriptor. "
                             "Pass --descriptor embedding or hinge.")
        if self.score == "vlad" and not Descriptor.vlad_of(fusion["descriptor"]):
            raise ModelError(f"{model.path}: its export fitted no VLAD codebook (exported "
                             "before it was added). Export the run again, or pass "
                             "--descriptor fused, embedding or hinge.")
        if self.score == "hinge":
            if gallery.descriptor is None:
                raise ModelError(f"{gallery.path}: enrolled without a descriptor. Identify with "
                                 f"--model (it was enrolled with model {gallery.fingerprint}), "
                                 "or enroll again with --descriptor hinge.")
            local = Descriptor(Descriptor.hinge_of(gallery.descriptor))
        else:
            local = model_descriptor(model) if self.score != "embedding" else None
        embedder = model if self.score in ("embedding", "fused") else None
        gallery.require(embedder and embedder.fingerprint,
                        gallery.descriptor if self.score == "hinge" else local and local.name)
        # the cohort normalises fused scores; with exemplar SVMs it is their negatives too
        exemplar = self.score in ("fused", "vlad") and fusion and fusion.get("exemplar")
        cohort = model.cohort if self.score == "fused" or exemplar else None
        self.cohort = Prepared(*cohort, local) if cohort is not None else None
        exemplar = exemplar and self.cohort is not None
        snapshot = gallery.snapshot(exemplar_key(cohort[1], local) if exemplar else None)
        if not snapshot.writers:
            raise ModelError(f"{gallery.path}: the gallery is empty. Enroll writers first.")
        self.gallery, self.model, self.writers = gallery, model, snapshot.writers
        self.fusion, self.given_threshold = fusion, threshold
        self.features = Features(embedder, local, input, dpi, paper)
        self.prepared = Prepared(snapshot.centroids if embedder else None,
                                 snapshot.hinge_sums if local else None, local)
        card = model.card if model else None
        self.likelihood = {(level, name): evidence.LikelihoodRatio.of(
            card, level, name) for level in evidence.LEVELS for name in SCORES}
        self.likelihood_by_lines = {
            (level, name, k): evidence.LikelihoodRatio.of(card, level, name, k)
            for k in evidence.LikelihoodRatio.fitted_lines(card)
            for level in evidence.LEVELS for name in SCORES}
        # the cohort scored as a gallery: in the fusion, and to find its writers enrolled
        self.hands = None
        if self.cohort is not None:
            if exemplar:
                self.cohort.exemplars(self.cohort)
            self.hands = cohort_hands(self.cohort, model.cohort_writers, snapshot.writers,
                                      snapshot.centroids, snapshot.hinge_sums,
                                      fusion["document"], self.prepared.encoded,
                                      self.likelihood["document", "fused"])
            self.prepared.same_hand = None if self.hands is None else self.hands.same
        if exemplar:
            self.prepared.exemplars(self.cohort, snapshot.duals)
        self._alike: dict[str, list[dict]] = {}
        self._lines: dict[str, int | None] = {}

    def lr_lines(self, writer: str | None) -> int | None:
        """The lines of an enrolled writer whose LRs have a calibrator of their own on the
        card (enrolled from so few: `few_lines`), else None (the form's)."""
        if writer is None or not self.likelihood_by_lines:  # a card before them
            return None
        lines = self.few_lines(writer)
        return lines if (evidence.LEVELS[0], self.score, lines) in self.likelihood_by_lines \
            else None

    def likelihood_of(self, level: str, name: str, lines: int | None = None
                      ) -> evidence.LikelihoodRatio | None:
        """The calibrator of a score for a kind of query: fitted with references of `lines`
        lines (a candidate's `lr_lines`) where the card has one, else the form's."""
        return (lines and self.likelihood_by_lines.get((level, name, lines))
                or self.likelihood[level, name])

    def log10_lrs(self, level: str, scores: dict[str, float], lines: int | None = None
                  ) -> dict[str, float]:
        """{score: calibrated log10 LR} of one candidate's scores for a kind of query
        (`evidence.LEVELS`), for the scores the card holds a calibrator of (`likelihood_of`
        the candidate's `lr_lines`)."""
        return {name: float(lr(value)) for name, value in scores.items()
                if (lr := self.likelihood_of(level, name, lines)) is not None}

    def thresholds(self, scores: np.ndarray, document: bool = False,
                   given: bool = True, best: np.ndarray | None = None) -> np.ndarray:
        """Each query's unknown-writer threshold [Q] on its best score, from its scores
        [Q, n_writers] (lines, or documents of several): `--threshold` (unless not `given`:
        `alike` asks about enrolled writers, not the queries it was given for), else the
        one calibrated for this score and kind of query, for the gallery's size and each
        query's lead (`query_thresholds`), and for its best writer's enrolled lines where
        they are so few that the card fitted a rule of their own (`rule_lines`; `best`:
        each query's best writer, a row of `self.writers`, where a column is left out of
        `scores`), or on older cards the one set at export."""
        if (growth := self.unknown_rule(document, given)) is not None:
            thresholds = query_thresholds(growth, scores)
            by_lines = {k: g[self.score] for k, g in self.rule_by_lines(document).items()
                        if self.score in g}
            if by_lines:  # the best writer's rule: of its lines where so few
                best = scores.argmax(1) if best is None else best
                lines = np.array(self.few_of([self.writers[b] for b in best]), dtype=float)
                for k, rule in by_lines.items():
                    if (at := lines == k).any():
                        thresholds[at] = query_thresholds(rule, scores[at])
            return thresholds
        if given and self.given_threshold is not None:
            threshold = self.given_threshold
        elif self.fusion:
            threshold = self.fusion["document" if document else "line"]["thresholds"][self.score]
        elif self.score == "embedding":
            threshold = self.model.identification_threshold
        else:
            threshold = (descriptors.HINGE_DOCUMENT_THRESHOLD if document
                         else descriptors.HINGE_THRESHOLD)
        return np.full(len(scores), threshold)

    def unknown_rule(self, document: bool, given: bool = True, lines: int | None = None
                     ) -> dict | None:
        """The card's unknown-writer rule for this score and kind of query (`_unknown_growth`
        in export), fitted for writers enrolled from `lines` lines where the card has one
        (`rule_lines`), else for writers enrolled from a form; None where `--threshold`
        was `given` or the card is older than the rule."""
        if (given and self.given_threshold is not None) or not self.fusion:
            return None
        rule = self.fusion["document" if document else "line"].get("unknown_writer", {})
        return (lines and self.rule_by_lines(document).get(lines, {}).get(self.score)
                or rule.get(self.score))

    def rule_by_lines(self, document: bool) -> dict[int, dict]:
        """{lines: {score: growth}} of the unknown-writer rules the card fitted for writers
        enrolled from so few lines (none on cards before them)."""
        rule = (self.fusion or {}).get("document" if document else "line", {}).get(
            "unknown_writer", {})
        return {int(k): v for k, v in rule.get("by_lines", {}).items()}

    def rule_lines(self, writer: str | None, document: bool = False) -> int | None:
        """The lines of an enrolled writer for whom the card fitted an unknown-writer rule
        of their own (enrolled from so few: `few_lines`), else None (the form's)."""
        lines = None if writer is None else self.few_lines(writer)
        return lines if self.score in self.rule_by_lines(document).get(lines, {}) else None

    def fitted_for_few(self) -> dict[str, bool]:
        """Whether the card fitted LRs (`lr_fitted`), an unknown-writer rule (`rule_fitted`)
        and measured that rule's rates (`rates_fitted`) for writers enrolled from so few
        lines (`evidence.few_lines_words`, `few_b_words`)."""
        rule = (self.fusion or {}).get("line", {}).get("unknown_writer", {})
        return {"lr_fitted": bool(self.likelihood_by_lines),
                "rule_fitted": bool(rule.get("by_lines")),
                "rates_fitted": bool(rule.get("by_lines_rates"))}

    def rule_rates(self, document: bool, pairs: bool = False, lines: int | None = None
                   ) -> dict | None:
        """`measured_rates` of the unknown-writer rule this identifier applies to a kind of
        query (`pairs`: as `verify` applies it; `lines`: the rule for writers enrolled from
        so few, `rule_lines`), where it applies the card's rule."""
        if self.unknown_rule(document) is None:
            return None
        return measured_rates(self.fusion, "document" if document else "line", self.score,
                              pairs, lines)

    def score_matrix(self, emb: np.ndarray | None, counts: np.ndarray | None,
                     document: bool = False, absent: np.ndarray | None = None) -> np.ndarray:
        """[Q, n_writers] scores of queries (lines, or documents) given as unit embeddings
        [Q, D] and/or descriptor rows [Q, K] (whichever the score uses); `absent` as in
        `Prepared.scores`."""
        return self.all_scores(emb, counts, document, absent)[self.score]

    def all_scores(self, emb: np.ndarray | None, counts: np.ndarray | None,
                   document: bool = False, absent: np.ndarray | None = None
                   ) -> dict[str, np.ndarray]:
        """{score: [Q, n_writers]} of every score the features allow (those the chosen score
        uses), and fused when it is the one chosen (against the model's cohort when its
        export kept one); `absent` as in `Prepared.scores`."""
        return self.prepared.scores(
            emb, counts,
            self.fusion["document" if document else "line"] if self.score == "fused" else None,
            self.cohort, absent)

    def alike(self, writers: list[str] | None = None, chunk: int = 256) -> list[dict]:
        """Enrolled writers whose own enrolled handwriting, asked about as one document
        against the rest of the gallery, is named as another's: [{"writer", "reads_as",
        "score", "threshold" (the document threshold of a gallery without the writer), and
        "log10_lr" where the card calibrated it, weighed as identify weighs the other writer
        as a candidate (`lr_lines`)}], for `writers` (default: all, a score
        against every other writer each). A query matching either may be the other's: the
        two may be lookalike hands, or one hand under two names, which is what set the tail
        of unknown lines on IAM (docs/results.md, the writer pairs that set the tail)."""
        rows = self._rows_of(self.writers if writers is None else writers)
        if len(self.writers) < 2:
            return []
        found = []
        # a chunk asks each of its writers against every writer
        for lo in progress(range(0, len(rows), chunk), "alike", "chunk"):
            part = rows[lo:lo + chunk]
            found += self._read_as(part, *self._asked(part))
        return found

    def alike_either(self, writer: str, candidates: int = ALIKE_CANDIDATES) -> list[dict]:
        """`alike` of one writer both ways: its own handwriting read as another's, then the
        writers whose handwriting reads as its. Those are looked for among the `candidates`
        writers that its own handwriting scores highest against (every writer of a gallery of
        up to that many more), as asking every writer costs a score against every writer
        each. All five such pairs among IAM's 193 writers read one way only, so a check of
        the writer's own way alone missed half of them (docs/results.md, alike both ways)."""
        row = self._rows_of([writer])
        if len(self.writers) < 2:
            return []
        scores, thresholds = self._asked(row)
        others = np.delete(np.arange(len(self.writers)), row[0])
        near = others[np.argsort(-scores[0], kind="stable")[:candidates]]
        own = self._read_as(row, scores, thresholds)
        back = [pair for pair in self._read_as(near, *self._asked(near))
                if pair["reads_as"] == writer]
        # a pair that reads both ways is one entry, said both ways (`evidence.alike_words`)
        for pair in own:
            if any(other["writer"] == pair["reads_as"] for other in back):
                pair["both_ways"] = True
                back = [other for other in back if other["writer"] != pair["reads_as"]]
        return own + back

    def _rows_of(self, writers: list[str]) -> np.ndarray:
        """The gallery rows of enrolled writers; one not enrolled raises, naming it."""
        unknown = sorted(set(writers) - set(self.writers))
        if unknown:
            raise GalleryError(f"{self.gallery.path}: no writer {', '.join(unknown)} enrolled; "
                               "`iam-writers gallery list` names the writers it holds")
        index = {w: i for i, w in enumerate(self.writers)}
        return np.array([index[w] for w in writers], np.int64)

    def _asked(self, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores [P, W - 1], document thresholds [P]) of the writers of rows `part`, each
        one's enrolled handwriting asked about as one document against the gallery without
        it (its own column dropped)."""
        own = np.arange(len(self.writers))[None, :] == part[:, None]
        emb = None if self.prepared.centroids is None else self.prepared.centroids[part]
        counts = None if self.prepared.sums is None else self.prepared.sums[part]
        scores = self.score_matrix(emb, counts, True, own)[~own].reshape(len(part), -1)
        best = scores.argmax(1)
        return scores, self.thresholds(scores, document=True, given=False,
                                       best=best + (best >= part))  # past its own column

    def _read_as(self, part: np.ndarray, scores: np.ndarray, thresholds: np.ndarray
                 ) -> list[dict]:
        """`alike`'s entries of the writers of rows `part` whose best score passes."""
        found = []
        for i, best in enumerate(scores.argmax(axis=1)):
            if scores[i, best] < thresholds[i]:
                continue
            other = self.writers[best + (best >= part[i])]  # past its own column
            lines = self.lr_lines(other)  # the reference, as identify's candidate
            lrs = self.log10_lrs("document", {self.score: float(scores[i, best])}, lines)
            found.append({"writer": self.writers[part[i]], "reads_as": other,
                          "score": float(scores[i, best]), "threshold": float(thresholds[i])}
                         | ({"log10_lr": lrs[self.score]} | ({"lr_lines": lines} if lines
                                                            else {}) if lrs else {}))
        return found

    def in_cohort(self) -> list[dict]:
        """Enrolled writers whose enrolled handwriting reads as a training writer's of the
        model's cohort, or that are taken as one, enrolled under its label
        (`cohort_hands`): [{"writer", "reads_as" (the training writer), "in_cohort": True,
        "taken_without" (its scores are taken without it), "score" (fused), "threshold",
        and "log10_lr" where the card calibrated it}]; one writer's: `cohort_of`. If they are
        one person, the model was trained on the writer's handwriting."""
        if self.hands is None:
            return []
        names, lr = self.model.cohort_writers, self.likelihood["document", "fused"]
        return [{"writer": w, "reads_as": names[c], "in_cohort": True,
                 "taken_without": bool(self.hands.same[i, c]),
                 "score": float(self.hands.scores[i, c]),
                 "threshold": float(self.hands.thresholds[i])}
                | ({"log10_lr": float(lr(self.hands.scores[i, c]))} if lr else {})
                for i, w in enumerate(self.writers)
                for c in np.flatnonzero(self.hands.reads[i] | self.hands.same[i])]

    @functools.cached_property
    def cohort_of(self) -> dict[str, dict]:
        """{writer: its `in_cohort` entry}: what `rank` adds to an answer that names such a
        writer (its LR is calibrated for writers the model was not trained on), what
        `enroll` and `verify` note of one writer."""
        return {hand["writer"]: hand for hand in self.in_cohort()}

    def few_of(self, writers: list[str]) -> list[int | None]:
        """`few_lines` of many writers, those not yet known read from the gallery at once."""
        if missing := list({w for w in writers if w not in self._lines}):
            self._lines |= dict.fromkeys(missing) | self.gallery.lines(missing)
        return [self.few_lines(w) for w in writers]

    def few_lines(self, writer: str) -> int | None:
        """The lines of handwriting an enrolled writer holds where fewer than
        `evidence.FEW_LINES` (else None), once per identifier: the card's rule and LRs, set
        on writers enrolled from a form, weigh it short (`rank` says so of the closest)."""
        if writer not in self._lines:
            self._lines[writer] = self.gallery.lines([writer]).get(writer)
        lines = self._lines[writer]
        return lines if lines is not None and lines < evidence.FEW_LINES else None

    def alike_of(self, writer: str) -> list[dict]:
        """`alike_either` of one writer, once per identifier: what `rank` adds to an answer
        that names a writer whose enrolled handwriting reads as another's, or others' as
        its (a writer may be in two pairs: the query may be either other writer's)."""
        if writer not in self._alike:
            self._alike[writer] = self.alike_either(writer)
        return self._alike[writer]

    def rank(self, images: list, top_k: int = 5, drawn: dict[str, bytes] | None = None,
             skip: bool = False) -> dict:
        """{"images", "writer" (None: unknown), "score", "threshold" (this query's, on the
        best writer's score: `thresholds`), "lead_rule" (where the lead lowered it: its
        weight w, the rule's threshold T for the gallery, the second best score s2),
        "rule_rates" (what that rule gave at export on the calibration queries of this kind:
        `measured_rates`), "level"
        (line, document or page), "top" (each writer's `similarity` by the chosen score, `scores`
        by every score computed, and where the card calibrated them `log10_lr` of each and
        `support`, the chosen one's in words; else the result's "note" says why not),
        "alike" (where the writer named reads as another, or others as it: each pair,
        `alike_of`), "in_cohort" (where it reads as a training writer of the model's
        cohort: `cohort_of`), "few_lines" (where the closest writer, named or not, is
        enrolled from fewer than `evidence.FEW_LINES` lines: its writer and lines), "lines"
        (handwritten
        lines found on each image read as a page), "printed" (lines of
        machine print found and left out, on pages with any), "dpi" (the resolution of
        each image read at another than 300 dpi, resampled from it), "pages" and
        "blank_pages" (each PDF or TIFF of several pages: the pages read, the blank ones
        left out), "paper" (each photo: the paper its sheet was straightened onto),
        "unmeasured" (each photo whose EXIF names a camera, with no sheet found on it: the
        camera; read as if at 300 dpi, its handwriting's size is not known), "enrolled"
        (each image that is an enrolled one: `enrolled_as`), "sha256" (each image's, of
        the file's bytes: what was asked about, exactly)} for one query: several
        images, one page or a file's pages are a document (their mean embedding, their
        summed hinge counts). Given `drawn`, each image's
        `evidence.thumbnail` is put in it by its path, drawn from the pixels read (for
        `evidence.identify_report`). With `skip`, the document is the images that can be
        read, and "skipped" maps each other one to why (`Features`); none read raises."""
        computed, read = self._features(images, top_k, drawn, skip)
        if not read:
            raise ImageError(f"none of the {len(images)} images could be read; the first: "
                             f"{self.features.skipped[0]}")
        skipped = {str(images[i]): why for i, why in self.features.skipped.items()}
        return self._ranked(read, *computed, self.features.read, top_k) | (
            {"skipped": skipped} if skipped else {})

    def rank_each(self, images: list, top_k: int = 5, drawn: dict[str, bytes] | None = None,
                  skip: bool = False) -> list[dict]:
        """`rank` of every image as a query of its own, their lines described on one pool
        of threads (150 real lines: 19 s one `rank` each, 10 s so; docs/results.md). With
        `skip`, an image that cannot be read (`UNREADABLE`) gets {"images": [it], "error":
        why} in its place, instead of failing them all."""
        (emb, counts), read = self._features(images, top_k, drawn, skip)
        ranked = iter([self._ranked([image], None if emb is None else emb[i:i + 1],
                                    None if counts is None else counts[i:i + 1], [how], top_k)
                       for i, (image, how) in enumerate(zip(read, self.features.read))])
        skipped = self.features.skipped
        return [{"images": [str(image)], "error": skipped[i]} if i in skipped else next(ranked)
                for i, image in enumerate(images)]

    def _features(self, images: list, top_k: int, drawn: dict[str, bytes] | None, skip: bool
                  ) -> tuple[tuple[np.ndarray | None, np.ndarray | None], list]:
        """(`Features` of the images, the images read: all of them unless `skip`)."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        computed = self.features(images, thumbnails=drawn is not None, skip=skip)
        read = [image for i, image in enumerate(images) if i not in self.features.skipped]
        if drawn is not None:
            drawn.update(zip(map(str, read), self.features.thumbnails))
        return computed, read

    def enrolled_as(self, hashes: dict[str, str]) -> dict[str, dict[str, str]]:
        """{image: {"writer", "path"}} of those images ({image: SHA-256, as `enroll` hashes
        it}) that are an enrolled image (the same content): such a query names its own
        enrolment."""
        owners = self.gallery.owners(list(hashes.values()))
        return {image: dict(zip(("writer", "path"), owners[h]))
                for image, h in hashes.items() if h in owners}

    def _ranked(self, images: list, emb: np.ndarray | None, counts: np.ndarray | None,
                read: list[Read], top_k: int) -> dict:
        several = len(images) > 1 or read[0].pages > 1
        document = several or read[0].lines is not None
        sims = {k: v[0] for k, v in self.all_scores(
            None if emb is None else unit(emb.mean(axis=0))[None],
            None if counts is None else counts.sum(axis=0)[None], document).items()}
        order = np.argsort(-sims[self.score])[:top_k]
        threshold = float(self.thresholds(sims[self.score][None], document)[0])
        best = self.writers[order[0]] if sims[self.score][order[0]] >= threshold else None
        level = "document" if several else "page" if document else "line"
        top = []
        for i in order:
            writer, lines = self.writers[i], self.lr_lines(self.writers[i])
            scores = {k: float(v[i]) for k, v in sims.items()}
            lrs = self.log10_lrs(level, scores, lines)
            top.append({"writer": writer, "similarity": scores[self.score], "scores": scores}
                       | ({"log10_lr": lrs, "support": self.likelihood_of(
                           level, self.score, lines).support(scores[self.score])}
                          | ({"lr_lines": lines} if lines else {})
                          if self.score in lrs else {}))
        result = {"images": [str(i) for i in images], "writer": best, "score": self.score,
                  "threshold": threshold, "level": level, "top": top}
        if best is not None and (alike := self.alike_of(best)):
            result["alike"] = alike
        if best is not None and (hand := self.cohort_of.get(best)):
            result["in_cohort"] = hand
        if (lines := self.few_lines(closest := self.writers[order[0]])) is not None:
            result["few_lines"] = {"writer": closest, "lines": lines} | (
                {"lr_lines": lines} if "lr_lines" in top[0] else {})
        growth = self.unknown_rule(document)  # None under --threshold
        if growth and (rule_lines := self.rule_lines(closest, document)) is not None:
            result["rule_lines"] = rule_lines  # the threshold is the rule's for so few
            growth = self.unknown_rule(document, lines=rule_lines)
        if growth and (lead := applied_lead(growth, len(self.writers))):
            result["lead_rule"] = {"weight": lead["weight"],
                                   "threshold": lead_threshold(growth, len(self.writers)),
                                   "second": float(np.partition(sims[self.score], -2)[-2])}
        if rates := self.rule_rates(document, lines=result.get("rule_lines")):
            result["rule_rates"] = rates
        if "log10_lr" not in top[0]:
            result["note"] = evidence.NO_LR if self.model else evidence.NO_LR_WITHOUT_MODEL
        result["sha256"] = {str(i): sha256_of(i) for i in images}
        if enrolled := self.enrolled_as(result["sha256"]):
            result["enrolled"] = enrolled
        found = {str(i): r.lines for i, r in zip(images, read) if r.lines is not None}
        typed = {str(i): r.printed for i, r in zip(images, read) if r.printed}
        resampled = {str(i): r.resampled for i, r in zip(images, read) if r.resampled}
        paged = {str(i): r.pages for i, r in zip(images, read) if r.pages > 1}
        blank = {str(i): r.blank for i, r in zip(images, read) if r.blank}
        paper = {str(i): r.paper for i, r in zip(images, read) if r.paper}
        unmeasured = {str(i): r.camera for i, r in zip(images, read) if r.camera}
        return result | ({"lines": found} if found else {}) | (
            {"printed": typed} if typed else {}) | ({"dpi": resampled} if resampled else {}) | (
            {"pages": paged} if paged else {}) | ({"blank_pages": blank} if blank else {}) | (
            {"paper": paper} if paper else {}) | (
            {"unmeasured": unmeasured} if unmeasured else {})


class EnrolledWriter(NamedTuple):
    """A writer of a gallery, as `verify`'s known handwriting: the features enrolled."""

    gallery: Gallery
    writer: str


def verify(model: Model, questioned, reference, score: str | None = None,
           input: str = "auto", dpi: float | None = None,
           drawn: dict[str, bytes] | None = None, paper: str | None = None) -> dict:
    """Did the writer of `reference` write `questioned`? The reference (an image, or an
    `EnrolledWriter`: the features a gallery holds of a writer, months after the files may
    have gone) is enrolled alone in a gallery in memory and the questioned image identified
    against it, so that `verify` weighs a pair by the same score as `identify` (fused by
    default: the embedding's cosine alone named fewer pairs right, docs/results.md,
    verify), at the unknown-writer threshold for a gallery of one writer, with the same
    likelihood ratios.

    Returns {"a", "b", "score" (the value), "scored_by", "scores" (every score computed),
    "threshold", "same_writer", "sha256_a", "sha256_b" (each file's: what was compared,
    exactly; for an enrolled writer "b_enrolled" instead: its "gallery", "writer",
    "images", {path: SHA-256}, and "lines", of them all: `Gallery.lines`), "level" (of the
    questioned image: line, page, or document for a file of several pages), `log10_lr` and
    `support` where the card calibrated them (else "note"), "lines_a",
    "lines_b" for images read as pages, "printed_a", "printed_b" for pages with machine
    print (its lines, left out), "dpi_a", "dpi_b" for images read at another resolution
    than 300 dpi, "pages_a", "pages_b", "blank_pages_a", "blank_pages_b" for files of
    several pages (read, and blank ones left out), "paper_a", "paper_b" for photos (the
    paper each sheet was straightened onto), "unmeasured_a", "unmeasured_b" for photos
    with no sheet found (the camera their EXIF names: `Identifier.rank`), and "b_in_cohort"
    where the reference reads as a training writer of the model's cohort
    (`Identifier.in_cohort`): if it is that writer, it is measured against its own hand,
    which lowers the score, and "same_image" where a is b or one of b's images (the same
    content): a match that says nothing, "rule_rates" where the card's rule decided:
    what it gave at export on pairs of calibration queries and writers enrolled alone
    from a form (`measured_rates` with `pairs`), and "b_lines" where b holds fewer
    than `evidence.FEW_LINES` lines (a line image: 1) and rates or an LR were given,
    which do not describe such a b}. Given
    `drawn`, the `evidence.thumbnail` of "a" and of "b" are put in it (for
    `evidence.verify_report`; an enrolled writer's first stored thumbnail, none where
    its images were enrolled before they were kept)."""
    features = features_for(model, score, input, dpi, paper)
    gallery = new_in_memory(features.fingerprint, features.descriptor)
    try:  # the reference's features only: the gallery keeps no thumbnail, as none shows it
        if isinstance(reference, EnrolledWriter):
            reference.gallery.require(features.fingerprint, features.descriptor, exact=True)
            enrolment = reference.gallery.enrolment(reference.writer)
            gallery.add("reference", enrolment.paths, enrolment.hashes,
                        enrolment.embeddings, enrolment.hinge, read=enrolment.read)
            known, b = None, f"{reference.writer} (enrolled in {reference.gallery.path})"
        else:
            known_sha256 = sha256_of(reference)
            emb, rows = features([reference], thumbnails=drawn is not None)
            known, b = features.read[0], str(reference)
            gallery.add("reference", [str(reference)], [known_sha256], emb, rows,
                        read=[known.read_as])
        identifier = Identifier(gallery, model, score, input=input, dpi=dpi, paper=paper)
        asked: dict[str, bytes] | None = None if drawn is None else {}
        r = identifier.rank([questioned], top_k=1, drawn=asked)
        hand = identifier.cohort_of.get("reference")
        rates = identifier.rule_rates(r["level"] != "line", pairs=True,
                                      lines=r.get("rule_lines"))
        b_lines = gallery.lines(["reference"]).get("reference")
    finally:
        gallery.close()
    if drawn is not None:
        drawn["a"] = asked[str(questioned)]
        shown = features.thumbnails[0] if known else next(
            (t for t in enrolment.thumbnails if t is not None), None)
        if shown is not None:
            drawn["b"] = shown
    top = r["top"][0]
    result = {"a": str(questioned), "b": b, "score": top["similarity"],
              "scored_by": r["score"], "scores": top["scores"], "threshold": r["threshold"],
              "same_writer": r["writer"] is not None, "level": r["level"],
              "sha256_a": r["sha256"][str(questioned)]}
    if known:
        result["sha256_b"] = known_sha256
    else:
        result["b_enrolled"] = {"gallery": str(reference.gallery.path),
                                "writer": reference.writer,
                                "images": dict(zip(enrolment.paths, enrolment.hashes)),
                                "lines": b_lines}
    if "log10_lr" in top:
        result |= {"log10_lr": top["log10_lr"][r["score"]], "support": top["support"]} | (
            {"lr_lines": top["lr_lines"]} if "lr_lines" in top else {})
    else:
        result["note"] = r["note"]
    extra = {"lines_a": r.get("lines", {}).get(str(questioned)),
             "lines_b": known and known.lines,
             "printed_a": r.get("printed", {}).get(str(questioned)),
             "printed_b": known and known.printed or None,
             "dpi_a": r.get("dpi", {}).get(str(questioned)),
             "dpi_b": known and known.resampled,
             "pages_a": r.get("pages", {}).get(str(questioned)),
             "pages_b": known.pages if known and known.pages > 1 else None,
             "blank_pages_a": r.get("blank_pages", {}).get(str(questioned)),
             "blank_pages_b": known and known.blank or None,
             "paper_a": r.get("paper", {}).get(str(questioned)),
             "paper_b": known and known.paper,
             "unmeasured_a": r.get("unmeasured", {}).get(str(questioned)),
             "unmeasured_b": known and known.camera,
             "b_in_cohort": {k: hand[k] for k in ("reads_as", "score", "threshold")}
             if hand else None,
             "same_image": True if "enrolled" in r else None,
             "rule_rates": rates,
             "rule_lines": r.get("rule_lines"),
             "b_lines": b_lines if b_lines is not None and b_lines < evidence.FEW_LINES
             and (rates or "log10_lr" in top) else None}
    return result | {k: n for k, n in extra.items() if n is not None}


class Layout(NamedTuple):
    """The writers of a layout folder ({writer: images}), and the files of a folder of
    writers' folders that are not taken for images by their names."""

    writers: dict[str, list[Path]]
    skipped: list[Path]


def layout_writers(folder: str | Path, forms_per_writer: int = 0) -> Layout:
    """The writers of an extracted Kaggle- or IAM-layout folder, or of a folder of writers'
    folders (`writer_folders`), each writer's first `forms_per_writer` forms (0: all) in
    form order; in writers' folders a file is a form."""
    from iam_writers_tfds import iam_layout, kaggle_layout

    folder = Path(folder)
    if root := kaggle_layout.find_root(folder):
        records, _ = kaggle_layout.scan(root)
    elif iam_layout.is_root(folder) and (folder / "lines").is_dir() and (folder / "ascii").is_dir():
        records, _ = iam_layout.scan(folder, folder)
    else:
        writers, skipped = writer_folders(folder)
        return Layout({w: files[:forms_per_writer or None] for w, files in writers.items()},
                      skipped)
    forms: dict[str, dict[str, list[Path]]] = {}
    for r in sorted(records, key=lambda r: (r.writer_id, r.form_id, r.path.name)):
        forms.setdefault(r.writer_id, {}).setdefault(r.form_id, []).append(r.path)
    return Layout({writer: [p for form in list(by_form)[:forms_per_writer or None]
                            for p in by_form[form]]
                   for writer, by_form in forms.items()}, [])


def writer_folders(folder: Path) -> Layout:
    """A folder that holds a folder for each writer, named by the writer, with their
    handwriting in it (in folders of its own too), as a case is often kept. Images are taken
    by their names (`SUFFIXES`), other files are `skipped`, hidden ones (and a Mac's zip's
    __MACOSX) passed over. A writer's folder without images, or a name `check_name` refuses,
    raises before any enrolment."""
    from iam_writers_tfds.kaggle_layout import LayoutError

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {'not a' if folder.exists() else 'no such'} "
                                "folder. Pass a folder of writers' folders, or of a Kaggle "
                                "or IAM layout.")
    writers: dict[str, list[Path]] = {}
    skipped: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name == "__MACOSX":  # a Mac's zip's forks
            continue
        if not entry.is_dir():
            skipped.append(entry)
            continue
        check_name(entry, entry.name)
        files = sorted(f for f in entry.rglob("*") if f.is_file() and not any(
            part.startswith(".") for part in f.relative_to(entry).parts))
        writers[entry.name] = [f for f in files if f.suffix.lower() in SUFFIXES]
        skipped += [f for f in files if f.suffix.lower() not in SUFFIXES]
        if not writers[entry.name]:
            raise LayoutError(f"{entry}: no images in this writer's folder (taken by their "
                              f"names: {', '.join(sorted(SUFFIXES))}). Add {entry.name}'s "
                              "handwriting, or move the folder out; nothing was enrolled.")
    if not writers:
        raise LayoutError(
            f"{folder}: neither a folder of writers' folders (FOLDER/WRITER/images), nor the "
            f"Kaggle layout (forms_for_parsing.txt + data_subset/), nor the official IAM one "
            f"(lines/ + ascii/). One writer's images are enrolled with --writer ID IMAGES.")
    return Layout(writers, skipped)


REBUILD_NAMED = 5  # files named when a rebuild cannot read its images again


def rebuild(old: str | Path, new: str | Path, features: Features,
            look_in: Sequence[Path] = ()) -> Rebuilt:
    """Enrol every writer of gallery `old` again, into a new gallery `new` made for
    `features` (another export of the model, or another descriptor), from the files their
    images were enrolled from, with a progress bar where stderr is a terminal: a gallery
    kept for months outlives its model. Each file is read as it was enrolled (the resolution,
    as a line or a page) unless `features` say otherwise (`_enroll_as_before`). Every file
    must still hold what was enrolled (its SHA-256), or nothing is written and the files are
    named; a file the runtime refuses now (`UNREADABLE`) names its writer, and nothing is
    written. A file moved since (or changed, its enrolled bytes copied elsewhere) is looked
    for by its SHA-256 under the folders `look_in` (`find_moved`), and the new gallery
    records where it was found. `new` appears whole or not at all: it is built under a
    temporary name beside it. The writers and images keep their enrolment dates."""
    target = gallery_file(new)
    if Gallery.exists(new):
        raise GalleryError(f"{target}: already exists. Rebuild into a new gallery path.")
    check_can_write(target)
    source = Gallery.open(old)
    try:
        writers, dates = source.sources(), source.dates()
    finally:
        source.close()
    if not writers:
        raise GalleryError(f"{source.path}: no writers enrolled, nothing to rebuild.")
    lost = lost_files(writers)
    moved = find_moved(lost, look_in) if lost and look_in else {}
    named = [lost_words(path) for sha, path in lost.items() if sha not in moved]
    if named:
        more = f" and {len(named) - REBUILD_NAMED} more" if len(named) > REBUILD_NAMED else ""
        where = (f" (not found under {', '.join(map(str, look_in))} either)" if look_in
                 else "")
        raise GalleryError(f"{source.path}: {len(named)} enrolled image(s) cannot be read as "
                           f"they were enrolled{where}: {', '.join(named[:REBUILD_NAMED])}"
                           f"{more}. Restore them, or name the folders they were moved to "
                           "with --look-in DIR (a relative path: run from the folder it was "
                           "enrolled from); nothing was written.")
    writers = [(writer, [s._replace(path=moved.get(s.sha256, s.path)) for s in images])
               for writer, images in writers]
    building = target.with_name(f".{target.stem}.rebuilding{target.suffix}")
    parts = [building.with_name(building.name + end) for end in ("", "-wal", "-shm")]
    for part in parts:
        part.unlink(missing_ok=True)
    try:
        gallery = Gallery.open(building, create=True, fingerprint=features.fingerprint,
                               descriptor=features.descriptor)
        try:
            done = []
            for writer, images in progress(writers, "rebuilding", "writer"):
                try:
                    done.append(_enroll_as_before(gallery, features, writer, images))
                except UNREADABLE as err:  # refused now (a check since its enrolment)
                    raise GalleryError(
                        f"{err} It is enrolled as {writer}'s in {source.path}: remove them "
                        f"there (`iam-writers gallery remove {source.path} {writer}`) or "
                        "enrol them again from other images, then rebuild; nothing was "
                        "written.") from None
            gallery.keep_dates(dates, f"from {source.path.resolve()} (built by "
                                      f"{source.built_by}), built by {gallery.built_by}"
                                      + (f"; {len(moved)} file(s) found moved" if moved
                                         else ""))
        finally:
            gallery.close()
        building.replace(target)
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
    return Rebuilt(done, {path: moved[sha] for sha, path in lost.items() if sha in moved})


class Rebuilt(NamedTuple):
    """What `rebuild` enrolled, and the files it found moved: {enrolled path: found path}
    in enrolment order."""

    enrolled: list[Enrolled]
    moved: dict[str, str]


def find_moved(lost: dict[str, str], folders: Sequence[Path]) -> dict[str, str]:
    """{SHA-256: absolute path} of the `lost` files ({SHA-256: enrolled path}) found under
    `folders` (recursively) by their content: files of a lost file's name first, then, while
    any is still lost, every other file. With a progress bar where stderr is a terminal."""
    for folder in folders:
        if not folder.is_dir():
            raise GalleryError(f"{folder}: no such folder to look in. Name the folder the "
                               "enrolled images were moved to.")
    files = sorted({f.resolve() for folder in folders for f in folder.rglob("*")
                    if f.is_file()})
    names = {Path(path).name for path in lost.values()}
    found: dict[str, str] = {}
    for batch in ([f for f in files if f.name in names], [f for f in files if f.name not in names]):
        for file in progress(batch, "looking for moved images", "file"):
            if len(found) == len(lost):
                return found
            try:
                with file.open("rb") as f:
                    sha = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:  # unreadable here: not the one
                continue
            if sha in lost:
                found.setdefault(sha, str(file))
    return found


def _enroll_as_before(gallery: Gallery, features: Features, writer: str,
                      images: list[Source]) -> Enrolled:
    """Enrol a writer's images again, each read as it was enrolled (its resolution, as a
    line or a page, a photo's paper) unless `features` set them (a `--dpi`, an `--input`
    other than auto, a `--paper`)."""
    groups: dict[tuple[float | None, str | None, str | None], list[str]] = {}
    for s in images:
        groups.setdefault((s.dpi, s.read_as, s.paper), []).append(s.path)
    added = 0
    for (dpi, read_as, paper), paths in groups.items():
        added += _enroll(gallery, Features(features.model, features.local,
                                           read_as if features.input == "auto" and read_as
                                           else features.input, features.dpi or dpi,
                                           features.paper or paper),
                         writer, paths).added
    return Enrolled(writer, added, [])


def enroll_writers(gallery: str | Path | Gallery, features: Features,
                   writers: dict[str, list[Path]]) -> list[Enrolled]:
    """Enrol every writer of a layout folder (`layout_writers`) in this one process, one
    transaction per writer (the gallery is made with the first), with a progress bar where
    stderr is a terminal."""
    return [enroll(gallery, features, writer, images)
            for writer, images in progress(writers.items(), "enrolling", "writer")]
