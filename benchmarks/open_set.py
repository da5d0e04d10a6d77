"""Open-set writer identification: hinge, embedding and fused, on the same enrolments.

    python benchmarks/open_set.py DIR [--extra EXTRA_DIR] [--forms FORMS_DIR]
                                  [--gallery 80] [--epochs 40] [--out D]
    python benchmarks/open_set.py DIR --hinge-only
    python benchmarks/open_set.py --synthetic [--writers 24]
    python benchmarks/open_set.py DIR ... --folds K --fold I --out D_I   (I = 0 .. K-1)
    python benchmarks/open_set.py --pool D_0 D_1 ...

DIR is a Kaggle-layout folder, or one in the official IAM layout. Its writers are split
(seeded) into a known group (40 of 56) and an unseen group. The embedding model
(`patch_embed`) trains on the known writers, plus the one-form writers of EXTRA_DIR except
the distractors (seeded; as many as fill gallery (b) below to `--gallery` writers, by
default #22's minimum of 80), which no model sees; training holds a seeded fifth of the
known writers out, and a fifth of the other extra writers (`calibration_share`), and export
calibrates the fusion weights, the thresholds (at 1% false accepts) and the likelihood
ratios on them; the fused score is normalised against half the training writers (the
export's cohort), and the other half join the calibration writers as different writers for
the thresholds. No model or calibration sees the unseen writers; whether earlier runs
probed them, and so whether the figures are development, the run prints first
(`--ledger`, benchmarks/ledger.py), and it records them. From then on everything runs
through the TF-free runtime on the float32 TFLite file, as a user would.
One form of each unseen writer is enrolled and the lines of their other forms are
identified, against two galleries:

  (a) the unseen writers only;
  (b) the same plus the distractors, each enrolled from its one form and never probed.

For each gallery and score (hinge; embedding; vlad, the RootSIFT + VLAD of Christlein et al.
that export fits on 400 lines of the training writers, scored by exemplar SVMs against the
export's cohort where the card says so; anchor, #22's recipe: RootSIFT at SIFT's own
keypoints rather than along the contours, its own codebook fitted alike, VLAD by plain
cosine; fused) it prints top-1 and top-5 of lines, of documents (a form's
cut lines as one query) and, with `--forms`, of page scans (their lines found by the
runtime), the per-writer mean of line top-1, and at the stored thresholds (none for the
anchor) the rejection of writers not enrolled (each query against the gallery without its
writer; in (b) also with the distractors' own lines and forms as more such queries, "rej.
all") and the false rejection of enrolled ones; and the oracle's false rejection: the
rule's statistic (the best score plus its lead) held to the threshold that accepts 1% of
those unknown queries, read off them (a bound that no calibration decides, so that every
score, the anchor too, is compared at the same rate). Then the quality of the card's log10
likelihood ratios at each level, over every comparison of a query with an enrolled writer:
Cllr, Cllr-min, ECE at prior odds 1 to 100, misleading evidence (LR < 1 for the same writer,
> 1 for a different one) and strong misleading evidence (beyond 100 to 1), with Tippett and
ECE plots of the fused score in D; then `verify`: every query against each writer of (b)
enrolled alone, as `verify` weighs a pair (EER, pairs decided right at the threshold of a
one-writer gallery, Cllr); then the cost of a page scan, and the minutes of training and
of export (the calibration). Each table of top-1 is followed by 95% intervals, drawing the
probed writers again (a fold's sample is its writers, not its lines), and by the probed
writers that the fused score (or the hinge, without a model) misnames most.
`--out D` keeps the work in D, and a second run with the same D reuses its trained model.
With `--few-lines`, gallery (b)'s writers are enrolled again from k lines of their enrolled
form (k = 1 to 5, the export's `FEW_LINE_RULES`; seeded draws), and the fused score's
identify and verify rates are printed for each k under the card's rule for so few lines
beside the form's rule on the same galleries (the baseline: the card without that rule),
with the oracle and the line LRs' quality.

A fold of 16 writers measures little (the intervals say how little), and seeded draws
probe the same writers again. `--folds K --fold I` instead probes fold I of a seeded
partition of DIR's writers into K, training on the rest, so that K runs probe every
writer once; each run keeps its queries' outcomes in D/queries.json, and `--pool` adds
the K runs up, query by query, with intervals drawing all their writers again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import ledger
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
GALLERY = 80  # writers in gallery (b): #22 asks for at least 80, with distractors


def split_writers(writers: list[str], known: int, seed: int) -> tuple[list[str], list[str]]:
    """(known, unseen) writer ids, a seeded partition of `writers`."""
    order = np.random.default_rng(seed).permutation(sorted(writers))
    return sorted(order[:known]), sorted(order[known:])


def distractor_writers(extra_writers: list[str], unseen: list[str], gallery: int,
                       seed: int) -> tuple[list[str], list[str]]:
    """(distractors, the other extra writers): a seeded choice of as many extra writers as
    make gallery (b), the unseen writers and the distractors, `gallery` writers (or all of
    them, where there are fewer)."""
    wanted = min(max(gallery - len(unseen), 0), len(extra_writers))
    return split_writers(extra_writers, wanted, seed)


def test_writers(writers: list[str], seed: int, known: int | None = None,
                 folds: int | None = None, fold: int = 0) -> tuple[list[str], list[str]]:
    """(known, unseen) writer ids: `known` of them (default 40 of 56, scaled) drawn by
    `seed`, or with `folds`, the unseen are fold `fold` of a seeded k-fold partition, so
    that K runs probe every writer once."""
    if not folds:
        return split_writers(writers, known or round(len(writers) * 40 / 56), seed)
    if not 0 <= fold < folds <= len(writers):
        raise SystemExit(f"--fold {fold} of --folds {folds}: need 0 <= fold < folds <= "
                         f"{len(writers)} writers")
    unseen = sorted(np.array_split(np.random.default_rng(seed).permutation(sorted(writers)),
                                   folds)[fold])
    return sorted(set(writers) - set(unseen)), unseen


def enrolment(records, seed: int) -> tuple[dict[str, list[int]], list[int]]:
    """(enrolled line indices per writer, probe line indices): one form of each writer
    (seeded) is enrolled, the lines of its other forms are probes; writers with a single
    form are enrolled and never probed."""
    rng = np.random.default_rng(seed)
    enrolled, probe = {}, []
    for w in sorted({r.writer_id for r in records}):
        rows = [i for i, r in enumerate(records) if r.writer_id == w]
        forms = sorted({records[i].form_id for i in rows})
        chosen = forms[rng.integers(len(forms))]
        enrolled[w] = [i for i in rows if records[i].form_id == chosen]
        probe += [i for i in rows if records[i].form_id != chosen]
    return enrolled, probe


def linked_layout(records, writers: set[str], folder: Path) -> Path:
    """A Kaggle-layout folder of links to the images of `writers` only."""
    images = folder / "data_subset" / "data_subset"
    images.mkdir(parents=True)
    forms = sorted({(r.form_id, r.writer_id) for r in records if r.writer_id in writers})
    (folder / "forms_for_parsing.txt").write_text("".join(f"{f} {w}\n" for f, w in forms))
    for r in records:
        if r.writer_id in writers:
            (images / r.path.name).symlink_to(r.path.resolve())
    return folder


def level_scores(identifier, emb, counts, records, probe, pages=None,
                 strangers: bool = False) -> dict:
    """{level: (scores [Q, W], each query's writer index)} of one score: the probe lines,
    their forms as documents (their cut lines as one query), and, given `pages` (forms,
    embeddings, hinge counts of the forms' page scans), the page scans. With `strangers`,
    each query is scored against the gallery without its writer (`absent`): as a writer
    who is not enrolled would be, where a cohort-normalised score depends on the gallery."""
    from models.runtime import unit

    writers = identifier.writers

    def scored(emb, counts, label, document=False):
        if not strangers:
            return identifier.score_matrix(emb, counts, document), label
        absent = label[:, None] == np.arange(len(writers))[None, :]
        return identifier.score_matrix(emb, counts, document, absent), label

    label = np.array([writers.index(records[i].writer_id) for i in probe])
    pick = (lambda rows: emb[rows]) if emb is not None else (lambda rows: None)
    out = {"line": scored(pick(probe), None if counts is None else counts[probe], label)}
    forms = np.array([records[i].form_id for i in probe])
    form_ids = sorted(set(forms))
    by_form = [np.array(probe)[forms == f] for f in form_ids]
    out["document"] = scored(
        None if emb is None else np.stack([unit(emb[rows].mean(0)) for rows in by_form]),
        None if counts is None else np.stack([counts[rows].sum(0) for rows in by_form]),
        np.array([writers.index(records[rows[0]].writer_id) for rows in by_form]), True)
    if pages is not None:
        page_forms, page_emb, page_counts = pages
        owner = {records[i].form_id: records[i].writer_id for i in probe}
        out["page"] = scored(page_emb, page_counts,
                             np.array([writers.index(owner[f]) for f in page_forms]), True)
    return out


def figures(identifier, levels: dict, enrolled_writers, unknown: dict,
            others: dict | None = None) -> dict:
    """Figures of one score: top-1 and top-5 at each level, the per-writer mean of line
    top-1, and at the stored thresholds the rejection of writers not enrolled (`unknown`:
    `level_scores` of the same queries as strangers) and the false rejection of enrolled
    ones, of lines and of documents; with `others` (`level_scores` of more queries as
    strangers: the distractors' own lines and forms), the rejection of those unknown
    queries and the probes' together.
    Where the card's rule weighs the best writer's lead over the second, the same rates
    under the best score alone (keys ending "_top")."""
    from models.evaluate import topk_accuracy
    from models.runtime.identify import query_thresholds

    sims, label = levels["line"]
    hit = sims.argmax(1) == label
    result = {"macro_line_top1": float(np.mean([hit[label == w].mean()
                                                for w in np.unique(label)])),
              "n_lines": len(label), "n_forms": len(levels["document"][1]),
              "n_writers": len(identifier.writers), "n_probed_writers": len(np.unique(label)),
              "n_enrolled": int(len(enrolled_writers))}
    writers = identifier.writers
    result["queries"] = {}  # {level: each query's writer, hit, ...}: what --pool adds up
    for level, (sims, label) in levels.items():
        result[f"{level}_top1"] = topk_accuracy(sims, label, 1)
        result[f"{level}_top5"] = topk_accuracy(sims, label, 5)
        hit = sims.argmax(1) == label
        result[f"{level}_interval"] = writer_interval(hit, label)
        result["queries"][level] = {"writer": [writers[w] for w in label],
                                    "hit": hit.tolist()}
        if level == "page":
            continue
        document = level != "line"
        strangers = unknown[level][0]
        more = others[level][0] if others else None
        rule = identifier.unknown_rule(document)
        # the oracle: identify's statistic (the best score and its lead), its threshold
        # read off these unknown queries' own, a bound on any calibration of that rule
        weight = ((rule or {}).get("lead") or {}).get("weight", 0)
        unknown_stat = np.r_[lead_statistic(strangers, weight),
                             lead_statistic(more, weight) if more is not None else []]
        oracle = (lead_statistic(sims, weight)
                  < np.quantile(unknown_stat, 1 - ORACLE_FAR))
        result[f"{level}_false_rejection_oracle"] = float(oracle.mean())
        result["queries"][level]["rejected_oracle"] = oracle.tolist()
        if identifier.thresholds is None:
            continue
        rules = {"": identifier.thresholds}
        if rule and "lead" in rule:  # the best score alone, the rule before the lead, beside it
            plain = {k: v for k, v in rule.items() if k != "lead"}
            rules["_top"] = lambda s, document, plain=plain: query_thresholds(plain, s)
        for suffix, thresholds in rules.items():
            rejected = sims.max(1) < thresholds(sims, document)
            accepted = strangers.max(1) >= thresholds(strangers, document)
            result[f"{level}_rejection{suffix}"] = float(1 - accepted.mean())
            result[f"{level}_false_rejection{suffix}"] = float(rejected.mean())
            result["queries"][level] |= {f"rejected{suffix}": rejected.tolist(),
                                         f"unknown_accepted{suffix}": accepted.tolist()}
            if more is not None:
                accepted = np.r_[accepted, more.max(1) >= thresholds(more, document)]
                result[f"{level}_rejection_all{suffix}"] = float(1 - accepted.mean())
                result[f"n_unknown_{level}"] = len(accepted)
    return result


ORACLE_FAR = 0.01  # the oracle's share of unknown queries accepted (#22's 1%)
INTERVAL_DRAWS = 2000  # bootstrap draws of the probed writers


def lead_statistic(scores: np.ndarray, weight: float) -> np.ndarray:
    """Each query's best score plus `weight` times its lead over the second, which the
    unknown-writer rule holds to one threshold in a gallery of a given size
    (`runtime.identify.query_thresholds`)."""
    second, best = np.sort(scores, axis=1)[:, -2:].T
    return best + weight * (best - second)


MISSES_SHOWN = 6  # writers named under each table, most misnamed lines first
FEW_LINES_DRAWS = 3  # seeded draws of k lines for each writer of gallery (b), --few-lines


def writer_interval(hit: np.ndarray, label: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% interval of top-1 when the probed writers are drawn again with replacement: the
    lines of one writer fail together, so a fold of 16 writers measures less than its
    hundreds of lines suggest."""
    writers = np.unique(label)
    right = np.array([hit[label == w].sum() for w in writers])
    asked = np.array([(label == w).sum() for w in writers])
    draws = np.random.default_rng(seed).integers(0, len(writers), (INTERVAL_DRAWS, len(writers)))
    low, high = np.quantile(right[draws].sum(1) / asked[draws].sum(1), [0.025, 0.975])
    return float(low), float(high)


def column_lrs(identifier, level: str, sims: np.ndarray) -> np.ndarray | None:
    """log10 LRs of a score matrix [Q, W] of the identifier's score, each writer's column by
    its own calibrator, as `identify` weighs it (`Identifier.likelihood_of` its `lr_lines`:
    the one fitted for its lines where it is enrolled from so few, else the form's); None
    without one."""
    lrs = [identifier.likelihood_of(level, identifier.score, identifier.lr_lines(w))
           for w in identifier.writers]
    if any(lr is None for lr in lrs):
        return None
    return np.stack([lr(sims[:, j]) for j, lr in enumerate(lrs)], axis=1)


def lr_quality(identifier, levels: dict) -> dict:
    """{level: quality of the card's log10 LRs} over every comparison of a query with an
    enrolled writer (`models.calibration.quality`), with the LRs and labels for plots."""
    from models.calibration import comparisons, quality

    out = {}
    for level, (sims, label) in levels.items():
        llr = column_lrs(identifier, level, sims)
        if llr is None:
            continue
        llrs, same = comparisons(llr, label, np.arange(sims.shape[1]))
        out[level] = {**quality(llrs, same), "_llrs": llrs, "_same": same}
    return out


def stranger_lrs(identifier, unknown: dict, others: dict | None) -> dict:
    """{level: counts of misleading evidence for writers who are not enrolled}: the
    queries of `unknown` and `others` (`level_scores` as strangers), each against the
    gallery without its writer, as `identify` shows them: how many queries' top candidate
    gets a log10 LR above 0 and above 2 (100 to 1), and how many of all their
    comparisons do."""
    out = {}
    for level in unknown:
        sims = np.concatenate([unknown[level][0]] + ([others[level][0]] if others else []))
        llr = column_lrs(identifier, level, sims)
        if llr is None:
            continue
        top = llr[np.arange(len(sims)), sims.argmax(axis=1)]
        every = llr[np.isfinite(sims)]
        out[level] = {"queries": len(sims), "top_over_1": int((top > 0).sum()),
                      "top_over_100": int((top > 2).sum()), "comparisons": len(every),
                      "over_1": int((every > 0).sum()), "over_100": int((every > 2).sum())}
    return out


def print_stranger_lrs(rows: dict[str, dict]) -> None:
    print("\nwriters not enrolled (each query against the gallery without its writer, the "
          "distractors' own too): log10 LR of the top candidate and of every comparison "
          "above 0 and above 2 (100 to 1)")
    print(f"{'score':<10}{'level':<10}{'queries':>8}{'top > 0':>9}{'top > 2':>9}"
          f"{'comparisons':>12}{'> 0':>8}{'> 2':>7}")
    for score, levels in rows.items():
        for level, q in levels.items():
            print(f"{score:<10}{level:<10}{q['queries']:>8}{q['top_over_1']:>9}"
                  f"{q['top_over_100']:>9}{q['comparisons']:>12}{q['over_1']:>8}"
                  f"{q['over_100']:>7}")


def print_lr_table(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}: log10 likelihood ratios (calibrated at export), every query against "
          "every enrolled writer")
    print(f"{'score':<10}{'level':<10}{'Cllr':>7}{'min':>7}{'gap':>7}{'ECE 1:100':>10}"
          f"{'mislead s':>10}{'mislead d':>10}{'strong s':>9}{'strong d':>9}{'same':>6}"
          f"{'diff':>7}")
    for score, levels in rows.items():
        for level, q in levels.items():
            print(f"{score:<10}{level:<10}{q['cllr']:>7.3f}{q['cllr_min']:>7.3f}"
                  f"{q['cllr'] - q['cllr_min']:>7.3f}{q['ece_1_to_100']:>10.4f}"
                  f"{q['misleading_same']:>10.3f}{q['misleading_different']:>10.4f}"
                  f"{q['strong_misleading_same']:>9.3f}{q['strong_misleading_different']:>9.4f}"
                  f"{q['n_same']:>6}{q['n_different']:>7}")


class Anchor:
    """The anchor that #22 names beside the product's scores: RootSIFT at SIFT's own
    keypoints, VLAD-encoded and compared by plain cosine (Christlein et al.'s recipe without
    exemplar SVMs), on a codebook of its own (`anchor_descriptor`): the product's reads
    RootSIFT along the ink's contours. No threshold is calibrated for it; `figures` gives it
    top-k and the oracle's rejection only."""

    thresholds = None

    def __init__(self, identifier, descriptor, rows: np.ndarray,
                 enrolled: dict[str, list[int]]):
        """`identifier`: the `vlad` score's, whose rule this reads; `descriptor` and its
        `rows` [N, K] of the records that `enrolled` indexes, each writer's summed."""
        self.identifier, self.writers, self.descriptor = identifier, identifier.writers, \
            descriptor
        self.gallery = self.encode(np.stack([rows[enrolled[w]].sum(0) for w in self.writers]))

    def encode(self, rows: np.ndarray) -> np.ndarray:
        return self.descriptor.vlad.encode(self.descriptor.split(rows)[1])

    def unknown_rule(self, document: bool) -> dict | None:
        """The VLAD score's rule, whose lead the oracle decides by as for the other rows."""
        return self.identifier.unknown_rule(document)

    def score_matrix(self, emb, rows, document: bool = False, absent=None) -> np.ndarray:
        """Cosines of queries' `rows` (of `descriptor`) with each writer's."""
        sims = self.encode(rows) @ self.gallery.T
        return sims if absent is None else np.where(absent, -np.inf, sims)


def anchor_descriptor(records, writers: set[str], seed: int):
    """The anchor's hinge + RootSIFT + VLAD descriptor, its codebook read at SIFT's keypoints
    and fitted as export fits the product's: on a seeded sample of `VLAD_FIT_LINES` lines of
    the training `writers`."""
    from iam_writers_tfds.images import read_gray
    from models.export import VLAD_FIT_LINES
    from models.runtime.descriptors import Descriptor, Hinge, Vlad

    lines = [r for r in records if r.writer_id in writers]
    chosen = np.random.default_rng(seed).choice(len(lines), min(VLAD_FIT_LINES, len(lines)),
                                                replace=False)
    return Descriptor(Hinge(), Vlad.fit([read_gray(lines[i].path) for i in chosen], seed=seed,
                                        step=0, views=(0.0,)))


class Alone:
    """An identifier's writers each enrolled alone, as `verify` weighs a pair (a query
    against one reference): `score_matrix` gives each query's score against each writer in a
    gallery of one, `threshold` the unknown-writer threshold of such a gallery."""

    def __init__(self, identifier):
        self.identifier, self.writers = identifier, identifier.writers

    def score_matrix(self, emb, counts, document: bool = False) -> np.ndarray:
        i = self.identifier
        fusion = i.fusion["document" if document else "line"] if i.score == "fused" else None
        return i.prepared.alone(emb, counts, fusion, i.cohort)[i.score]

    def threshold(self, document: bool = False) -> np.ndarray:
        """Each writer's [W]: of its enrolled lines where the card fitted a rule for so few
        (`Identifier.rule_lines`), else a form's."""
        from models.runtime.identify import gallery_threshold

        i = self.identifier
        return np.array([gallery_threshold(i.unknown_rule(document, lines=i.rule_lines(
            w, document)), 1) for w in self.writers])


def pair_figures(pairs, levels: dict) -> dict:
    """{level: figures} of `verify` over every query and enrolled writer: EER, and at the
    threshold the same-writer pairs accepted and the different-writer pairs rejected."""
    from models.calibration import comparisons
    from models.evaluate import roc_figures

    out = {}
    for level, (sims, label) in levels.items():
        scores, same = comparisons(sims, label, np.arange(sims.shape[1]))
        # each pair at its writer's threshold
        said_same = scores >= comparisons(np.broadcast_to(pairs.threshold(
            document=level != "line"), sims.shape), label, np.arange(sims.shape[1]))[0]
        out[level] = {"eer": roc_figures(same.astype(int), scores)["eer"],
                      "same_accepted": float(said_same[same].mean()),
                      "different_rejected": float(1 - said_same[~same].mean()),
                      "n_same": int(same.sum()), "n_different": int((~same).sum())}
    return out


def print_pair_table(rows: dict[str, dict], lrs: dict[str, dict]) -> None:
    print("\nverify: every query against each enrolled writer of (b) alone (as `verify` "
          "weighs a pair), at the unknown-writer threshold of a one-writer gallery")
    print(f"{'score':<10}{'level':<10}{'EER':>7}{'same acc.':>10}{'diff. rej.':>11}"
          f"{'Cllr':>7}{'min':>7}{'same':>6}{'diff':>7}")
    for score, levels in rows.items():
        for level, f in levels.items():
            q = lrs.get(score, {}).get(level)
            print(f"{score:<10}{level:<10}{f['eer']:>7.3f}{f['same_accepted']:>10.3f}"
                  f"{f['different_rejected']:>11.4f}"
                  + (f"{q['cllr']:>7.3f}{q['cllr_min']:>7.3f}" if q else f"{'-':>7}{'-':>7}")
                  + f"{f['n_same']:>6}{f['n_different']:>7}")


def few_line_members(members: dict[str, list[int]], k: int, seed: int, draw: int
                     ) -> dict[str, list[int]]:
    """Each writer's enrolled line indices cut to k of them (seeded, a `draw` of them; all
    where it has k or fewer): gallery (b) enrolled from so few lines."""
    rng = np.random.default_rng([seed, k, draw])
    return {w: sorted(rng.choice(rows, k, replace=False).tolist()) if len(rows) > k else rows
            for w, rows in members.items()}


def form_rule_model(model):
    """The model with a card that holds no unknown-writer rule for writers of few lines
    (`by_lines`): every writer judged by the form's rule, as exports before it did."""
    import copy

    baseline = copy.copy(model)
    baseline.card = copy.deepcopy(model.card)
    for level in ("line", "document"):
        rule = baseline.card["fusion"][level].get("unknown_writer", {})
        for key in ("by_lines", "by_lines_rule", "by_lines_rates", "by_lines_verify_rates"):
            rule.pop(key, None)
    return baseline


def few_lines_table(model, descriptor: str, subjects, members: dict[str, list[int]], emb,
                    counts, probe, distracting, seed: int) -> None:
    """`--few-lines`: gallery (b) enrolled from k lines of each writer's form (k =
    `FEW_LINE_RULES`, `FEW_LINES_DRAWS` seeded draws, means), the fused score: identify's
    genuine queries answered unknown and strangers accepted under the card's rule for so
    few lines and under the form's (`form_rule_model`: the baseline, on the same
    galleries), the oracle, verify's pairs (b: the writer's k lines) and the line LRs."""
    from models.export import FEW_LINE_RULES
    from models.runtime import Identifier

    baseline = form_rule_model(model)
    keys = ("line_false_rejection", "line_rejection_all", "line_false_rejection_oracle",
            "document_false_rejection", "document_rejection_all")
    print(f"\nwriters of (b) each enrolled from k lines of their form ({FEW_LINES_DRAWS} "
          "seeded draws, means), fused: the card's rule for so few lines / the form's rule "
          "(the baseline, same galleries)")
    print(f"{'k':<6}{'genuine unknown line':>22}{'oracle':>8}{'doc':>14}"
          f"{'strangers acc. line':>21}{'doc':>14}{'verify same->two':>18}"
          f"{'diff->one':>11}{'line Cllr':>10}{'LR<1/100':>9}")
    for k in (*FEW_LINE_RULES, None):
        runs = []
        for draw in range(FEW_LINES_DRAWS if k else 1):
            chosen = few_line_members(members, k, seed, draw) if k else members
            gallery = gallery_of(subjects, chosen, emb, counts, model.fingerprint, descriptor)
            row = {}
            for name, m in (("few", model), ("form", baseline)):
                identifier = Identifier(gallery, m, "fused")
                levels = level_scores(identifier, emb, counts, subjects, probe)
                f = figures(identifier, levels, chosen,
                            level_scores(identifier, emb, counts, subjects, probe,
                                         strangers=True),
                            level_scores(identifier, emb, counts, subjects, distracting,
                                         strangers=True))
                row |= {(name, key): f[key] for key in keys}
                if name == "few":
                    q = lr_quality(identifier, {"line": levels["line"]})["line"]
                    pairs = Alone(identifier)
                    v = pair_figures(pairs, {"line": level_scores(
                        pairs, emb, counts, subjects, probe)["line"]})["line"]
                    row |= {"same_two": 1 - v["same_accepted"],
                            "diff_one": 1 - v["different_rejected"],
                            "cllr": q["cllr"], "strong": q["strong_misleading_same"]}
            runs.append(row)
        m = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
        print(f"{k or 'form':<6}{_both(m, 'line_false_rejection'):>22}"
              f"{m['few', 'line_false_rejection_oracle']:>8.3f}"
              f"{_both(m, 'document_false_rejection'):>14}"
              f"{_both(m, 'line_rejection_all', True):>21}"
              f"{_both(m, 'document_rejection_all', True):>14}{m['same_two']:>18.3f}"
              f"{m['diff_one']:>11.4f}{m['cllr']:>10.3f}{m['strong']:>9.4f}", flush=True)


def _both(means: dict, key: str, accepted: bool = False) -> str:
    """"few/form": a rate under the rule for few lines and under the form's (`accepted`:
    one less the rejection)."""
    few, form = (1 - means[n, key] if accepted else means[n, key] for n in ("few", "form"))
    return f"{few:.3f}/{form:.3f}"


def gallery_of(records, enrolled: dict[str, list[int]], emb, counts, fingerprint, descriptor):
    """An in-memory gallery of the enrolled lines' precomputed features, each image read as
    one line (as `enroll` records a line image): a writer of a short form is weighed as
    `identify` weighs one enrolled from so few lines."""
    from iam_writers_tfds.images import SCAN_DPI
    from models.runtime.gallery import ReadAs, new_in_memory, sha256_of

    gallery = new_in_memory(fingerprint, descriptor)
    for writer, rows in enrolled.items():
        gallery.add(writer, [str(records[i].path) for i in rows],
                    [sha256_of(records[i].path) for i in rows],
                    None if emb is None else emb[rows], None if counts is None else counts[rows],
                    read=[ReadAs(SCAN_DPI, "line", lines=1)] * len(rows))
    return gallery


def print_table(title: str, rows: dict[str, dict]) -> None:
    first = next(iter(rows.values()))
    page = "page_top1" in first
    print(f"\n{title}: {first['n_writers']} writers enrolled ({first['n_probed_writers']} "
          f"probed), {first['n_lines']} lines / {first['n_forms']} forms identified")
    print(f"{'score':<10}{'line top-1':>11}{'top-5':>7}{'doc top-1':>10}{'top-5':>7}"
          + (f"{'page top-1':>11}{'top-5':>7}" if page else "")
          + f"{'macro line':>11}{'rej. line':>10}{'doc':>7}{'false rej. line':>16}{'doc':>7}"
          + (f"{'rej. all line':>14}{'doc':>7}" if "line_rejection_all" in first else "")
          + f"{'oracle line':>12}{'doc':>7}")

    def cell(f: dict, key: str, width: int) -> str:
        return f"{f[key]:>{width}.3f}" if key in f else f"{'-':>{width}}"

    for name, f in rows.items():
        print(f"{name:<10}{f['line_top1']:>11.3f}{f['line_top5']:>7.3f}"
              f"{f['document_top1']:>10.3f}{f['document_top5']:>7.3f}"
              + (f"{f['page_top1']:>11.3f}{f['page_top5']:>7.3f}" if page else "")
              + f"{f['macro_line_top1']:>11.3f}" + cell(f, "line_rejection", 10)
              + cell(f, "document_rejection", 7) + cell(f, "line_false_rejection", 16)
              + cell(f, "document_false_rejection", 7)
              + (cell(f, "line_rejection_all", 14) + cell(f, "document_rejection_all", 7)
                 if "line_rejection_all" in first else "")
              + cell(f, "line_false_rejection_oracle", 12)
              + cell(f, "document_false_rejection_oracle", 7))
    if "line_rejection_all" in first:
        print(f"rej. all: of the probes and the distractors' own lines and forms together "
              f"({first['n_unknown_line']} lines, {first['n_unknown_document']} documents), "
              "each against the gallery without its writer")
    print(f"oracle: genuine queries rejected by the rule's statistic at the threshold that "
          f"accepts {ORACLE_FAR:.0%} of these unknown queries, read off them (a bound on any "
          "calibration, not a result); anchor: RootSIFT + VLAD by plain cosine, decided by "
          "vlad's rule, no threshold calibrated")
    led = [name for name, f in rows.items() if "line_false_rejection_top" in f]
    if led:
        print("the unknown-writer rule: best score + lead over the second (as identify "
              "decides) against the best score alone (the rule before)")
        print(f"{'score':<10}{'rule':<8}{'rej. line':>10}{'doc':>7}{'false rej. line':>16}"
              f"{'doc':>7}" + (f"{'rej. all line':>14}{'doc':>7}" if "line_rejection_all" in
                               first else ""))
        for name in led:
            for suffix, rule in (("", "lead"), ("_top", "best")):
                f = {k.removesuffix(suffix): v for k, v in rows[name].items()
                     if k.endswith(suffix)}
                print(f"{name:<10}{rule:<8}{f['line_rejection']:>10.3f}"
                      f"{f['document_rejection']:>7.3f}{f['line_false_rejection']:>16.3f}"
                      f"{f['document_false_rejection']:>7.3f}"
                      + (f"{f['line_rejection_all']:>14.3f}{f['document_rejection_all']:>7.3f}"
                         if "line_rejection_all" in f else ""))
    levels = [level for level in ("line", "document", "page") if f"{level}_top1" in first]
    print(f"top-1, 95% interval drawing the {first['n_probed_writers']} probed writers again:")
    print(f"{'score':<10}" + "".join(f"{level:>14}" for level in levels))
    for name, f in rows.items():
        print(f"{name:<10}" + "".join("{:>14}".format("{:.3f}-{:.3f}".format(
            *f[f"{level}_interval"])) for level in levels))
    name = "fused" if "fused" in rows else next(iter(rows))
    print_misses(name, rows[name]["queries"], levels)


def print_misses(name: str, queries: dict[str, dict], levels: list[str]) -> None:
    """The writers that score `name` misnames most, of its `queries` ({level: each query's
    writer and hit})."""
    misses = {}  # {writer: {level: (misnamed, asked)}}
    for level in levels:
        for w, hit in zip(queries[level]["writer"], queries[level]["hit"]):
            wrong, asked = misses.setdefault(w, {}).get(level, (0, 0))
            misses[w][level] = (wrong + (not hit), asked + 1)
    worst = sorted(((w, m) for w, m in misses.items()
                    if any(m.get(level, (0,))[0] for level in levels)),
                   key=lambda item: [-item[1].get(level, (0,))[0] for level in levels])
    print(f"misnamed by {name}, by writer (misnamed/asked): " + ("; ".join(
        f"{w} " + ", ".join(f"{level} {m[level][0]}/{m[level][1]}" for level in levels
                            if level in m) for w, m in worst[:MISSES_SHOWN]) or "none")
          + (f"; {len(worst) - MISSES_SHOWN} more writers" if len(worst) > MISSES_SHOWN else ""))


def print_pooled(folders: list[Path]) -> int:
    """The figures of several runs' `queries.json` (the folds of a k-fold) added up query
    by query, with 95% intervals drawing all their probed writers again."""
    runs = []
    for folder in folders:
        if not (folder / "queries.json").exists():
            raise SystemExit(f"{folder / 'queries.json'}: missing; run open_set.py with "
                             f"--out {folder} first")
        runs.append(json.loads((folder / "queries.json").read_text()))
    probed = [w for run in runs for w in run["writers"]]
    if len(set(probed)) < len(probed):
        print(f"warning: {len(probed) - len(set(probed))} writers are probed by more than one "
              "run (not the folds of one k-fold); each query counts once per run")
    for gallery, title in (("a", "unseen writers only"), ("b", "with distractors")):
        scores = [s for s in runs[0]["galleries"][gallery]
                  if all(s in run["galleries"][gallery] for run in runs)]
        first = runs[0]["galleries"][gallery][scores[0]]
        levels = [level for level in ("line", "document", "page") if level in first]
        asked = {level: sum(len(run["galleries"][gallery][scores[0]][level]["hit"])
                            for run in runs) for level in levels}
        print(f"\npooled over {len(runs)} runs, ({gallery}) {title}: {len(set(probed))} writers "
              "probed, " + ", ".join(f"{n} {level} queries" for level, n in asked.items()))
        print(f"{'score':<10}" + "".join(f"{level + ' top-1':>16}{'95% interval':>14}"
                                         for level in levels)
              + f"{'unknown acc. line':>18}{'doc':>7}{'genuine rej. line':>18}{'doc':>7}"
              + f"{'oracle line':>12}{'doc':>7}")
        pooled = {score: {level: {key: sum((run["galleries"][gallery][score][level][key]
                                            for run in runs), [])
                                  for key in first[level]
                                  if all(key in run["galleries"][gallery][score][level]
                                         for run in runs)} for level in levels}
                  for score in scores}
        for score, queries in pooled.items():
            cells = ""
            for level in levels:
                hit = np.array(queries[level]["hit"])
                label = np.unique(queries[level]["writer"], return_inverse=True)[1]
                cells += "{:>16.3f}{:>14}".format(hit.mean(), "{:.3f}-{:.3f}".format(
                    *writer_interval(hit, label)))
            rules = [""] + (["_top"] if "rejected_top" in queries["line"] else [])
            for suffix in rules:  # "_top": the best score alone, beside the lead rule
                rates = [f"{np.mean(queries[level][key + suffix]):.3f}"
                         if key + suffix in queries[level] else "-"
                         for key in ("unknown_accepted", "rejected", "rejected_oracle")
                         for level in ("line", "document")]
                print(f"{score if not suffix else '  best alone':<10}"
                      f"{cells if not suffix else ' ' * len(cells)}{rates[0]:>18}"
                      f"{rates[1]:>7}{rates[2]:>18}{rates[3]:>7}"
                      + (f"{rates[4]:>12}{rates[5]:>7}" if not suffix else ""))
        name = "fused" if "fused" in pooled else scores[0]
        print_misses(name, pooled[name], levels)
    return 0


def tippett(quality: dict[str, dict], out: Path) -> None:
    """Tippett plots (lir) of the fused score's LRs at each level, with ECE curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lir.data.models import LLRData
    from lir.plotting import tippett as lir_tippett
    from lir.plotting.expected_calibration_error import plot_ece

    fig, axes = plt.subplots(2, len(quality), figsize=(4.5 * len(quality), 7), squeeze=False)
    for (level, q), top, bottom in zip(quality.items(), axes[0], axes[1]):
        data = LLRData(features=q["_llrs"], labels=q["_same"].astype(int))
        lir_tippett(data, ax=top)
        top.set_title(f"{level}: Cllr {q['cllr']:.3f} (min {q['cllr_min']:.3f})")
        plot_ece(data, ax=bottom)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def train_and_export(args, records, known: list[str], out: Path):
    """The exported float32 TFLite model of a patch_embed run on `known`'s records (the run
    is reused when `out` holds a finished one trained on the same writers with the same
    epochs, seed and loss, so that no other split's or recipe's model is measured); returns
    (model, training minutes, export minutes: the calibration on the held-out writers, the
    SavedModel and the conversion)."""
    import shutil

    from iam_writers import data
    from models.config import TrainConfig
    from models.export import ExportConfig, export
    from models.runtime import Model
    from models.train import train

    run, trained_on = out / "run", out / "training.txt"
    recipe = (f"epochs {args.epochs}\nseed {args.seed}\nmetric_loss {args.metric_loss}\n"
              + "".join(f"writer {w}\n" for w in sorted(known)))
    finished = (run / "metrics.json").is_file()
    reusable = finished and trained_on.is_file() and trained_on.read_text() == recipe
    if finished and not reusable:
        print(f"{run}: trained on other writers or by another recipe than this run's (or "
              "not recorded); training again", flush=True)
    if not reusable:
        trained_on.unlink(missing_ok=True)
        for stale in ("known_layout", "tfds", "run"):
            shutil.rmtree(out / stale, ignore_errors=True)
        layout = linked_layout(records, set(known), out / "known_layout")
        data.build(data.BuildConfig("top50", layout, out / "tfds"))
        start = time.perf_counter()
        train(TrainConfig(model="patch_embed", config="top50", data_dir=out / "tfds", out=run,
                          epochs=args.epochs, seed=args.seed, metric_loss=args.metric_loss))
        (out / "minutes.txt").write_text(f"{(time.perf_counter() - start) / 60:.1f}")
        trained_on.write_text(recipe)
    shutil.rmtree(out / "export", ignore_errors=True)
    start = time.perf_counter()
    export(ExportConfig(run, out / "export", quantize=("none",)))
    return (Model(out / "export" / "model_float32.tflite"),
            float((out / "minutes.txt").read_text()), (time.perf_counter() - start) / 60)


def main() -> int:
    sys.path.insert(0, str(REPO))
    from iam_writers_tfds import console
    from models.config import METRIC_LOSSES, TrainConfig

    console.quiet()

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, nargs="?", help="Kaggle-layout folder")
    p.add_argument("--extra", type=Path, help="Kaggle-layout folder of one-form writers")
    p.add_argument("--gallery", type=int, default=GALLERY,
                   help="writers in gallery (b): the unseen writers and as many extra "
                   "writers as distractors (kept out of training) as make it up")
    p.add_argument("--synthetic", action="store_true", help="generate the data instead")
    p.add_argument("--writers", type=int, default=24, help="generated writers (--synthetic)")
    p.add_argument("--known", type=int, help="writers to train on (default: 40 of 56)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--metric-loss", default=TrainConfig.metric_loss, choices=METRIC_LOSSES)
    p.add_argument("--forms", type=Path, help="folder of page scans <form-id>.png: the probe "
                   "forms are also identified from their scans (e.g. ../shared/data/"
                   "iam_dev_forms)")
    p.add_argument("--hinge-only", action="store_true", help="no model: the hinge rows alone")
    p.add_argument("--folds", type=int, help="k-fold over DIR's writers: probe fold --fold "
                   "of K (seeded) instead of drawing the unseen writers")
    p.add_argument("--fold", type=int, default=0, help="which fold (0 to K-1) with --folds")
    p.add_argument("--pool", type=Path, nargs="+", metavar="D",
                   help="print the figures of earlier runs' --out folders together (the K "
                   "folds of a k-fold), and nothing else")
    p.add_argument("--few-lines", action="store_true",
                   help="also gallery (b) enrolled from 1 to 5 lines of each writer's form: "
                        "the card's rule for so few against the form's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="keep the work here (default: a temp folder)")
    p.add_argument("--ledger", type=Path, default=ledger.LEDGER,
                   help="the record of the real writers earlier runs probed (benchmarks/"
                   "ledger.py); this run's are added once its figures are printed")
    args = p.parse_args()
    if args.pool:
        return print_pooled(args.pool)
    if (args.dir is None) == (not args.synthetic):
        p.error("pass a Kaggle-layout DIR or --synthetic")

    from iam_writers_tfds import atomic, iam_layout, kaggle_layout, synth
    from iam_writers_tfds.images import read_gray
    from models.config import SCORES
    from models.runtime import Features, Identifier, embed_inked
    from models.runtime.descriptors import Descriptor, Hinge, each
    from models.runtime.identify import model_descriptor

    def layout_records(folder: Path):
        """The lines of a Kaggle-layout folder or of one in the official IAM layout."""
        root = kaggle_layout.find_root(folder)
        if root is not None:
            return kaggle_layout.scan(root)[0]
        roots = iam_layout.roots_in(folder)
        if not roots:
            p.error(f"{folder}: neither the Kaggle layout (forms_for_parsing.txt) nor the "
                    "official IAM one (ascii/ and lines/) there or one level below")
        return iam_layout.scan(roots[0], out / "extracted")[0]

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        if args.synthetic:
            root = synth.generate(out / "generated", synth.SynthConfig(writers=args.writers,
                                                                        seed=args.seed))
            records = kaggle_layout.scan(root)[0]
        else:
            records = layout_records(args.dir)
        all_writers = sorted({r.writer_id for r in records})
        known, unseen = test_writers(all_writers, args.seed, args.known, args.folds, args.fold)
        extra = layout_records(args.extra) if args.extra else []
        extra_writers = sorted({r.writer_id for r in extra})
        distractors, extra_known = distractor_writers(extra_writers, unseen, args.gallery,
                                                      args.seed)
        print(f"{len(all_writers)} writers: {len(unseen)} never seen identified; "
              f"{len(known)} + {len(extra_known)} extra writers for training and calibration "
              f"(train holds a share out); {len(distractors)} distractors", flush=True)
        if not args.synthetic:
            print(ledger.probed_before(args.ledger, unseen), flush=True)
        minutes, model = None, None
        if not args.hinge_only:
            model, *minutes = train_and_export(args, records + extra, known + extra_known, out)
        # the unseen writers' lines, then the distractors' (enrolled in gallery (b) only)
        subjects = [r for r in records if r.writer_id in set(unseen)] + \
                   [r for r in extra if r.writer_id in set(distractors)]
        descriptor = model_descriptor(model) if model else Descriptor(Hinge())
        if model:
            kept, emb = embed_inked(model, [r.path for r in subjects])
            subjects = [subjects[i] for i in kept]
        else:
            emb = None
        counts = np.stack(list(console.progress(
            each(lambda r: descriptor(read_gray(r.path)), subjects), descriptor.name, "line",
            total=len(subjects))))
        n_unseen = sum(r.writer_id in set(unseen) for r in subjects)
        enrolled, probe = enrolment(subjects[:n_unseen], args.seed)
        everyone = {**enrolled, **{w: [n_unseen + i for i in rows] for w, rows in
                                   enrolment(subjects[n_unseen:], args.seed)[0].items()}}
        distracting = list(range(n_unseen, len(subjects)))  # unknown queries of gallery (b)
        pages, page_seconds = None, None
        if args.forms:
            page_forms = sorted({subjects[i].form_id for i in probe})
            scans = [args.forms / f"{f}.png" for f in page_forms]
            start = time.perf_counter()
            page_emb, page_counts = Features(model, descriptor, "page")(scans)
            page_seconds = (time.perf_counter() - start) / len(page_forms)
            pages = (page_forms, page_emb, page_counts)
        anchor = None  # (descriptor, rows of the subjects, pages) of the anchor row
        if model and descriptor.vlad:
            trained = set(known + extra_known) - set(model.card["calibration"]["writers"])
            described = anchor_descriptor(records + extra, trained, args.seed)
            rows = np.stack(list(console.progress(
                each(lambda r: described(read_gray(r.path)), subjects), "anchor", "line",
                total=len(subjects))))
            anchor = (described, rows, pages and (
                pages[0], None, Features(None, described, "page")(scans)[1]))
        queries = {}  # per gallery and score, each query's outcome (for --pool)
        for title, members in (("(a) unseen writers only", enrolled),
                               ("(b) with distractors", everyone)):
            gallery = gallery_of(subjects, members, emb, counts,
                                 model.fingerprint if model else None, descriptor.name)
            rows, lrs, misled = {}, {}, {}
            scores = [s for s in SCORES if s != "vlad" or descriptor.vlad] if model else ["hinge"]
            # the anchor beside the VLAD score it plainly compares
            for score in [row for name in scores
                          for row in ((name, "anchor") if name == "vlad" else (name,))]:
                if score == "anchor":
                    described, rows_of, pages_of = anchor
                    identifier = Anchor(Identifier(gallery, model, "vlad"), described,
                                        rows_of, members)
                else:
                    identifier = Identifier(gallery, model, score)
                    rows_of, pages_of = counts, pages
                levels = level_scores(identifier, emb, rows_of, subjects, probe, pages_of)
                unknown = level_scores(identifier, emb, rows_of, subjects, probe,
                                       strangers=True)
                others = (level_scores(identifier, emb, rows_of, subjects, distracting,
                                       strangers=True)
                          if len(members) > len(enrolled) else None)
                rows[score] = figures(identifier, levels, members, unknown, others)
                if model and score != "anchor":
                    lrs[score] = lr_quality(identifier, levels)
                    if others is not None:  # printed for gallery (b), with the distractors
                        misled[score] = stranger_lrs(identifier, unknown, others)
            if len(members) > len(enrolled) or title.startswith("(a)"):
                print_table(title, rows)
                if any(lrs.values()):
                    print_lr_table(title, lrs)
                    if args.out and lrs.get("fused"):
                        tippett(lrs["fused"], args.out / f"tippett_{title[1]}.png")
                        print(f"Tippett and ECE plots: {args.out / f'tippett_{title[1]}.png'}")
                    if misled:
                        print_stranger_lrs(misled)
            if model and len(members) > len(enrolled):
                pair_rows, pair_lrs = {}, {}
                for score in scores:
                    pairs = Alone(Identifier(gallery, model, score))
                    levels = level_scores(pairs, emb, counts, subjects, probe, pages)
                    pair_rows[score] = pair_figures(pairs, levels)
                    pair_lrs[score] = lr_quality(pairs.identifier, levels)
                print_pair_table(pair_rows, pair_lrs)
                if args.few_lines and "fused" in scores:
                    few_lines_table(model, descriptor.name, subjects, members, emb, counts,
                                    probe, distracting, args.seed)
            queries[title[1]] = {score: row["queries"] for score, row in rows.items()}
        if args.out:
            atomic.write_text(out / "queries.json", json.dumps({
                "seed": args.seed, "folds": args.folds, "fold": args.fold, "writers": unseen,
                "galleries": queries}))
        if page_seconds is not None:
            print(f"\na page scan costs {page_seconds:.2f} s (line finding, "
                  f"{'the model, ' if model else ''}{descriptor.name}; {len(pages[0])} pages)")
    if model:
        fusion = model.card["fusion"]
        weights = {kind: ", ".join(f"{k} {w:.2f}" for k, w in fusion[kind]["weights"].items())
                   for kind in ("line", "document")}
        print(f"\npatch_embed ({args.metric_loss}), {args.epochs} epochs, trained in "
              f"{minutes[0]:.1f} min, exported and calibrated in {minutes[1]:.1f} min "
              f"({sum(minutes):.1f} min in all); fusion weights, lines: {weights['line']}; "
              f"documents: "
              f"{weights['document']}; "
              f"fusion and thresholds calibrated at export on {fusion['split']} "
              f"({', '.join(model.card['calibration']['writers']) or 'none held out'}), "
              f"thresholds at FAR {model.card['calibration']['far']:.0%}")
    if not args.synthetic:
        ledger.record(args.ledger, "open_set", args.dir.name, args.seed, unseen,
                      f"{args.fold}/{args.folds}" if args.folds else None)
        print(f"the {len(unseen)} probed writers are recorded in {args.ledger}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
