"""`iam-writers tune` (also `python -m tuning`): a resumable, distributable KerasTuner search.

runs/tune/NAME/ holds KerasTuner's own project (oracle.json, trial_*/), trials.csv,
objective.png, best_hyperparameters.json and, with --retrain-best, best_run/ (a run
directory that `iam-writers evaluate` and `iam-writers export` accept).

Re-running the same command continues a search: finished trials are kept, a trial that
was interrupted is run again. Distributed: start the same command on every machine with
KERASTUNER_TUNER_ID (`chief` on one, `tuner0`, `tuner1`, ... elsewhere),
KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT (the chief's address). The chief only
hands out trials and writes the summary; the workers train.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

TUNERS = ("random", "bayesian", "hyperband")


@dataclasses.dataclass
class TuneConfig:
    model: str = "patch_cnn"
    config: str = "synthetic"
    tuner: str = "random"
    max_trials: int = 10
    epochs: int = 10
    project: Path = Path("runs/tune/default")
    data_dir: Path | None = None
    space: Path | None = None  # YAML/JSON overrides of the search space
    patience: int = 3  # EarlyStopping inside each trial
    seed: int = 0
    weights: str = "imagenet"  # backbone weights of the ResNet50-style models
    retrain_best: bool = False

    def __post_init__(self) -> None:
        from iam_writers_tfds.configs import check_seed
        from models.config import MODELS

        self.project = Path(self.project)
        self.data_dir = Path(self.data_dir) if self.data_dir else None
        for name, value, allowed in (("model", self.model, MODELS),
                                     ("tuner", self.tuner, TUNERS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
        if self.max_trials < 1 or self.epochs < 1 or self.patience < 0:
            raise ValueError("max_trials and epochs must be >= 1, patience >= 0")
        check_seed(self.seed)

    @property
    def objective(self) -> tuple[str, str]:
        """(metric, direction): val_loss for the embedding models, val_accuracy otherwise."""
        from models.config import GALLERY_MODELS

        return ("val_loss", "min") if self.model in GALLERY_MODELS else ("val_accuracy", "max")


def is_worker() -> bool:
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    return bool(os.environ.get("KERASTUNER_ORACLE_IP")) and "chief" not in tuner_id


class ProjectError(ValueError):
    """A search project whose saved state KerasTuner cannot read."""


def check_project(project: Path) -> None:
    """Refuse a project whose KerasTuner state (oracle.json, tuner*.json, trial_*/trial.json)
    a crash or an edit has damaged: KerasTuner ends in a traceback on reading it. A worker
    reads none of them (its oracle is the chief's), and may start while the chief writes."""
    if is_worker():
        return
    project = Path(project)
    for path in [project / "oracle.json", *project.glob("tuner*.json"),
                 *project.glob("trial_*/trial.json")]:
        try:
            json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (ValueError, UnicodeDecodeError):
            raise ProjectError(f"{path}: damaged (not the JSON KerasTuner writes). Restore it, "
                               "or pass a new --project to start the search again.") from None


def _save_json(path: str, obj) -> str:
    """KerasTuner's utils.save_json, but the file is replaced whole or not at all."""
    from iam_writers_tfds import atomic

    text = json.dumps(obj)
    atomic.write_text(Path(path), text)
    return text


def save_json_atomically() -> None:
    """KerasTuner truncates and rewrites oracle.json as each trial starts and ends, so a
    search killed in that instant left a damaged file that a re-run could only refuse
    (check_project). Its state files all go through utils.save_json: swap in _save_json.
    The project is always a local folder (TuneConfig.project)."""
    from keras_tuner.src import utils

    utils.save_json = _save_json


def make_tuner(cfg: TuneConfig, num_classes: int):
    import keras_tuner as kt

    from models.config import TrainConfig
    from tuning import space
    from tuning.hypermodels import HYPERMODELS

    base = TrainConfig(model=cfg.model, config=cfg.config, data_dir=cfg.data_dir,
                       epochs=cfg.epochs, seed=cfg.seed, out=cfg.project / "best_run",
                       weights=cfg.weights)
    hypermodel = HYPERMODELS[cfg.model](base, space.load(cfg.model, cfg.space), num_classes)
    save_json_atomically()
    metric, direction = cfg.objective
    common = {"hypermodel": hypermodel, "objective": kt.Objective(metric, direction),
              "directory": str(cfg.project.parent), "project_name": cfg.project.name,
              "seed": cfg.seed, "overwrite": False}
    if cfg.tuner == "random":
        return kt.RandomSearch(max_trials=cfg.max_trials, **common)
    if cfg.tuner == "bayesian":
        return kt.BayesianOptimization(max_trials=cfg.max_trials, **common)
    return kt.Hyperband(max_epochs=cfg.epochs, factor=3, **common)


def trials_table(tuner) -> list[dict]:
    """One row per trial in start order: id, status, score and hyperparameter values."""
    oracle = tuner.oracle
    rows = []
    for trial_id in oracle.start_order:
        trial = oracle.trials[trial_id]
        rows.append({"trial": trial_id, "status": trial.status, "score": trial.score,
                     **trial.hyperparameters.values})
    return rows


def best_trial(tuner):
    """The best finished trial with a finite score, or None; among equal scores the first
    started, so that a reloaded search names the same one. Not KerasTuner's ranking: its
    order among ties changes on reload (a re-run retrained another best), it pads the
    ranking with failed trials, and a trial that diverged (a NaN loss) falls anywhere in it."""
    oracle = tuner.oracle
    started = (oracle.trials[t] for t in oracle.start_order)
    done = [t for t in started if t.status == "COMPLETED" and t.score is not None
            and math.isfinite(t.score)]
    if not done:
        return None
    pick = max if oracle.objective.direction == "max" else min  # the first of equal scores
    return pick(done, key=lambda t: t.score)


def write_summary(cfg: TuneConfig, tuner) -> dict:
    """trials.csv, objective.png and best_hyperparameters.json; returns the best values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from iam_writers_tfds import atomic

    rows = trials_table(tuner)
    table = pd.DataFrame(rows)
    with atomic.replaced(cfg.project / "trials.csv") as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False))
    metric, direction = cfg.objective
    done = table.dropna(subset=["score"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(done["trial"].astype(int), done["score"], "o-", label=metric)
    if len(done):
        best_so_far = done["score"].cummax() if direction == "max" else done["score"].cummin()
        ax.plot(done["trial"].astype(int), best_so_far, "k--", lw=1, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.legend()
    fig.tight_layout()
    with atomic.replaced(cfg.project / "objective.png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    best = best_trial(tuner)
    if best is None:
        raise ProjectError(f"{cfg.project}: no trial finished (KerasTuner printed why each "
                           "failed, above); nothing to report. Mend that, and search again "
                           "with a new --project.")
    result = {"trial": best.trial_id, "score": best.score, "objective": metric,
              "hyperparameters": best.hyperparameters.values}
    atomic.write_text(cfg.project / "best_hyperparameters.json", json.dumps(result, indent=2))
    print(f"best trial {result['trial']}: {metric} {result['score']:.4f} with "
          f"{result['hyperparameters']}")
    return result


def search(cfg: TuneConfig) -> dict | None:
    """Run (or continue) the search; the chief or a single process returns the best."""
    import keras

    from pipelines import writer_names
    from tuning.hypermodels import RoomForTrialWeights

    check_project(cfg.project)
    num_classes = len(writer_names(cfg.config, cfg.data_dir))  # fails before any training
    fresh = not cfg.project.exists()
    try:  # KerasTuner makes the folder, then builds a model: ImageNet weights may fail
        tuner = make_tuner(cfg, num_classes)
    except BaseException:
        if fresh and cfg.project.is_dir() and not any(cfg.project.iterdir()):
            cfg.project.rmdir()
        raise
    # a worker's oracle is the chief's, over the network: only the chief reports
    done = [] if is_worker() else [t for t in tuner.oracle.trials.values()
                                   if t.status == "COMPLETED"]
    if done and cfg.tuner != "hyperband" and len(done) >= cfg.max_trials:
        print(f"{cfg.project}: the search is complete ({len(done)} trials of --max-trials "
              f"{cfg.max_trials}); raise --max-trials to continue it")
    metric, direction = cfg.objective
    stop = keras.callbacks.EarlyStopping(metric, patience=cfg.patience, mode=direction)
    tuner.search(epochs=cfg.epochs, callbacks=[stop, RoomForTrialWeights(cfg.project)],
                 verbose=2)
    if is_worker():
        return None
    best = write_summary(cfg, tuner)
    if cfg.retrain_best:
        retrain_best(cfg, tuner, best)
    return best


def retrain_best(cfg: TuneConfig, tuner, best: dict) -> Path:
    """Train the best configuration on train + validation into project/best_run. A re-run
    keeps a finished best_run of the same configuration, resumes an interrupted one, and
    moves aside (best_run.previous) one of an earlier best, or one that held out other
    validation forms for export's calibration than a training now does (none, by a version
    before they were held out: export refuses such a run), before training anew."""
    import shutil

    from models.config import TrainConfig
    from models.evaluate import calibration_forms as held_when_trained
    from models.train import calibration_forms, train

    hp = best_trial(tuner).hyperparameters
    run_cfg = dataclasses.replace(tuner.hypermodel.config(hp), fit_on_validation=True,
                                  out=cfg.project / "best_run")
    if (run_cfg.out / "config.json").is_file():
        saved = TrainConfig.load(run_cfg.out)
        same = dataclasses.replace(saved, resume=False, out=run_cfg.out) == run_cfg
        before = now = None
        if same:  # the forms a training holds out are read from the dataset: only here
            before, now = held_when_trained(run_cfg.out), calibration_forms(run_cfg)
        if same and before == now:
            if (run_cfg.out / "metrics.json").is_file():
                print(f"{run_cfg.out}: trial {best['trial']} is already retrained; kept")
                return run_cfg.out
            print(f"resuming the retraining of trial {best['trial']} in {run_cfg.out}")
            return train(dataclasses.replace(run_cfg, resume=True))
        previous = cfg.project / "best_run.previous"
        shutil.rmtree(previous, ignore_errors=True)
        run_cfg.out.rename(previous)
        print(f"{run_cfg.out} held an earlier best; moved to {previous}" if not same else
              f"{run_cfg.out} held out {len(before) or 'none'} of the validation forms for "
              f"export's calibration, not the {len(now)} a training holds out now (it may "
              f"have learnt the lines export calibrates on); moved to {previous}")
    print(f"retraining trial {best['trial']} on train + validation into {run_cfg.out}")
    return train(run_cfg)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from iam_writers_tfds.configs import NAMES as CONFIGS
    from models.config import CONFIG_HELP, DATA_DIR_HELP, MODELS

    p.add_argument("--model", choices=MODELS, default="patch_cnn",
                   help="the model family searched (its space: tuning/space.py)")
    p.add_argument("--config", choices=CONFIGS, default="synthetic", help=CONFIG_HELP)
    p.add_argument("--tuner", choices=TUNERS, default="random",
                   help="KerasTuner's search: random, bayesian optimisation or hyperband")
    p.add_argument("--max-trials", type=int, default=10,
                   help="random/bayesian; hyperband's count follows from --epochs")
    p.add_argument("--epochs", type=int, default=10, help="per trial (hyperband: the most)")
    p.add_argument("--project", type=Path, default=Path("runs/tune/default"),
                   help="the search's folder: trials, summary and best_run; the same "
                        "command again continues it")
    p.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    p.add_argument("--space", type=Path, help="YAML/JSON overrides of the search space")
    p.add_argument("--patience", type=int, default=3, help="EarlyStopping inside each trial")
    p.add_argument("--seed", type=int, default=0,
                   help="the seed of the tuner's choices and of every trial")
    p.add_argument("--weights", default="imagenet",
                   help="imagenet | none | PATH (ResNet50-style models)")
    p.add_argument("--retrain-best", action="store_true",
                   help="train the best trial's configuration on train + validation")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tuning", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    import importlib.util

    if importlib.util.find_spec("keras_tuner") is None:
        print("python -m tuning: error: needs keras_tuner, which the base install leaves out: "
              "pip install 'iam-writers[train]'", file=sys.stderr)
        return 2
    from tuning.space import SpaceError

    try:
        cfg = TuneConfig(**vars(args))
    except ValueError as err:
        p.error(str(err))
    try:
        search(cfg)
    except (SpaceError, ProjectError, FileNotFoundError) as err:
        print(f"python -m tuning: error: {err}", file=sys.stderr)
        return 2
    return 0
