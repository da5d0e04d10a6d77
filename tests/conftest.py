"""Shared fixtures: small generated layouts, and the development data when present."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# pytest-xdist runs a worker per core: TensorFlow in each worker and in the commands it starts
# gets that worker's share of the cores, so two trainings side by side do not contend for
# both (docs/results.md, the test suite's time)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    for _pool in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_pool, str(max(1, (os.cpu_count() or 1) // _WORKERS)))

REPO = Path(__file__).resolve().parents[1]
DUMMY = REPO / "iam_writers_tfds" / "dummy_data"
DEV_LINES = REPO.parent / "shared" / "data" / "iam_dev_lines"


def once(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], object]) -> Path:
    """`make(folder)` run once per test session, however many pytest-xdist workers ask: the
    first makes it under a file lock, the others wait for it and reuse the folder. The
    expensive fixtures (a build, a training run) would otherwise run once per worker."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    folder, done = root / name, root / f"{name}.done"
    with FileLock(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed making it
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """A writable copy of dummy_data: 12 writers x 3 forms x 1 line, Kaggle layout."""
    dest = tmp_path / "layout"
    shutil.copytree(DUMMY, dest)
    return dest


@pytest.fixture(scope="session")
def synth_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated layout of 10 writers x 4 forms x 5 lines (generated once per session)."""
    from iam_writers_tfds import synth

    config = synth.SynthConfig(writers=10, forms_per_writer=4, lines_per_form=5)
    return once(tmp_path_factory, "synth", lambda d: synth.generate(d / "layout", config)) \
        / "layout"


@pytest.fixture(scope="session")
def synth_dir(synth_layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synth_layout` built once as top50: several lines per writer in every split, so
    verification pairs exist."""
    from iam_writers import data

    return once(tmp_path_factory, "tfds_synth",
                lambda d: data.build(data.BuildConfig("top50", synth_layout, d)))


@pytest.fixture(scope="session")
def dummy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dummy_data built once as `top50`: 12 writers, one form per writer and split."""
    from iam_writers import data

    return once(tmp_path_factory, "tfds_dummy",
                lambda d: data.build(data.BuildConfig("top50", DUMMY, d)))


def small_vlad_descriptor(rng):
    """The runtime's descriptor at a size that unit tests draw rows for: the hinge, then a
    VLAD of 4 centres of 8 dimensions (32 residual sums) over 128-d local descriptors."""
    import numpy as np

    from models.runtime.descriptors import Descriptor, Hinge, Vlad

    return Descriptor(Hinge(), Vlad(np.zeros(128, np.float32),
                                    np.eye(128, 8, dtype=np.float32),
                                    rng.normal(size=(4, 8)).astype(np.float32)))


def calibration_writers(noise: float):
    """Export's calibration inputs at a size unit tests draw: six writers of two forms of
    three lines (embeddings about a hand each, `noise` apart; random hinge counts), a
    cohort of five writers, and a fusion of the two scores: (descriptor, (writers, forms,
    embeddings, counts), cohort, calibration)."""
    from models import runtime
    from models.runtime.descriptors import Descriptor, Hinge

    rng = np.random.default_rng(0)
    descriptor = Descriptor(Hinge())
    writers, forms = np.repeat(np.arange(6), 6), np.repeat(np.arange(12), 3)
    emb = rng.normal(size=(6, 16))[writers] + rng.normal(0, noise, (36, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    counts = rng.integers(0, 20, (36, descriptor.size)).astype(float)
    cohort_emb = rng.normal(size=(5, 16))
    cohort = runtime.Prepared(cohort_emb / np.linalg.norm(cohort_emb, axis=1, keepdims=True),
                              rng.integers(0, 20, (5, descriptor.size)).astype(float),
                              descriptor)
    calibrated = {"weights": {"embedding": 1.0, "hinge": 0.5},
                  "embedding": {"mean": 0.0, "std": 0.3}, "hinge": {"mean": 0.5, "std": 0.1}}
    return descriptor, (writers, forms, emb, counts), cohort, calibrated


def generated_page(seed: int, lines: int = 6, skew: float = 0.0):
    """(a page of one generated writer's lines, each line's box): `synth.render_page`."""
    import numpy as np

    from iam_writers_tfds import synth

    rng = np.random.default_rng(seed)
    return synth.render_page(synth.WriterStyle.sample(rng), rng, lines=lines, skew_deg=skew)


def exif_tiff(tags: dict[int, int | str]) -> bytes:
    """The TIFF body of an EXIF holding `tags` in its first directory, as a phone writes
    them: an int as a SHORT (Orientation), a str as ASCII (Make, Model), of more than 4
    bytes at an offset, shorter in the entry itself."""
    import struct

    strings, entries = b"", []
    data_at = 8 + 2 + 12 * len(tags) + 4  # after the header, the directory and its next offset
    for tag, v in tags.items():
        if isinstance(v, int):
            entries.append(struct.pack("<HHIHH", tag, 3, 1, v, 0))
            continue
        raw = v.encode() + b"\x00"
        if len(raw) <= 4:
            value = raw.ljust(4, b"\x00")
        else:
            value = struct.pack("<I", data_at + len(strings))
            strings += raw
        entries.append(struct.pack("<HHI", tag, 2, len(raw)) + value)
    return b"II*\x00" + struct.pack("<IH", 8, len(tags)) + b"".join(entries) \
        + struct.pack("<I", 0) + strings


def with_exif(jpeg: bytes, tags: dict[int, int | str]) -> bytes:
    """JPEG bytes with an EXIF segment holding `tags` (`exif_tiff`)."""
    import struct

    tiff = exif_tiff(tags)
    return (jpeg[:2] + b"\xff\xe1" + struct.pack(">H", 8 + len(tiff)) + b"Exif\x00\x00"
            + tiff + jpeg[2:])


def heic(image: np.ndarray, tags: dict[int, int | str] | None = None) -> bytes:
    """A gray image as an iPhone's HEIC (`benchmarks.pages.heic`) with an EXIF of `tags`
    (`exif_tiff`). An Orientation tag is written as HEIF's own rotation too, as a phone
    does: the image is stored as given and shown turned."""
    from benchmarks.pages import heic as encoded

    return encoded(image, exif_tiff(tags) if tags else None)


def with_camera(jpeg: bytes, make: str, model: str) -> bytes:
    """JPEG bytes whose EXIF names the camera (Make, Model; `with_exif`)."""
    return with_exif(jpeg, {0x010F: make, 0x0110: model})


def cli(*args, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `iam-writers ARGS...` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "iam_writers", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def kill_when(args: list, ready, tmp: Path, timeout: float = 600, module: str = "iam_writers",
              after: float = 0.0) -> None:
    """Start `python -m MODULE ARGS` (the `iam-writers` command by default), SIGKILL it
    `after` seconds once `ready()` holds. Its TMPDIR is `tmp`: a killed process cannot
    remove its temporary files (TensorFlow's autograph sources among them), and they should
    not pile up in the machine's /tmp."""
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", module, *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(tmp)})
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert ready(), "the command ended before reaching the point to kill it at"
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _demo(out: Path) -> None:
    """`iam-writers demo` on ten generated writers in the official IAM layout (the Kaggle
    one is `make demo`'s), killed once its export's hidden folder held a file, the card,
    then run again, as a user would: the run again reuses the data, the build and the
    training, and exports anew (the kill test of tests/test_crash.py). Its run and export
    are the ones the export and runtime tests share: the suite trains and exports the
    default model once for both (docs/results.md, the suite's time)."""
    args = ["demo", "--out", out, "--writers", "10", "--layout", "iam"]
    export = out / "export"
    kill_when(args, lambda: any(out.glob(f".{export.name}.*/model_card.json")),
              out.parent / "tmp", timeout=900)
    assert not export.exists(), "a killed export left its folder"
    killed = sorted(p.name for p in out.glob(f".{export.name}.*"))
    (out / "killed.json").write_text(json.dumps(killed))
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out / "demo.log").write_text(proc.stdout)


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's folder (`_demo`): data, TFDS build, run, export, held-out images, report."""
    return once(tmp_path_factory, "demo", lambda d: _demo(d / "demo_out")) / "demo_out"


@pytest.fixture(scope="session")
def trained_run(demo_out: Path) -> Path:
    """The default patch_cnn the demo trained for 8 epochs on its ten writers (image top-1
    about 1.0 on their test lines)."""
    return demo_out / "run"


@pytest.fixture(scope="session")
def heldout(demo_out: Path) -> list[tuple[Path, str]]:
    """The demo's test split as PNG files: (path, writer id) pairs never seen in training,
    8 lines of each of its 10 writers."""
    from iam_writers.demo import split_files

    return split_files("iam", demo_out / "tensorflow_datasets", demo_out / "heldout")


@pytest.fixture(scope="session")
def by_writer(heldout: list[tuple[Path, str]]) -> dict[str, list[Path]]:
    """The held-out lines grouped by writer, in the demo's order."""
    grouped: dict[str, list[Path]] = {}
    for path, writer in heldout:
        grouped.setdefault(writer, []).append(path)
    return grouped


@pytest.fixture(scope="session")
def exported(demo_out: Path) -> Path:
    """The demo's export: the SavedModel, all four TFLite variants, card and codebook."""
    return demo_out / "export"


@pytest.fixture
def dev_lines() -> Path:
    if not (DEV_LINES / "forms_for_parsing.txt").is_file():
        pytest.skip(f"development data not present at {DEV_LINES}")
    return DEV_LINES


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder that another user (`as_another_user`) can reach: pytest's own are their
    owner's only. Where the tests run as root, that user is `nobody`."""
    import pwd
    import tempfile

    if os.geteuid() == 0:
        try:
            pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("no user `nobody` to act as another user")
    folder = Path(tempfile.mkdtemp(prefix="iam-writers-shared-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def as_another_user(folder: Path, call: Callable[[], dict]) -> dict:
    """`call()`'s result (a dict; else what it raised, as {"error": words} for the
    project's errors), run in `folder` by a user who does not own the files there: `nobody`
    in a forked child where the tests run as root (whom no permission binds), else this
    user."""
    import pwd

    from iam_writers.cli import user_errors

    read, write = os.pipe()
    if (pid := os.fork()) == 0:  # pragma: no cover (the child)
        try:
            os.chdir(folder)
            if os.geteuid() == 0:
                other = pwd.getpwnam("nobody")
                os.setgid(other.pw_gid)
                os.setuid(other.pw_uid)
            try:
                result = call()
            except user_errors() as err:
                result = {"error": str(err)}
            except BaseException as err:  # noqa: BLE001 (the parent's assertion shows it)
                result = {"raised": repr(err)}
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        out = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(out)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow end-to-end tests first, so that pytest-xdist's workers (`-n`) share the
    long ones out early instead of one worker finishing a long test alone at the end; then
    the quick tests of the demo's run and export (`demo_out`), in the first worker's share
    behind the slow ones (the work-stealing scheduler gives each worker a contiguous part
    and steals from its end): at the end, the other worker reached them minutes before the
    demo was done, and waited on its lock (docs/results.md, the suite's time)."""
    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return 1 if "demo_out" in getattr(item, "fixturenames", ()) else 2

    items.sort(key=rank)
