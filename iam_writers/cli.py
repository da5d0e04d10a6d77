"""`iam-writers`: one command line over the builder, pipelines, models, tuning and export.

Each sub-command fills a configuration dataclass from its flags and calls into the
packages; heavy imports (TensorFlow) happen only inside the sub-command that needs them, so
the base install (the edge runtime: predict, verify, enroll, identify) runs without them.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from iam_writers_tfds import atomic, console

# What `pip install 'iam-writers[train]'` adds that the training-side commands import.
TRAIN_EXTRA = ("tensorflow", "tensorflow_datasets", "keras_tuner", "sklearn", "matplotlib")
INSTALL_TRAIN = "pip install 'iam-writers[train]'"


def missing_train_extra() -> str | None:
    """The first module of the `train` extra that is not installed, or None."""
    import importlib.util

    return next((m for m in TRAIN_EXTRA if importlib.util.find_spec(m) is None), None)


def _synth(args: argparse.Namespace) -> None:
    from iam_writers_tfds import synth

    cfg = _config(args, synth.SynthConfig)
    out = synth.generate(args.out, cfg, args.layout)
    print(f"wrote {cfg.writers * cfg.forms_per_writer * cfg.lines_per_form} images of "
          f"{cfg.writers} writers to {out} ({args.layout} layout)")


def _build(args: argparse.Namespace) -> None:
    from iam_writers import data

    print(data.statistics(data.build(data.BuildConfig(args.config, args.manual_dir,
                                                      args.data_dir))))


def _train(args: argparse.Namespace) -> None:
    from models.config import TrainConfig, worker_role
    from models.train import train

    cfg = _config(args, TrainConfig)
    run = train(cfg)
    chief, index = worker_role()
    if not chief:
        print(f"worker {index}: training finished; the chief writes the run directory {run}")
        return
    print(f"run directory: {run}")
    _print_metrics(run / "metrics.json")


def _tune(args: argparse.Namespace) -> None:
    from tuning.search import TuneConfig, search

    search(_config(args, TuneConfig))


def _export(args: argparse.Namespace) -> None:
    from models.export import ExportConfig, export

    cfg = _config(args, ExportConfig)
    card = export(cfg)
    print(f"exported {', '.join(card['files'])} and the SavedModel to {cfg.out}; "
          f"parity report: {cfg.out / 'parity.md'}")


def _preflight(args: argparse.Namespace) -> None:
    """The checks of paths, data and search spaces that need no TensorFlow, made before it
    loads (seconds)."""
    from models import config
    from pipelines import writer_names

    data_dir = getattr(args, "data_dir", None)
    if data_dir and Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise RunError(f"--data-dir {data_dir}: a file, not a folder. Pass the folder that "
                       "holds (or will hold) the built datasets.")
    if args.command == "train":
        cfg = _config(args, config.TrainConfig)
        cfg.check_out()
        if not cfg.resume:  # a resumed run reads its data from its own config.json
            writer_names(cfg.config, cfg.data_dir)
    elif args.command == "tune":
        from tuning import space
        from tuning.search import TuneConfig, check_project

        cfg = _config(args, TuneConfig)
        space.load(cfg.model, cfg.space)
        check_project(cfg.project)
        writer_names(cfg.config, cfg.data_dir)
    elif args.command in ("evaluate", "export"):
        run = config.trained_run(args.run)
    if args.command == "export":
        config.new_folder(args.out)
        try:
            run.inference_pipeline(args.stride)
        except ValueError as err:
            raise RunError(f"{args.run}: {err}") from None
    try:
        atomic.check_can_write(_written(args), directory=True)
    except PermissionError as err:
        if args.command != "evaluate":
            raise
        raise PermissionError(f"{err} (evaluate writes metrics.json and plots/ into the run: "
                              "copy the run there and evaluate the copy)") from None


def _written(args: argparse.Namespace) -> Path:
    """The folder a command of the train install writes into (build: the TFDS data dir,
    TFDS's default where none is given)."""
    if args.command == "build":
        return Path(args.data_dir or os.path.expanduser(
            os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")))
    return Path(getattr(args, {"tune": "project", "evaluate": "run"}.get(args.command, "out")))


MODEL_HELP = ("an export folder (its float32 model, if exported), one of its model_*.tflite files, "
              "or its saved_model folder")
NOTE_NAMES = 3  # files a note names before it counts the rest


def _first(files: list) -> str:
    """The first `NOTE_NAMES` of the files a note names, and how many more."""
    return (", ".join(map(str, files[:NOTE_NAMES]))
            + (f" and {len(files) - NOTE_NAMES} more" if len(files) > NOTE_NAMES else ""))


def _declared_resolutions(images: list, dpi: float | None) -> None:
    """Name the files read at a resolution they declare other than 300 dpi (resampled from
    it), so that a wrong declaration is seen: a few by name, then how many more at each
    resolution. `--dpi` overrides them all."""
    from iam_writers_tfds.images import SCAN_DPI, scan_dpi

    if dpi:
        return
    by_dpi: dict[int, list] = {}
    for image in images:
        try:
            source = scan_dpi(Path(image).read_bytes())
        except OSError:  # a missing file gets its own error when it is read
            continue
        if source != SCAN_DPI:
            by_dpi.setdefault(round(source), []).append(image)
    if by_dpi:
        print(f"note: resampled to {SCAN_DPI} dpi from the resolution the file declares "
              "(--dpi overrides it): " + "; ".join(
                  _first(files) + f" at {source} dpi" for source, files in by_dpi.items()),
              file=sys.stderr)


def _photos_unmeasured(cameras: dict[str, str]) -> None:
    """Name the photos read as if scanned at 300 dpi, no sheet of paper found on them, by
    the camera their EXIF names (`cameras`: the results' "unmeasured"): their handwriting's
    size is not known, which the answer does not show."""
    from iam_writers_tfds.images import SCAN_DPI

    named = [f"{image} ({camera})" for image, camera in cameras.items()]
    if named:
        print(f"note: {len(named)} photo(s) whose EXIF names a camera, with no whole sheet of "
              f"paper found on them, were read as if scanned at {SCAN_DPI} dpi, so their "
              "handwriting's size is not known and a writer may be missed or mistaken: "
              + _first(named) + ". Photograph the whole sheet on a darker desk, or crop the "
              "photo to the paper and pass --dpi (its width in pixels over the paper's in "
              "inches)",
              file=sys.stderr)


def _show(result: dict | list, as_json: bool, text: str) -> None:
    """The result on stdout in one write that ends a line: `print` writes the newline after
    the text, and a line stdout flushes at its end (`console.whole_lines`) would go out cut
    in two, a note on stderr between."""
    sys.stdout.write((_json(result) if as_json else text) + "\n")


def _json(result: dict | list) -> str:
    """`result` in JSON that reads as it is ("Müller", not "M\\u00fcller") where stdout is
    UTF-8, and all in ASCII escapes where it is not. A file name that is not UTF-8 (lone
    surrogates) keeps JSON's escape, `\\udcff`, which a UTF-8 stream cannot write."""
    import json
    import re

    if (sys.stdout.encoding or "").lower().replace("-", "") != "utf8":
        return json.dumps(result, indent=2)
    return re.sub(r"[\ud800-\udfff]", lambda m: f"\\u{ord(m[0]):04x}",
                  json.dumps(result, indent=2, ensure_ascii=False))


def _not_read(skipped: list[str], of: int) -> int:
    """With --skip-unreadable: warn of the images skipped, a few by name; the exit status
    (1 where any was)."""
    if skipped:
        print(f"warning: {len(skipped)} of {of} images not read"
              + (", the others answered: " if len(skipped) < of else ": ")
              + _first(skipped),
              file=sys.stderr)
    return 1 if skipped else 0


def _predict(args: argparse.Namespace) -> int:
    from models.runtime import Model, evidence
    from models.runtime.model import UNREADABLE

    model = Model(args.model, args.threads)
    _declared_resolutions(args.images, args.dpi)
    results = []
    for image in console.progress(args.images, "reading", "image", leave=False):
        try:
            results.append(model.predict(image, args.top_k, args.input, args.dpi, args.paper))
        except UNREADABLE as err:
            if not args.skip_unreadable:
                raise
            results.append({"image": str(image), "error": str(err)})
    _photos_unmeasured({r["image"]: r["unmeasured"] for r in results if "unmeasured" in r})
    text = "\n".join(
        f"not read: {r['error']}" if "error" in r else f"{r['image']}"
        f"{evidence.read_words(r.get)}: "
        + ", ".join(f"{t['writer']} {t['score']:.3f}" for t in r["top"]) for r in results)
    _show(results, args.json, text)
    return _not_read([r["image"] for r in results if "error" in r], len(results))


def _verify(args: argparse.Namespace) -> None:
    from models.runtime import EnrolledWriter, Gallery, Model, evidence, verify

    model = Model(args.model, args.threads)
    known = EnrolledWriter(Gallery.open(args.gallery), args.writer) if args.gallery else args.b
    _declared_resolutions([args.a] + ([args.b] if args.b else []), args.dpi)
    drawn: dict[str, bytes] | None = {} if args.report else None
    r = verify(model, args.a, known, args.descriptor, args.input, args.dpi, drawn, args.paper)
    _photos_unmeasured({str(image): r[f"unmeasured_{side}"]
                        for image, side in ((args.a, "a"), (args.b, "b"))
                        if f"unmeasured_{side}" in r})
    if args.report:
        written = evidence.verify_report(args.report, r, drawn, model)
        print(f"report: {written}", file=sys.stderr)
    if "note" in r:
        print(f"note: {r['note']}", file=sys.stderr)
    if "rule_rates" in r and not args.json:  # the JSON holds them
        print(f"note: {evidence.verify_rates_words(r['rule_rates'], r['level'])}",
              file=sys.stderr)
    if r.get("same_image"):
        print(f"note: {evidence.SAME_IMAGE}", file=sys.stderr)
    if lines := r.get("b_lines"):
        print(f"note: {evidence.few_b_words(lines, **evidence.b_fitted(r))}",
              file=sys.stderr)
    if hand := r.get("b_in_cohort"):
        print(f"note: {r['b']} reads as training writer {hand['reads_as']}'s, of the model's "
              f"cohort (fused {hand['score']:.3f}, a document's threshold "
              f"{hand['threshold']:.3f}). If it is that writer, the model was trained on its "
              "handwriting and measures it against its own hand, which lowers the score: "
              "weigh \"different writers\" with care", file=sys.stderr)
    verdict = "same writer" if r["same_writer"] else "different writers"
    _show(r, args.json, f"{verdict}: {r['scored_by']} {r['score']:.3f} (threshold "
          f"{r['threshold']:.3f})"
          + (f"; log10 LR {r['log10_lr']:+.2f}, {r['support']}" if "log10_lr" in r else "")
          + "".join(evidence.read_words(lambda k, side=side: r.get(f"{k}_{side}"), side)
                    for side in ("a", "b"))
          + (f" (b: {b['writer']}'s enrolled handwriting, {len(b['images'])} image(s), "
             f"{'lines not recorded' if b['lines'] is None else str(b['lines']) + ' line(s)'})"
             if (b := r.get("b_enrolled")) else ""))


def _enroll(args: argparse.Namespace) -> None:
    from models.runtime import Gallery, Model, evidence, features_for, identify

    model = Model(args.model, args.threads) if args.model else None
    features = features_for(model, args.descriptor, args.input, args.dpi, args.paper)
    if args.layout:
        layout = identify.layout_writers(args.layout, args.forms_per_writer)
        if layout.skipped:
            print(f"note: not enrolled, not images by their names: {_first(layout.skipped)}",
                  file=sys.stderr)
        _declared_resolutions([f for files in layout.writers.values() for f in files],
                              args.dpi)
        done = identify.enroll_writers(args.gallery, features, layout.writers)
        print(f"enrolled {sum(e.added for e in done)} image(s) of {len(done)} writer(s) from "
              f"{args.layout}; {sum(len(e.skipped) for e in done)} already enrolled")
    else:
        _declared_resolutions(args.images, args.dpi)
        e = identify.enroll(args.gallery, features, args.writer, args.images)
        done = [e]
        print(f"enrolled {e.added} image(s) of {e.writer}"
              + (f"; {len(e.skipped)} already enrolled: {', '.join(e.skipped)}"
                 if e.skipped else ""))
    _photos_unmeasured({image: camera for e in done for image, camera in e.unmeasured.items()})
    gallery = Gallery.open(args.gallery)
    info = gallery.info()
    print(f"{info['gallery']} now holds {info['writers']} writer(s), {info['images']} "
          f"image(s) ({gallery.built_by})")
    few = {w: n for w, n in gallery.lines([e.writer for e in done]).items()
           if n is not None and n < evidence.FEW_LINES}
    identifier = identify.Identifier(gallery, model, args.descriptor)
    if few:
        words = evidence.few_lines_words(few, args.gallery, 0, **identifier.fitted_for_few())
        print(f"note: {words}", file=sys.stderr)
    _warn_alike(identifier, args)


def _warn_alike(identifier, args: argparse.Namespace) -> None:
    """A warning on stderr where the writer just enrolled (with --layout, any writer) reads
    as another enrolled one: a query matching either may be the other's; a note where it
    reads as a training writer of the model's cohort."""
    from models.runtime import evidence

    hands = identifier.in_cohort() if args.layout else []
    if hands:
        taken = [h["writer"] for h in hands if h["taken_without"]]
        other = [f"{h['writer']} as {h['reads_as']}" for h in hands if not h["taken_without"]]
        said = ([f"{len(taken)} writer(s) are training writers of the model's cohort, enrolled "
                 f"under their labels ({evidence.first_five(taken)}): each is taken without "
                 f"its own hand. {evidence.COHORT_TRAINED}"] if taken else [])
        said += [f"{len(other)} writer(s) read as a training writer of the cohort under another "
                 f"name ({evidence.first_five(other)}): `iam-writers gallery alike "
                 f"{args.gallery}` lists them, with the rename that takes one as that writer"
                 ] if other else []
        print(f"note: {'. '.join(said)}", file=sys.stderr)
    elif not args.layout and (hand := identifier.cohort_of.get(args.writer)):
        print(f"note: {evidence.cohort_words(hand, identifier.score, args.gallery)}",
              file=sys.stderr)

    advice = ("check they are not one writer, or enrol more of each (`iam-writers gallery "
              f"alike {args.gallery}` lists every such writer)")
    if args.layout:
        pairs = identifier.alike()
        if pairs:
            named = evidence.first_five([f"{p['writer']} as {p['reads_as']}" for p in pairs])
            print(f"warning: {len(pairs)} writer(s)' enrolled handwriting reads as another "
                  f"writer's ({named}): {advice}", file=sys.stderr)
        return
    for pair in identifier.alike_either(args.writer):
        print(f"warning: {evidence.alike_words(pair, identifier.score)}. A query matching "
              f"either may be the other's: {advice}", file=sys.stderr)


def _identify(args: argparse.Namespace) -> int:
    from models.runtime import Gallery, Identifier, Model, evidence

    model = Model(args.model, args.threads) if args.model else None
    gallery = Gallery.open(args.gallery)
    identifier = Identifier(gallery, model, args.descriptor, args.threshold, args.input,
                            args.dpi, args.paper)
    if not identifier.asked:
        print(f"scoring by {identifier.score}" + (
            f" (no --model given; {gallery.path} also holds model {gallery.fingerprint}'s "
            "embeddings)" if identifier.score == "hinge" and gallery.fingerprint else ""),
            file=sys.stderr)
    _declared_resolutions(args.images, args.dpi)
    drawn: dict[str, bytes] | None = {} if args.report else None
    skip = args.skip_unreadable
    results = ([identifier.rank(args.images, args.top_k, drawn, skip)] if args.document
               else identifier.rank_each(args.images, args.top_k, drawn, skip))
    answered = [r for r in results if "error" not in r]
    _photos_unmeasured({i: c for r in answered for i, c in r.get("unmeasured", {}).items()})
    if args.report and answered:
        written = evidence.identify_report(args.report, results, identifier, drawn)
        print(f"report: {written}", file=sys.stderr)
    elif args.report:
        print(f"report: not written ({args.report}): no image was read", file=sys.stderr)
    if answered and "note" in answered[0]:
        print(f"note: {answered[0]['note']}", file=sys.stderr)
    if not args.json:  # what the unknown-writer rule gave at calibration, once a kind of
        # query, and of closest writers enrolled from a few lines (the JSON has them in
        # each answer: rule_rates, few_lines)
        measured = {("line" if r["level"] == "line" else "document",  # a page's: a document's
                     r["rule_rates"].get("enrolled_lines")): r["rule_rates"]
                    for r in answered if "rule_rates" in r}
        for (level, _), rates in measured.items():
            print(f"note: {evidence.rule_rates_words(rates, level)}", file=sys.stderr)
        if closest := [r["few_lines"] for r in answered if "few_lines" in r]:
            few = {c["writer"]: c["lines"] for c in closest}
            words = evidence.few_lines_words(few, args.gallery, len(closest),
                                             **identifier.fitted_for_few())
            print(f"note: {words}", file=sys.stderr)
        if words := next(filter(None, (evidence.lrs_by_lines_words(r["top"])
                                       for r in answered)), ""):
            print(f"note: {words}", file=sys.stderr)
    text = "\n".join(
        f"not read: {r['error']}" if "error" in r else
        (f"document of {len(r['images'])} images" if args.document
         else r["images"][0]
         + evidence.read_words(lambda k, r=r: r.get(k, {}).get(r["images"][0])))
        + f": {r['writer'] or 'unknown writer'} ({r['score']}: "
        + ", ".join(f"{t['writer']} {t['similarity']:.3f}"
                    + (f" [log10 LR {t['log10_lr'][r['score']]:+.2f}"
                       f"{evidence.lr_lines_words(t.get('lr_lines'))}]" if "log10_lr" in t
                       else "") for t in r["top"]) + ")"
        + (f"; {r['top'][0]['writer']}: {r['top'][0]['support']}"
           + evidence.searched(r, len(identifier.writers)) if "support" in r["top"][0] else "")
        + "".join(f"; but {evidence.alike_words(pair, r['score'])}"
                  for pair in r.get("alike", []))
        + (f"; note: {evidence.cohort_words(r['in_cohort'], r['score'], args.gallery)}"
           if "in_cohort" in r else "")
        + "".join(f"; note: {'' if len(r['images']) == 1 else image + ' is '}"
                  f"{evidence.enrolled_words(e)}" for image, e in r.get("enrolled", {}).items())
        for r in results)
    _show(results, args.json, text)
    skipped = (list(results[0].get("skipped", {})) if args.document
               else [r["images"][0] for r in results if "error" in r])
    return _not_read(skipped, len(args.images))


def _gallery(args: argparse.Namespace) -> int | None:
    from models.runtime import Gallery, GalleryError
    from models.runtime.gallery import upgrade

    if args.action == "upgrade":
        print(f"converted {args.gallery} into {upgrade(args.gallery)}; the .npz and .json "
              "files were removed")
        return
    if args.action == "rebuild":
        _rebuild(args)
        return
    if args.action == "alike":
        _gallery_alike(args)
        return
    gallery = Gallery.open(args.gallery)
    if args.action == "list":
        rows = gallery.writers()
        _show(rows, args.json, "\n".join(
            f"{r['writer']}\t{r['images']} image(s)\t"
            f"{'lines not recorded' if r['lines'] is None else str(r['lines']) + ' line(s)'}"
            f"\tenrolled {r['enrolled']}\tupdated {r['updated']}" for r in rows)
            or f"{gallery.path}: no writers enrolled")
    elif args.action == "show":
        rows = gallery.images(args.writer)
        _show(rows, args.json, "\n".join(
            f"{r['path']}\t{_read_as(r)}\tenrolled {r['enrolled']}\tsha256 {r['sha256'][:12]}"
            for r in rows))
    elif args.action == "info":
        info = gallery.info()
        _show(info, args.json, "\n".join(f"{k}: {v}" for k, v in info.items()))
    elif args.action == "check":
        problems = gallery.check()
        if problems:
            raise GalleryError(f"{gallery.path}: " + "; ".join(problems) + ". Restore it from "
                               "a backup, or remove and enroll again the writers named.")
        print(f"{gallery.path}: sound ({gallery.info()['writers']} writers)")
        if args.files:
            return _check_files(gallery)
    elif args.action == "backup":
        copy, info = gallery.backup(args.backup), gallery.info()
        print(f"backed up {gallery.path} ({info['writers']} writers, {info['images']} images) "
              f"into {copy}, checked sound")
    elif args.action == "history":
        _history(gallery, args)
    elif args.action == "remove":
        n = gallery.remove(args.writer, args.keep_name)
        print(f"removed {args.writer} and the features of {n} image(s) from {gallery.path}"
              + ("; the history keeps the name" if args.keep_name else
                 "; their name is erased from its history too"))
    else:
        gallery.rename(args.writer, args.new)
        print(f"renamed {args.writer} to {args.new} in {gallery.path}")


def _history(gallery, args: argparse.Namespace) -> None:
    """`gallery history`: every change, dated, oldest first (one writer's with --writer)."""
    from models.runtime.gallery import event_words

    events = gallery.history(args.writer)
    lines = [f"{e.at}  {event_words(e)}" for e in events]
    if args.writer is None and (not events or events[0].action != "created"):
        lines.insert(0, f"{gallery.path}: " + (
            f"its history begins {events[0].at}; the changes before were made by an "
            "iam-writers version that kept none" if events else "no history yet: it was made "
            "by an iam-writers version that kept none; its next change begins it")
            + " (`gallery list` and `show` date every enrolment)")
    if args.writer is not None and not events:
        lines.append(f"{gallery.path}: {args.writer} was enrolled before the gallery's history "
                     f"began, and not changed since (`iam-writers gallery show {gallery.path} "
                     f"{args.writer}` dates their images)")
    _show([e._asdict() for e in events], args.json, "\n".join(lines))


def _check_files(gallery) -> int:
    """`gallery check --files`: whether every enrolled file is at its path as enrolled (what
    a rebuild reads); 1 where any is not, each named."""
    from models.runtime.gallery import lost_files, lost_words

    sources = gallery.sources()
    lost = lost_files(sources)
    total = sum(len(images) for _, images in sources)
    if not lost:
        print(f"every one of the {total} enrolled files is at its path as enrolled")
        return 0
    print(f"{len(lost)} of the {total} enrolled files are not at their path as enrolled: a "
          "rebuild needs them (restore them, or name the folders they were moved to: "
          f"`iam-writers gallery rebuild {gallery.path} NEW --look-in DIR`)")
    for path in lost.values():
        print(f"  {lost_words(path)}")
    return 1


def _gallery_alike(args: argparse.Namespace) -> None:
    from models.runtime import Gallery, Identifier, Model, evidence

    model = Model(args.model, args.threads) if args.model else None
    identifier = Identifier(Gallery.open(args.gallery), model, args.descriptor)
    pairs = identifier.alike() + identifier.in_cohort()
    if args.report:
        print(f"report: {evidence.alike_report(args.report, pairs, identifier)}",
              file=sys.stderr)
    cohort = ([f"note: a writer taken as a training writer of the model's cohort is scored "
               f"without that writer's handwriting; `iam-writers gallery rename {args.gallery} "
               "WRITER LABEL` takes one enrolled under another name so. "
               f"{evidence.COHORT_TRAINED}"]
              if any(p.get("in_cohort") for p in pairs) else [])
    _show(pairs, args.json, "\n".join([evidence.alike_words(p, identifier.score)
                                       for p in pairs] + cohort)
          or f"{args.gallery}: no writer's enrolled handwriting reads as another's "
             f"({identifier.score}, {len(identifier.writers)} writers)")


def _read_as(image: dict) -> str:
    """How an enrolled image was read, in words: `page of 9 lines at 300 dpi`."""
    if image["read_as"] is None:
        return "reading not recorded"
    read = image["read_as"] + (f" of {image['lines']} lines" if image["read_as"] == "page"
                               and image["lines"] is not None else "")
    if image["dpi"] is None:  # `Read.read_as`: a photo's sheet sets it at every reading
        return f"{read}, a photo straightened onto {image['paper'] or 'its'} paper"
    return f"{read} at {image['dpi']:g} dpi" + (
        f", a photo ({image['camera']}) with no sheet found" if image["camera"] else "")


def _rebuild(args: argparse.Namespace) -> None:
    from models.runtime import Gallery, Model, features_for, identify

    model = Model(args.model, args.threads) if args.model else None
    done = identify.rebuild(args.gallery, args.new, features_for(
        model, args.descriptor, args.input, args.dpi, args.paper), args.look_in)
    gallery = Gallery.open(args.new)
    for was, now in done.moved.items():
        print(f"moved: {was} -> {now}")
    moved = f", {len(done.moved)} found moved (their new paths kept)" if done.moved else ""
    print(f"rebuilt {len(done.enrolled)} writer(s), {sum(e.added for e in done.enrolled)} "
          f"image(s) of {args.gallery} into {gallery.path} ({gallery.built_by}){moved}; "
          f"{args.gallery} is unchanged")


def _evaluate(args: argparse.Namespace) -> None:
    from models.evaluate import evaluate

    evaluate(args.run, args.split)
    _print_metrics(args.run / f"metrics_{args.split}.json")


def _print_metrics(path: Path) -> None:
    import json

    m = json.loads(path.read_text())
    print(f"{m['split']}: image top-1 {m['top1']:.3f}  top-5 {m['top5']:.3f}  "
          f"form top-1 {m['form_top1']:.3f}  ({m['n_images']} images, {m['n_forms']} forms, "
          f"{m['n_writers']} writers)")
    if "roc_auc" in m.get("verification", {}):
        v = m["verification"]
        print(f"verification: ROC-AUC {v['roc_auc']:.3f}  EER {v['eer']:.3f}  "
              f"TAR@FAR=1% {v['tar_at_far_1pct']:.3f}")
    print(f"metrics: {path}; plots: {path.parent / 'plots'}")


def dpi_value(value: str) -> float:
    """An argparse type for a scan resolution in dots per inch: from MIN_DPI, below which
    too little of the handwriting is left to name its writer."""
    from iam_writers_tfds.images import MIN_DPI

    try:
        dpi = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of dots per inch, got {value!r}") from None
    if not MIN_DPI <= dpi <= 2400:
        raise argparse.ArgumentTypeError(f"a scan resolution from {MIN_DPI} to 2400 dpi, got "
                                         f"{value}")
    return dpi


def report_file(value: str) -> Path:
    """An argparse type for a report to write: a file's path, not a folder's (refused
    before the work, which may take minutes, not after it)."""
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder: name the report's file, as "
                                         f"{path / 'report.html'}")
    try:
        atomic.check_can_write(path)
    except PermissionError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return path


def writer_name(value: str) -> str:
    """An argparse type for a writer's name: UTF-8 text (SQLite holds no other)."""
    from models.runtime.gallery import not_utf8

    if why := not_utf8(value):
        raise argparse.ArgumentTypeError(why)
    return value


def finite(value: str) -> float:
    """An argparse type for a score: a number, not nan or infinite (nan compares false with
    every score, so every query was answered unknown)."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number, got {value!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"a finite number, got {value}")
    return x


def positive_int(value: str) -> int:
    """An argparse type for counts that must be at least 1."""
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def count(value: str) -> int:
    """An argparse type for counts where 0 means all."""
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (all) or more, got {n}")
    return n


def _add_fields(p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One flag per dataclass field: the dataclass is the single source of defaults."""
    import dataclasses

    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kwargs = {"default": f.default, "help": f.metadata.get("help")}
        if isinstance(f.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = (Path if f.name in ("out", "data_dir") else
                              float if f.default is None else type(f.default))
        p.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def quantizations(value: str) -> tuple[str, ...]:
    """An argparse type: export's comma-separated --quantize values."""
    from models.config import VARIANTS

    chosen = tuple(v for v in value.split(",") if v)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown quantization {', '.join(unknown) or '(none)'}"
                                         f"; allowed: {', '.join(VARIANTS)}")
    return chosen


def _show_defaults(p: argparse.ArgumentParser) -> None:
    """--help states every option's default (argparse's formatter skips options without a
    help text)."""
    for action in p._actions:
        if action.option_strings and not any(action.default is v for v in (
                None, False, argparse.SUPPRESS)) and "%(default)" not in (action.help or ""):
            action.help = f"{action.help or ''} (default: %(default)s)".strip()


class ConfigError(ValueError):
    """A flag value a configuration dataclass rejected."""


class RunError(ValueError):
    """A flag value the given run cannot take (one line, like other bad input)."""


def _config(args: argparse.Namespace, cls):
    """The configuration dataclass `cls` filled in from the flags of the same names."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in vars(args).items() if k in names})
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _demo(args: argparse.Namespace) -> None:
    from iam_writers.demo import DemoConfig, run

    run(_config(args, DemoConfig))


def parser() -> argparse.ArgumentParser:
    from iam_writers.data import CONFIGS

    p = argparse.ArgumentParser(prog="iam-writers", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    layouts = ("kaggle", "iam")  # synth.LAYOUTS, which would import OpenCV into every command

    s = sub.add_parser("synth", help="write a synthetic dataset in the Kaggle or IAM layout")
    s.add_argument("--out", type=Path, required=True, help="new folder to create")
    s.add_argument("--layout", choices=layouts, default="kaggle",
                   help="kaggle: forms_for_parsing.txt + data_subset/ (configs top50, top10); "
                        "iam: the official lines/ + ascii/ (configs iam, iam_ok)")
    s.add_argument("--writers", type=positive_int, default=10, help="generated writers")
    s.add_argument("--forms-per-writer", type=positive_int, default=6,
                   help="forms (pages) of each writer")
    s.add_argument("--lines-per-form", type=positive_int, default=8,
                   help="text lines of each form")
    s.add_argument("--seed", type=int, default=0, help="the seed of the writers' hands")
    s.set_defaults(func=_synth)

    s = sub.add_parser("build", help="build the TFDS dataset and print its statistics")
    s.add_argument("--config", choices=CONFIGS, default="synthetic",
                   help="synthetic: generated writers, offline; top50/top10: the Kaggle "
                        "subset; iam/iam_ok: the official distribution (iam_ok: without "
                        "the lines whose word segmentation failed)")
    s.add_argument("--manual-dir", type=Path, action="append",
                   help="a folder in the Kaggle layout (forms_for_parsing.txt + data_subset/, "
                        "or the zip) for top50/top10, or the official IAM one (lines/ + "
                        "ascii/, or lines.tgz + ascii.tgz) for iam/iam_ok; repeat it to build "
                        "several folders as one dataset")
    s.add_argument("--data-dir", type=Path, help="TFDS data dir (default ~/tensorflow_datasets)")
    s.set_defaults(func=_build, needs_train=True)

    from iam_writers_tfds.images import BELIEVED_DPI, SCAN_DPI, SCREEN_DPI
    from models.config import (
        BACKBONES,
        CONFIG_HELP,
        INPUTS,
        LR_SCHEDULES,
        METRIC_LOSSES,
        MODELS,
        PAGE_MIN_HEIGHT,
        SCORES,
        TrainConfig,
    )
    from models.runtime.photos import PAPERS

    s = sub.add_parser("train", help="train a model into runs/NAME and evaluate it")
    s.add_argument("--model", choices=MODELS, default="patch_cnn",
                   help="patch_cnn: a classifier of the training writers; patch_embed: "
                        "embeddings that name writers enrolled later; the notebooks' "
                        "resnet50_classifier and siamese_resnet50")
    s.add_argument("--config", choices=CONFIGS, default="synthetic", help=CONFIG_HELP)
    s.add_argument("--backbone", choices=BACKBONES, default="resnet50",
                   help="the resize models' backbone")
    s.add_argument("--weights", default="imagenet",
                   help="imagenet | none | PATH of a weights file (ResNet50-style models)")
    s.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=TrainConfig.lr_schedule,
                   help="cosine: decay to 0 over the epochs; plateau: ReduceLROnPlateau, as "
                        "in the notebooks")
    s.add_argument("--metric-loss", choices=METRIC_LOSSES, default=TrainConfig.metric_loss,
                   help="patch_embed's loss on P x K batches: CosFace (learned writer "
                        "centres), supervised contrastive or batch-hard triplet")
    _add_fields(s, TrainConfig, skip=("model", "config", "backbone", "weights", "lr_schedule",
                                      "metric_loss"))
    s.set_defaults(func=_train, needs_train=True)

    s = sub.add_parser("evaluate", help="metrics.json and plots for a run directory")
    s.add_argument("run", type=Path, help="a run directory that `iam-writers train` wrote")
    s.add_argument("--split", choices=("train", "validation", "test"), default="test",
                   help="the split to measure on")
    s.set_defaults(func=_evaluate, needs_train=True)

    from tuning.search import add_arguments

    s = sub.add_parser("tune", help="KerasTuner search over a model family (resumable)")
    add_arguments(s)
    s.set_defaults(func=_tune, needs_train=True)

    s = sub.add_parser("export", help="SavedModel + TFLite variants, model card, parity report")
    s.add_argument("run", type=Path, help="a run directory written by `iam-writers train`")
    s.add_argument("--out", type=Path, required=True, help="new export folder")
    s.add_argument("--quantize", type=quantizations,
                   default="none,float16,dynamic,int8",
                   help="the TFLite variants, comma-separated: none (float32, not quantised), "
                        "float16 (half-size weights), dynamic (int8 weights, float "
                        "activations), int8 (full integer, calibrated on training lines)")
    s.add_argument("--allow-degraded", action="store_true",
                   help="keep an int8 model below the 97%% top-1 agreement gate")
    s.add_argument("--calibration-samples", type=int, default=200,
                   help="training inputs that calibrate int8 ranges (100..500)")
    s.add_argument("--far", type=float, default=0.01,
                   help="the unknown-writer thresholds accept this share of the queries of "
                        "writers not enrolled (measured on the writers the run held out of "
                        "training, else on the validation lines it did not train on)")
    s.add_argument("--stride", type=int, default=0,
                   help="window stride at inference in px (default: the run's evaluation "
                        "stride, half a patch); a full patch halves the latency")
    s.set_defaults(func=_export, needs_train=True)

    def model_args(s: argparse.ArgumentParser, json_flag: bool = True,
                   as_enrolled: bool = False) -> None:
        """--threads, --input, --dpi, --paper (with `as_enrolled`, their defaults read each
        image as it was enrolled) and --json."""
        again = " (default: each image as it was enrolled)" if as_enrolled else ""
        s.add_argument("--threads", type=positive_int, default=2,
                       help="CPU threads of the model and the descriptors")
        s.add_argument("--input", choices=INPUTS, default="auto",
                       help="line: each image is one text line; page: a page scan whose text "
                            "lines are found and read as one document; auto: a page when the "
                            f"image is at least {PAGE_MIN_HEIGHT} px tall and two or more text "
                            f"lines are found on it, else a line{again}")
        s.add_argument("--dpi", type=dpi_value, default=None,
                       help="the images' scan resolution: they are resampled to the "
                            f"{SCAN_DPI} dpi of IAM's scans, which every model and "
                            "descriptor here measures handwriting at "
                            + (again or "(default: the resolution a PNG, JPEG or TIFF "
                               f"declares, if {BELIEVED_DPI[0]}-{BELIEVED_DPI[1]} dpi and none of "
                               f"the screen tools' {', '.join(map(str, SCREEN_DPI))}, else "
                               f"{SCAN_DPI}; a PDF's pages are measured on their paper)"))
        s.add_argument("--paper", choices=PAPERS, default=None,
                       help="the paper of a photographed page, whose sheet is straightened "
                            "onto it at 300 dpi where nothing tells the photo's resolution "
                            + (again or "(default: A4, Letter or Legal, whichever the "
                                        "sheet's shape is nearer; A5 has A4's shape, so name "
                                        "it)"))
        if json_flag:
            s.add_argument("--json", action="store_true", help="machine-readable output")

    def scoring_args(s: argparse.ArgumentParser) -> None:
        """--model and --descriptor of a command that scores a gallery's writers."""
        s.add_argument("--model", type=Path, help="the model the gallery was enrolled with")
        s.add_argument("--descriptor", choices=SCORES,
                       help="the score: default fused when the model's card calibrated "
                            "fusion, else embedding; hinge without a model")

    def skip_arg(s: argparse.ArgumentParser) -> None:
        s.add_argument("--skip-unreadable", action="store_true",
                       help="answer the images that can be read and say why each other one "
                            "cannot (missing, corrupt, blank, a page turned), instead of "
                            "stopping at the first; exit status 1 where any was skipped")

    s = sub.add_parser("predict", help="top-k writers of images (.tflite or SavedModel)")
    s.add_argument("model", type=Path, help=MODEL_HELP)
    s.add_argument("images", type=Path, nargs="+",
                   help="line images, page scans or photos of pages (PNG, JPEG, HEIC, TIFF or "
                        "PDF; a PDF or a TIFF of pages is one document)")
    s.add_argument("--top-k", type=positive_int, default=5,
                   help="candidate writers listed for each image")
    skip_arg(s)
    model_args(s)
    s.set_defaults(func=_predict)

    s = sub.add_parser("verify", help="did the writer of b write a? A score, a decision and "
                       "a likelihood ratio")
    s.add_argument("model", type=Path, help=MODEL_HELP)
    s.add_argument("a", type=Path, help="the questioned handwriting (a line or a page)")
    s.add_argument("b", type=Path, nargs="?",
                   help="the known writer's handwriting (best a page); or --gallery and "
                        "--writer")
    s.add_argument("--gallery", type=Path,
                   help="instead of b: a gallery enrolled with this model, whose --writer's "
                        "enrolled handwriting is the known")
    s.add_argument("--writer", type=writer_name,
                   help="the enrolled writer of --gallery to weigh a against")
    s.add_argument("--descriptor", choices=SCORES,
                   help="the score: default fused when the model's card calibrated fusion, "
                        "else embedding; hinge for the contour-hinge alone")
    s.add_argument("--report", type=report_file, metavar="FILE.html",
                   help="also write a self-contained HTML report: both images side by side "
                        "with the score and the decision")
    model_args(s)
    s.set_defaults(func=_verify)

    s = sub.add_parser("enroll", help="add a writer's images, or a folder of writers, to a "
                       "gallery")
    s.add_argument("gallery", type=Path, help="the gallery: one SQLite file (GALLERY.sqlite "
                   "when the path has no .sqlite or .db ending), created when missing")
    s.add_argument("images", type=Path, nargs="*", help="the writer's images (with --writer)")
    s.add_argument("--writer", type=writer_name,
                   help="the writer the images belong to: a name of one line of text")
    s.add_argument("--layout", type=Path, metavar="DIR",
                   help="instead of --writer and images: enrol every writer of a folder "
                        "holding a folder of images for each writer (named by the writer), "
                        "or of a Kaggle- or IAM-layout folder (extracted), each writer in "
                        "one transaction")
    s.add_argument("--forms-per-writer", type=count, default=0,
                   help="with --layout: each writer's first N forms, or files in a writer's "
                        "folder, by name (0: all)")
    s.add_argument("--model", type=Path, help="an exported model (none: --descriptor hinge)")
    s.add_argument("--descriptor", choices=SCORES,
                   help="what to store: the model's embeddings, contour-hinge histograms "
                        "(no model needed), or everything the model's scores need (fused or "
                        "vlad: embeddings, histograms and RootSIFT + VLAD; the default with a "
                        "model)")
    model_args(s, json_flag=False)
    s.set_defaults(func=_enroll)

    s = sub.add_parser("gallery", help="list, inspect, date, back up, remove, rename or "
                                       "rebuild enrolled writers")
    actions = s.add_subparsers(dest="action", required=True, help="what to do")
    for name, text in (("list", "writers, image counts and enrolment dates"),
                       ("show", "one writer's enrolled images: path, how each was read "
                                "(line or page, resolution), date, SHA-256"),
                       ("info", "what built the gallery, its schema and size"),
                       ("check", "SQLite's integrity check, and every writer's sums "
                                 "against their images"),
                       ("history", "every change, dated: made, enrolled, renamed, removed, "
                                   "rebuilt, backed up"),
                       ("remove", "delete a writer and their features from the file, and "
                                  "their name from its history"),
                       ("rename", "give a writer another name"),
                       ("backup", "copy the gallery as it is now into a new file, safely while "
                                  "others enrol"),
                       ("upgrade", "convert a gallery from before the database (.npz + "
                                   ".json) into one SQLite file"),
                       ("rebuild", "enrol every writer again into a new gallery, for another "
                                   "model export or descriptor, from the image files they were "
                                   "enrolled from"),
                       ("alike", "writers whose enrolled handwriting, asked about as a "
                                 "document against the others, is named as another's: "
                                 "lookalike hands, or one hand under two names; and "
                                 "those named as a training writer of the model's cohort")):
        a = actions.add_parser(name, help=text)
        a.add_argument("gallery", type=Path, help="the old gallery (NAME, NAME.npz or NAME.json)"
                       if name == "upgrade" else "the gallery's SQLite file")
        if name in ("remove", "rename", "show"):
            a.add_argument("writer", type=writer_name, help="an enrolled writer's name")
        if name == "rename":
            a.add_argument("new", type=writer_name, help="the writer's new name")
        if name == "backup":
            a.add_argument("backup", type=Path, help="the backup's file (must not exist)")
        if name in ("list", "info", "show", "alike", "history"):
            a.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "history":
            a.add_argument("--writer", type=writer_name,
                           help="only this writer's changes, under any name they had before")
        if name == "remove":
            a.add_argument("--keep-name", action="store_true",
                           help="keep the writer's name in the gallery's history (a removal "
                                "that corrects an enrolment, not an erasure)")
        if name == "check":
            a.add_argument("--files", action="store_true",
                           help="also check that every enrolled file is at its path with "
                                "the content it was enrolled with (what a rebuild reads); "
                                "exit status 1 where any is not")
        if name == "alike":
            scoring_args(a)
            a.add_argument("--threads", type=positive_int, default=2,
                           help="CPU threads of the descriptors")
            a.add_argument("--report", type=report_file, metavar="FILE.html",
                           help="also write a self-contained HTML report: each such writer's "
                                "enrolled handwriting beside the other's, at one scale")
        if name == "rebuild":
            a.add_argument("new", type=Path, help="the new gallery (must not exist)")
            a.add_argument("--model", type=Path,
                           help="the export to enrol for (none: --descriptor hinge)")
            a.add_argument("--descriptor", choices=SCORES,
                           help="what to store, as `enroll --descriptor` (default: fused "
                                "with a model, hinge without)")
            a.add_argument("--look-in", type=Path, action="append", default=[],
                           metavar="DIR", help="a folder (searched with its subfolders) where "
                                               "enrolled images moved since may be: each "
                                               "missing or changed file is looked for there "
                                               "by its SHA-256 (repeatable)")
            model_args(a, json_flag=False, as_enrolled=True)
    s.set_defaults(func=_gallery)

    s = sub.add_parser("identify", help="rank enrolled writers for images, or say unknown")
    s.add_argument("gallery", type=Path, help="the gallery's SQLite file (`enroll` writes it)")
    s.add_argument("images", type=Path, nargs="+",
                   help="line images, page scans or photos of pages (PNG, JPEG, HEIC, TIFF or "
                        "PDF; a PDF or a TIFF of pages is one document): each a query, or one "
                        "with --document")
    scoring_args(s)
    s.add_argument("--document", action="store_true",
                   help="the images are lines of one document: one ranking for all of them")
    s.add_argument("--threshold", type=finite,
                   help="answer unknown below this score (default: the one calibrated for it)")
    s.add_argument("--top-k", type=positive_int, default=5,
                   help="candidate writers listed for each image")
    s.add_argument("--report", type=report_file, metavar="FILE.html",
                   help="also write a self-contained HTML report: each query's handwriting "
                        "(a page with its lines outlined) beside the top writers' enrolled "
                        "handwriting, with every score and its likelihood ratio in words")
    skip_arg(s)
    model_args(s)
    s.set_defaults(func=_identify)

    s = sub.add_parser("demo", help="the main job, offline by default")
    s.add_argument("--config", choices=CONFIGS, default="synthetic",
                   help="the dataset config (top50/top10 or iam/iam_ok need --manual-dir)")
    s.add_argument("--manual-dir", type=Path,
                   help="the data folder of a real config, as `iam-writers build` takes it")
    s.add_argument("--out", type=Path, default=Path("demo_out"),
                   help="the demo's folder: data, run, export, gallery and report")
    s.add_argument("--epochs", type=int, default=0,
                   help="default: 8 on synthetic data (the 10-minute budget), 20 on real data")
    s.add_argument("--writers", type=positive_int, default=10, help="synthetic writers")
    s.add_argument("--layout", choices=layouts, default="kaggle",
                   help="write the synthetic writers in the Kaggle layout or the official IAM "
                        "one (built with --config iam)")
    s.add_argument("--fresh", action="store_true", help="delete --out and start over")
    s.add_argument("--seed", type=int, default=0,
                   help="the seed of the generated writers and of training")
    s.set_defaults(func=_demo, needs_train=True)
    for command in [*sub.choices.values(), *actions.choices.values()]:
        command.add_argument("--verbose", action="store_true", default=False,
                             help="show the native libraries' log lines (TensorFlow, LiteRT, "
                                  "the converter), which are hidden by default; or set "
                                  f"{console.VERBOSE_ENV}=1")
        command.set_defaults(command_parser=command)  # errors found later show its usage
        _show_defaults(command)
    return p


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: reported as one line, no traceback, exit status 2."""
    from iam_writers_tfds import images, kaggle_layout

    errors = (kaggle_layout.LayoutError, images.ImageError, FileNotFoundError, FileExistsError,
              PermissionError, atomic.NoSpaceError, RunError)
    for module, name in (("models.zoo", "WeightsError"), ("models.runtime", "ModelError"),
                         ("models.export", "ExportError"), ("tuning.space", "SpaceError"),
                         ("tuning.search", "ProjectError"), ("models.config", "RunFileError"),
                         ("models.train", "DivergedError")):
        if module in sys.modules:
            errors += (getattr(sys.modules[module], name),)
    return errors


def _skip_hint(args: argparse.Namespace, err: BaseException) -> str:
    """Where one of several images failed a command that can skip it: how to answer the
    others. Not for a missing model or gallery, which are OSErrors too: an image's error
    starts with its path."""
    if getattr(args, "skip_unreadable", True) or len(args.images) < 2:
        return ""
    from models.runtime.model import UNREADABLE

    about_image = any(str(err).startswith(str(image)) for image in args.images)
    return (f" (--skip-unreadable answers the other {len(args.images) - 1} images)"
            if isinstance(err, UNREADABLE) and about_image else "")


def _after_interrupt(args: argparse.Namespace) -> str:
    """What an interrupted command kept, where it keeps anything, and how to go on. Every
    other file is written whole or not at all (a gallery's writer, an export, a report)."""
    if args.command == "train":
        out = Path(args.out)
        if (out / "model.keras").is_file():
            return f". Its model is saved: `iam-writers evaluate {out}` finishes it"
        if (out / "config.json").is_file():
            return f". `iam-writers train --out {out} --resume` goes on from its last epoch"
    if args.command == "tune":
        return ". The same command goes on from its last finished trial"
    if args.command == "enroll":
        return (". Each writer is enrolled whole or not at all (`iam-writers gallery list "
                f"{args.gallery}` tells which); the same command again skips the images "
                "already enrolled")
    return ""


def _past_h5py(status: int) -> int:
    """`status`, for a command that a full disk stopped; but where h5py is loaded (Keras's
    and KerasTuner's weights), the process ends now, with that status: a file it failed to
    write there crashed HDF5 at the interpreter's shutdown (segmentation fault)."""
    if "h5py" not in sys.modules:
        return status
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    error = args.command_parser.error  # the command's usage line, exit status 2
    if args.verbose:
        os.environ[console.VERBOSE_ENV] = "1"
    console.quiet()
    if args.command == "enroll" and not any(a.startswith("-") for a in extra):
        # argparse ends an optional positional list at the first flag: `enroll G --writer W
        # IMAGES` leaves the images here
        args.images += map(Path, extra)
    elif args.command in ("predict", "verify") and any(a.split("=")[0] == "--model"
                                                         for a in extra):
        # enroll and identify take --model (there it is optional); these need it first
        rest = "A B" if args.command == "verify" else "IMAGES"
        error(f"the model is the first argument, not --model: "
              f"iam-writers {args.command} MODEL {rest}")
    elif extra:
        error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "needs_train", False) and (module := missing_train_extra()):
        print(f"iam-writers {args.command}: error: needs {module}, which the base install "
              f"leaves out (it is the edge runtime only): {INSTALL_TRAIN}", file=sys.stderr)
        return 2
    if getattr(args, "paper", None) and getattr(args, "dpi", None):
        error("--paper names a photographed page's paper, whose resolution is not known; "
              "--dpi says it is known (a scan): pass one of them")
    if args.command == "verify" and (bool(args.b) == bool(args.gallery)
                                     or bool(args.gallery) != bool(args.writer)):
        error("verify takes MODEL A B, or MODEL A --gallery G --writer W (the known "
              "handwriting: an image, or an enrolled writer's)")
    if args.command == "enroll":
        if not args.layout and not args.writer and len(args.images) == 1 \
                and args.images[0].is_dir():
            error(f"{args.images[0]} is a folder: enrol its writers' folders (or a Kaggle or "
                  f"IAM layout) with --layout {args.images[0]}, or one writer's images with "
                  f"--writer ID {args.images[0] / '*.png'}")
        if bool(args.layout) == bool(args.writer):
            error("enroll takes GALLERY --writer ID IMAGES, or GALLERY --layout DIR")
        if bool(args.writer) != bool(args.images):
            error("enroll --writer ID takes the writer's images, --layout DIR none")
    try:
        if getattr(args, "needs_train", False):
            _preflight(args)
        if getattr(args, "gallery", None):  # before any image is read
            from models.runtime.gallery import refuse_model

            refuse_model(args.gallery)
        status = args.func(args) or 0
    except ConfigError as err:
        error(str(err))
    except user_errors() as err:
        print(f"iam-writers {args.command}: error: {err}{_skip_hint(args, err)}",
              file=sys.stderr)
        return _past_h5py(2) if isinstance(err, atomic.NoSpaceError) else 2
    except OSError as err:  # a full disk that a library met (TensorFlow's, h5py's writes)
        if err.errno not in atomic.NO_SPACE:
            raise
        where = f" in {_written(args)}" if getattr(args, "needs_train", False) else ""
        print(f"iam-writers {args.command}: error: no space left on the disk{where} "
              f"({os.strerror(err.errno)}). Free space there and run it "
              f"again{_after_interrupt(args)}.", file=sys.stderr)
        return _past_h5py(2)
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (130: 128 + SIGINT)
        print(f"iam-writers {args.command}: interrupted{_after_interrupt(args)}",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # the output was piped into a reader that stopped (`| head`)
        sys.stdout = open(os.devnull, "w")  # Python flushes stdout at exit: not into the pipe
        return 0
    return status
