"""Same document or another: how much the evaluation protocol moves writer identification.

    python benchmarks/protocols.py DIR --extra EXTRA_DIR [--seed 0] [--ledger PATH]

Most of IAM's 657 writers wrote one page, so a figure over all of them (Bertolini et al.
2013's 99.2% is over 650) enrols one part of such a page and queries another part of the
same page: the same pen, paper, day and mood. Pinhelli et al. ("Single-sample writers:
document filter", arXiv 2005.08424, with Bertolini) found that keeping each document's
fragments on one side moved top-1 by up to 31 points. This project's goals are set on
another document of the writer (form-disjoint). The protocols run here on the same writers
and gallery, with the two scores that need no training (contour-hinge, RootSIFT + VLAD), so
the gap between them is measured, not assumed.

DIR is a Kaggle-layout folder of writers with several forms (`iam_dev_lines`); EXTRA_DIR's
writers (one form each) join the gallery and are never queried. One form of each writer
(seeded) is enrolled, and queries are identified one line at a time and as one document:
  - same document: the first half of the enrolled form's lines enrolled, the other half
    queried;
  - another document: the same enrolment; as many lines of each of the writer's other
    forms queried (their first lines), so both protocols query as much handwriting;
  - another document, whole forms: the whole form enrolled, each other form queried whole
    (`benchmarks/open_set.py`'s protocol, in a larger gallery).
The VLAD codebook is fitted on 400 lines of EXTRA_DIR (seeded): no queried writer's
handwriting shapes it, and nothing here is chosen by the figures. The run records its
queried writers in the ledger (benchmarks/ledger.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CODEBOOK_LINES = 400  # as export fits its codebook (models/export.py, VLAD_FIT_LINES)
PROTOCOLS = ("same document", "another document", "another document, whole forms")


def protocols(records, seed: int, probe: set[str]) -> dict[str, tuple[dict, dict]]:
    """{protocol: ({writer: enrolled line indices}, {writer: queried documents, each a list
    of line indices})}. Each writer's enrolled form is one seeded choice, the same in every
    protocol; only the writers of `probe` with several forms are queried."""
    rng = np.random.default_rng(seed)
    forms: dict[str, dict[str, list[int]]] = {}
    for i in sorted(range(len(records)), key=lambda i: records[i].image_id):  # reading order
        forms.setdefault(records[i].writer_id, {}).setdefault(records[i].form_id, []).append(i)
    out = {name: ({}, {}) for name in PROTOCOLS}
    for writer, by_form in sorted(forms.items()):
        names = sorted(by_form)
        chosen = by_form[names[rng.integers(len(names))]]
        others = [by_form[f] for f in names if by_form[f] is not chosen]
        first, second = chosen[:(len(chosen) + 1) // 2], chosen[(len(chosen) + 1) // 2:]
        for name, enrolled, queried in (
                ("same document", first, [second]),
                ("another document", first, [form[:len(second)] for form in others]),
                ("another document, whole forms", chosen, others)):
            out[name][0][writer] = enrolled
            if others and writer in probe:
                out[name][1][writer] = queried
    return out


def main() -> int:
    sys.path.insert(0, str(REPO))
    import ledger
    from open_set import writer_interval

    from iam_writers_tfds import kaggle_layout
    from iam_writers_tfds.images import read_gray
    from models.evaluate import topk_accuracy
    from models.runtime import descriptors
    from models.runtime.identify import hinge_similarity

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, help="writers with several forms each")
    p.add_argument("--extra", type=Path, required=True,
                   help="writers with one form each: gallery distractors, codebook")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ledger", type=Path, default=ledger.LEDGER)
    args = p.parse_args()
    records = []
    for folder in (args.dir, args.extra):
        root = kaggle_layout.find_root(folder)
        if root is None:
            p.error(f"{folder}: no forms_for_parsing.txt there or one level below")
        records.append(kaggle_layout.scan(root)[0])
    probed, extra = records
    split = protocols(probed + extra, args.seed, {r.writer_id for r in probed})
    queried = sorted(split[PROTOCOLS[0]][1])
    print(ledger.probed_before(args.ledger, queried), flush=True)

    start = time.perf_counter()
    images = [read_gray(r.path) for r in probed + extra]
    rng = np.random.default_rng(args.seed)
    fit = rng.choice(np.arange(len(probed), len(images)), CODEBOOK_LINES, replace=False)
    vlad = descriptors.Vlad.fit([images[i] for i in fit], seed=args.seed)
    hinge = descriptors.Hinge()
    rows = {"hinge": np.stack(list(descriptors.each(hinge, images))),
            "vlad": np.stack(list(descriptors.each(vlad, images)))}
    print(f"{len(images)} lines described in {time.perf_counter() - start:.0f} s", flush=True)

    def sums(kind: str, groups: list[list[int]]) -> np.ndarray:
        return np.stack([rows[kind][g].sum(0) for g in groups])

    print("\n| protocol | query | queries | score | top-1 | 95% interval (writers) | top-5 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for protocol, (enrolled, asked_docs) in split.items():
        writers = sorted(enrolled)
        gallery = {"hinge": sums("hinge", [enrolled[w] for w in writers]),
                   "vlad": vlad.encode(sums("vlad", [enrolled[w] for w in writers]))}
        documents = [(doc, writers.index(w)) for w, docs in asked_docs.items() for doc in docs]
        for level, asked in (("line", [([i], w) for doc, w in documents for i in doc]),
                             ("document", documents)):
            label = np.array([w for _, w in asked])
            groups = [g for g, _ in asked]
            scores = {"hinge": hinge_similarity(sums("hinge", groups), gallery["hinge"]),
                      "vlad": vlad.encode(sums("vlad", groups)) @ gallery["vlad"].T}
            for name, s in scores.items():
                hit = s.argmax(1) == label
                low, high = writer_interval(hit, label)
                print(f"| {protocol} | {level} | {len(asked)} | {name} | {hit.mean():.3f} "
                      f"| {low:.3f}-{high:.3f} | {topk_accuracy(s, label, 5):.3f} |")
    print(f"\ngallery: {len(writers)} writers; queried: {len(queried)} writers of {args.dir}")
    ledger.record(args.ledger, "protocols", args.dir.name, args.seed, queried)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
