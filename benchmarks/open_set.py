"""Open-set writer identification: train on some writers, identify writers never seen.

    python benchmarks/open_set.py DIR [--known 40] [--epochs 50] [--metric-loss cosface]
    python benchmarks/open_set.py --synthetic [--writers 24]

DIR is a Kaggle-layout folder. Its writers are split (seeded) into a known group and an
unseen group. The embedding model (`patch_embed` by default) trains on the known writers
only (their own form-disjoint train/validation/test split, built with TFDS from a folder of
links), is exported, and from then on everything runs through the TF-free runtime on the
float32 TFLite file, as a user would: for each unseen writer one form (seeded) is enrolled
into a gallery and every line of that writer's other forms is identified among all unseen
writers. Prints line top-1/top-5, form top-1, the rejection rate of writers who are not
enrolled (each writer identified against the gallery without them, at the threshold stored
at export), and the same model's closed-set accuracy on the known writers' test split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]


def split_writers(writers: list[str], known: int, seed: int) -> tuple[list[str], list[str]]:
    """(known, unseen) writer ids, a seeded partition of `writers`."""
    order = np.random.default_rng(seed).permutation(sorted(writers))
    return sorted(order[:known]), sorted(order[known:])


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


def open_set_figures(model, records, seed: int) -> dict:
    """Enrol one form per writer of `records`, identify the lines of their other forms."""
    from models.evaluate import normalise, topk_accuracy
    from models.runtime import Gallery, embed_inked

    rows, emb = embed_inked(model, [r.path for r in records])
    kept, blank = [records[i] for i in rows], len(records) - len(rows)
    writers = sorted({r.writer_id for r in kept})
    rng = np.random.default_rng(seed)
    gallery = Gallery("in-memory", model.fingerprint, [], np.zeros(0, np.int64), [],
                      np.zeros((0, 0)))
    probe = []
    for w in writers:
        rows = [i for i, r in enumerate(kept) if r.writer_id == w]
        forms = sorted({kept[i].form_id for i in rows})
        if len(forms) < 2:
            continue  # nothing left to identify after enrolling its only form
        enrolled = forms[rng.integers(len(forms))]
        mine = [i for i in rows if kept[i].form_id == enrolled]
        gallery.add(w, [str(kept[i].path) for i in mine], emb[mine])
        probe += [i for i in rows if kept[i].form_id != enrolled]
    centroids = gallery.centroids()
    label = np.array([gallery.writers.index(kept[i].writer_id) for i in probe])
    sims = emb[probe] @ centroids.T
    forms = np.array([kept[i].form_id for i in probe])
    form_ids = sorted(set(forms))
    form_sims = normalise(np.stack([emb[probe][forms == f].mean(0) for f in form_ids])) \
        @ centroids.T
    form_label = np.array([label[forms == f][0] for f in form_ids])
    threshold = model.identification_threshold
    others = sims.copy()
    others[np.arange(len(label)), label] = -np.inf  # the gallery without the line's writer
    return {
        "line_top1": topk_accuracy(sims, label, 1), "line_top5": topk_accuracy(sims, label, 5),
        "form_top1": topk_accuracy(form_sims, form_label, 1),
        "rejection_rate": float((others.max(1) < threshold).mean()),
        "false_rejection_rate": float((sims.max(1) < threshold).mean()),
        "threshold": threshold, "n_writers": len(gallery.writers), "n_lines": len(probe),
        "n_forms": len(form_ids), "n_enrolled_lines": int(len(gallery.images)),
        "n_blank_skipped": blank,
    }


def main() -> int:
    sys.path.insert(0, str(REPO))
    from models.config import METRIC_LOSSES, TrainConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, nargs="?", help="Kaggle-layout folder")
    p.add_argument("--synthetic", action="store_true", help="generate the data instead")
    p.add_argument("--writers", type=int, default=24, help="generated writers (--synthetic)")
    p.add_argument("--known", type=int, help="writers to train on (default: 40 of 56)")
    p.add_argument("--model", default="patch_embed", choices=("patch_embed", "patch_cnn"),
                   help="patch_cnn compares the classifier's pooled features")
    p.add_argument("--epochs", type=int, default=50,
                   help="50 took 25 minutes on the dev lines on a 2-core CPU")
    p.add_argument("--lr-schedule", default="cosine", choices=("cosine", "plateau"))
    p.add_argument("--metric-loss", default=TrainConfig.metric_loss, choices=METRIC_LOSSES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="keep the runs here (default: a temp folder)")
    args = p.parse_args()
    if (args.dir is None) == (not args.synthetic):
        p.error("pass a Kaggle-layout DIR or --synthetic")
    from iam_writers import data
    from iam_writers_tfds import kaggle_layout, synth
    from models.export import ExportConfig, export
    from models.runtime import Model
    from models.train import train

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        root = (synth.generate(out / "generated", synth.SynthConfig(writers=args.writers,
                                                                     seed=args.seed))
                if args.synthetic else kaggle_layout.find_root(args.dir))
        if root is None:
            p.error(f"{args.dir}: no forms_for_parsing.txt there or one level below")
        records, _ = kaggle_layout.scan(root)
        all_writers = sorted({r.writer_id for r in records})
        n_known = args.known or round(len(all_writers) * 40 / 56)
        known, unseen = split_writers(all_writers, n_known, args.seed)
        print(f"{len(all_writers)} writers: training on {len(known)}, identifying "
              f"{len(unseen)} never seen", flush=True)
        layout = linked_layout(records, set(known), out / "known_layout")
        data.build(data.BuildConfig("top50", layout, out / "tfds"))
        start = time.perf_counter()
        run = train(TrainConfig(model=args.model, config="top50", data_dir=out / "tfds",
                                out=out / "run", epochs=args.epochs, seed=args.seed,
                                lr_schedule=args.lr_schedule, metric_loss=args.metric_loss))
        minutes = (time.perf_counter() - start) / 60
        closed = json.loads((run / "metrics.json").read_text())
        export(ExportConfig(run, out / "export", quantize=("none",)))
        model = Model(out / "export" / "model_float32.tflite")
        figures = open_set_figures(model, [r for r in records if r.writer_id in unseen],
                                   args.seed)
    print(f"\n{args.model} ({args.metric_loss}), {args.epochs} epochs, trained in "
          f"{minutes:.1f} min on {len(known)} writers (float32 TFLite, TF-free runtime)")
    print(f"open set: {figures['n_writers']} unseen writers, one form enrolled each "
          f"({figures['n_enrolled_lines']} lines); {figures['n_lines']} lines / "
          f"{figures['n_forms']} forms identified")
    print(f"  line top-1 {figures['line_top1']:.3f}  line top-5 {figures['line_top5']:.3f}  "
          f"form top-1 {figures['form_top1']:.3f}")
    print(f"  unknown-writer rejection {figures['rejection_rate']:.3f} (writer not enrolled), "
          f"false rejection {figures['false_rejection_rate']:.3f} (writer enrolled), "
          f"threshold {figures['threshold']:.3f}")
    print(f"closed set (known writers' test split, nearest training centroid): line top-1 "
          f"{closed['top1']:.3f}  form top-1 {closed['form_top1']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
