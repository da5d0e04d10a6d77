"""The demo's report: one Markdown and one self-contained HTML page (plots embedded)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from iam_writers_tfds import atomic

PLOTS = (("curves", "Training curves"), ("confusion", "Confusion matrix (test images)"),
         ("samples", "Test images with true and predicted writers"),
         ("roc", "ROC curves"))


def real_data_commands(out: Path) -> list[str]:
    """What to run on the real data: the default recipe, spelled out from its config."""
    from models.config import TrainConfig

    recipe = TrainConfig()
    return [
        "# IAM is for non-commercial research. Download through kagglehub (needs a Kaggle",
        "# login) or pass the Kaggle zip / its extracted folder with --manual-dir:",
        "iam-writers build --config top50",
        "iam-writers build --config top50 --manual-dir ~/Downloads/iam-handwriting-top50.zip",
        "# or the official IAM distribution (lines.tgz + ascii.tgz), all 657 writers:",
        "iam-writers build --config iam --manual-dir ~/data/iam",
        f"iam-writers train --model {recipe.model} --config top50 --out runs/top50 "
        f"--epochs {recipe.epochs} --lr-schedule {recipe.lr_schedule}",
        "iam-writers export runs/top50 --out exports/top50",
        "iam-writers predict exports/top50/model_int8.tflite LINE.png --top-k 5",
        "# or all of the above in one go, on 10 writers:",
        f"iam-writers demo --config top10 --manual-dir DIR --out {out}_top10",
    ]


def _tables(cfg, metrics: dict, card: dict, predictions: list[dict], accuracy: float,
            timings: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table in the report."""
    from models.export import FEW_LINE_RULES
    from models.runtime.evidence import rate_brief
    from models.runtime.identify import measured_rates

    m = metrics
    return [
        ("Metrics (test split)", ["image top-1", "image top-5", "form top-1", "images",
                                  "forms", "writers"],
         [[f"{m['top1']:.3f}", f"{m['top5']:.3f}", f"{m['form_top1']:.3f}",
           str(m["n_images"]), str(m["n_forms"]), str(m["n_writers"])]]),
        ("Export parity (test split, LiteRT, 2 threads)",
         ["variant", "size KiB", "top-1 agreement", "accuracy", "max prob diff", "ms / image"],
         [[r["variant"], f"{r['size_bytes'] / 1024:.0f}" if r["size_bytes"] else "-",
           f"{r['top1_agreement']:.3f}", f"{r['accuracy']:.3f}",
           f"{r['max_abs_prob_diff']:.4f}", f"{r['median_ms_per_image']:.1f}"]
          for r in card["parity"]]),
        (f"Unknown writers at calibration: the fused rule at FAR "
         f"{card['calibration']['far'] * 100:g}%, on {card['calibration']['source']} "
         "(95% intervals)",
         ["queries", "n", "gallery", "strangers accepted", "genuine answered unknown"],
         [[f"{level}s" + (f", writers of {k} line(s)" if k else ""), str(r["n_queries"]),
           str(r["gallery"]), rate_brief(r, "far"), rate_brief(r, "frr")]
          for k in (None, *FEW_LINE_RULES) for level in ("line", "document")
          if (r := measured_rates(card["fusion"], level, "fused", lines=k))
          and r.get("enrolled_lines") == k]),
        ("verify at calibration: the fused rule, each calibration writer enrolled alone "
         "(95% intervals)",
         ["queries", "different-writer pairs", "said one writer", "same-writer pairs",
          "said two writers"],
         [[f"{level}s", str(r["different_pairs"]), rate_brief(r, "far"), str(r["same_pairs"]),
           rate_brief(r, "frr")]
          for level in ("line", "document")
          if (r := measured_rates(card["fusion"], level, "fused", pairs=True))]),
        (f"Held-out predictions with model_int8.tflite: {accuracy:.3f} right "
         f"({len(predictions)} images; first 12 shown)",
         ["image", "true writer", "predicted (score)", "runner-up"],
         [[p["image"], p["writer"], f"{p['top'][0]['writer']} ({p['top'][0]['score']:.3f})",
           f"{p['top'][1]['writer']} ({p['top'][1]['score']:.3f})" if len(p["top"]) > 1
           else "-"] for p in predictions[:12]]),
        ("Time per step", ["step", "seconds"],
         [[k, f"{v:.0f}"] for k, v in timings.items()]
         + [["total", f"{sum(timings.values()):.0f}"]]),
    ]


def _markdown(title, tables, plots: list[tuple[str, Path]], commands: list[str]) -> str:
    out = [f"# {title}", ""]
    for name, header, rows in tables:
        out += [f"## {name}", "", "| " + " | ".join(header) + " |",
                "|" + " --- |" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    for caption, path in plots:
        out += [f"## {caption}", "", f"![{caption}]({path.as_posix()})", ""]
    out += ["## The same on the real Kaggle data", "", "```sh", *commands, "```", ""]
    return "\n".join(out)


def _html(title, tables, plots: list[tuple[str, Path]], commands: list[str],
          base: Path) -> str:
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    for name, header, rows in tables:
        body.append(f"<h2>{e(name)}</h2><table><tr>"
                    + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
                    + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
                              for r in rows) + "</table>")
    for caption, path in plots:
        data = base64.b64encode((base / path).read_bytes()).decode()
        body.append(f"<h2>{e(caption)}</h2><img alt=\"{e(caption)}\" "
                    f"src=\"data:image/png;base64,{data}\">")
    body.append("<h2>The same on the real Kaggle data</h2><pre>"
                + e("\n".join(commands)) + "</pre>")
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2em .6em}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write(cfg, metrics: dict, card: dict, predictions: list[dict], accuracy: float,
          timings: dict) -> Path:
    """Write report.md and report.html into `cfg.out`; returns the HTML path."""
    title = (f"iam-writers demo: {card['model']} on {cfg.dataset} "
             f"({metrics['n_writers']} writers)")
    tables = _tables(cfg, metrics, card, predictions, accuracy, timings)
    plots = [(caption, Path("run") / "plots" / f"{name}.png") for name, caption in PLOTS
             if (cfg.out / "run" / "plots" / f"{name}.png").is_file()]
    commands = real_data_commands(cfg.out)
    atomic.write_text(cfg.out / "report.md", _markdown(title, tables, plots, commands))
    atomic.write_text(cfg.out / "report.html", _html(title, tables, plots, commands, cfg.out))
    return cfg.out / "report.html"
