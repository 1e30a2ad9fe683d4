"""--mode=score: flags from the checkpoint, the run's resize, one-to-one map
names, skipped files in the CSV, output errors, read-only workdirs, fixed map colours, and
non-finite checkpoints refused."""
import builtins
import csv
import dataclasses
import errno
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from sagan_jax.training.checkpoints import CheckpointError
from sagan_jax.config import Config, ConfigError
from sagan_jax.data.base import DataError
from _cli import run_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["--isize=16", "--ngf=16", "--ndf=16", "--nz=8", "--max_train_images=96",
         "--batch_size=16", "--eval_batch_size=64", "--epochs=1", "--noprogress", "--seed=3",
         "--val_fraction=0.25", "--resize=squash", "--noplots", "--notensorboard"]


def run(args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "sagan_jax.main"] + args, cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)


def cli(args):
    """``python -m sagan_jax.main ARGS`` in this process (errors raise instead of exiting)."""
    return run_in_process(args)


def score(work, inp, out, *flags):
    return cli(["--mode=score", f"--workdir={work}", f"--input={inp}", f"--output={out}",
                *flags])


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def save_png(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained with --resize=squash (not the default)."""
    work = str(tmp_path_factory.mktemp("score_run"))
    out = run(TRAIN + [f"--workdir={work}"])
    assert out.returncode == 0, out.stderr[-3000:]
    return work


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    for name in ("a.png", "b.png"):
        save_png(str(folder / name), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return folder


def rewritten(src, dst, meta_change=None, state_change=None):
    """A copy of workdir ``src`` at ``dst`` whose newest checkpoint has changed metadata or
    state (a new checkpoint step; checkpoints.save's finiteness check bypassed)."""
    from sagan_jax.training import checkpoints
    from sagan_jax.inference import score_config

    shutil.copytree(src, dst)
    values = {f.name: f.default for f in dataclasses.fields(Config)}
    values.update(mode="score", workdir=str(dst), input="unused")
    state, meta = checkpoints.restore_for_inference(score_config(values, ()))
    if meta_change:
        meta_change(meta)
    if state_change:
        state = state_change(state)
    mngr = checkpoints.manager(str(dst))
    mngr.save(mngr.latest_step() + 1, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    mngr.wait_until_finished()
    return str(dst)


# (1) flags from the checkpoint, (7) the run's resize ----------------------------------------
def test_score_needs_no_flags_and_uses_the_runs_resize(trained, tmp_path):
    from sagan_jax.data.images import fit

    rng = np.random.default_rng(1)
    wide = rng.integers(0, 256, (16, 40, 3), dtype=np.uint8)
    save_png(str(tmp_path / "in" / "wide.png"), wide)
    save_png(str(tmp_path / "in" / "wide_squashed.png"), fit(wide, 16, "squash"))
    out_csv = str(tmp_path / "s.csv")
    proc = run(["--mode=score", f"--workdir={trained}", f"--input={tmp_path / 'in'}",
                f"--output={out_csv}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, rows = read_csv(out_csv)
    by_name = {os.path.basename(r["path"]): r for r in rows}
    assert by_name["wide.png"]["raw_score"] == by_name["wide_squashed.png"]["raw_score"]
    # a model flag that contradicts the checkpoint: one line, exit 2
    proc = run(["--mode=score", f"--workdir={trained}", f"--input={tmp_path / 'in'}",
                f"--output={out_csv}", "--ngf=32", "--isize=16"])
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("sagan_jax: error: --mode=score reads the model and data "
                                  "flags from the checkpoint") and "--ngf=32 (the run's: 16)" \
        in proc.stderr


def test_flags_that_agree_or_do_not_matter_are_accepted(trained, images, tmp_path):
    a = score(trained, images, tmp_path / "a.csv")
    b = score(trained, images, tmp_path / "b.csv", "--isize=16", "--ngf=16", "--epochs=9",
              "--resize=squash", "--eval_batch_size=2")
    assert a["n"] == b["n"] == 2
    ra, rb = read_csv(tmp_path / "a.csv")[1], read_csv(tmp_path / "b.csv")[1]
    np.testing.assert_allclose([float(r["raw_score"]) for r in ra],
                               [float(r["raw_score"]) for r in rb], rtol=1e-5)
    with pytest.raises(ConfigError, match=r"--score_lambda=0.9 \(the run's: 0.2\)"):
        score(trained, images, tmp_path / "c.csv", "--score_lambda=0.9")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        score(tmp_path / "nothing", images, tmp_path / "d.csv")
    assert not os.path.exists(tmp_path / "nothing")  # score mode creates no workdir


# (2) one-to-one map names ---------------------------------------------------------------------
def test_map_names_never_collide(trained, tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "in"
    names = ["x.png", "x.jpg", "sub/y.png", "sub__y.png", "sub%2Fy.png"]
    for name in names:
        arr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        save_png(str(folder / name), arr)
    out_csv = tmp_path / "out" / "s.csv"
    result = score(trained, folder, out_csv)
    _, rows = read_csv(out_csv)
    maps = [r["map"] for r in rows]
    assert len(rows) == 5 and len(set(maps)) == 5 and all(os.path.isfile(m) for m in maps)
    assert sorted(os.listdir(result["maps"])) == sorted(
        ["x.png.png", "x.jpg.png", "sub%2Fy.png.png", "sub__y.png.png", "sub%252Fy.png.png"])
    from sagan_jax.inference import map_file_name

    long = "d/" * 150 + "z.png"
    assert len(map_file_name(long).encode()) <= 255
    assert map_file_name(long) != map_file_name(long.replace("z.png", "w.png"))


# (3) skipped files in the CSV ----------------------------------------------------------------
def test_skipped_files_are_rows_with_their_reason(trained, images, tmp_path):
    (images / "notes.txt").write_text("not an image")
    (images / "empty.png").write_bytes(b"")
    (images / "broken.jpg").write_bytes(b"not a jpeg at all")
    out_csv = tmp_path / "s.csv"
    result = score(trained, images, out_csv, "--on_bad_image=skip")
    header, rows = read_csv(out_csv)
    assert header == ["path", "raw_score", "normalised_score", "decision", "r", "lat", "map",
                      "reason"]
    assert [os.path.basename(r["path"]) for r in rows] == [
        "a.png", "b.png", "broken.jpg", "empty.png", "notes.txt"]
    by_name = {os.path.basename(r["path"]): r for r in rows}
    for name, why in (("notes.txt", "not an image file"), ("empty.png", "empty file"),
                      ("broken.jpg", "cannot decode image")):
        assert by_name[name]["decision"] == "skipped"
        assert by_name[name]["reason"].startswith(why), by_name[name]
        assert by_name[name]["raw_score"] == by_name[name]["map"] == ""
    assert {by_name[n]["decision"] for n in ("a.png", "b.png")} <= {"normal", "abnormal"}
    assert by_name["a.png"]["reason"] == "" and result["skipped"] == 3


# (4) output errors -----------------------------------------------------------------------------
def _read_only(monkeypatch, root):
    """Make every write under ``root`` fail with EROFS in this process (a read-only file
    system; chmod does not stop root, who runs CI)."""
    root = os.path.abspath(str(root))

    def under(path):
        try:
            p = os.path.abspath(os.fsdecode(path))
        except TypeError:
            return False
        return p == root or p.startswith(root + os.sep)

    def erofs(path):
        return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open
    real_mkdir = os.mkdir

    def open_(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and under(file) and \
                any(c in mode for c in "wax+"):
            raise erofs(file)
        return real_open(file, mode, *a, **k)

    def io_open(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and under(file) and \
                any(c in mode for c in "wax+"):
            raise erofs(file)
        return real_io_open(file, mode, *a, **k)

    def os_open(path, flags, *a, **k):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC):
            raise erofs(path)
        return real_os_open(path, flags, *a, **k)

    def mkdir(path, *a, **k):
        if under(path):
            if os.path.exists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
            raise erofs(path)
        return real_mkdir(path, *a, **k)

    def guard(real):
        def fn(path, *a, **k):
            if under(path):
                raise erofs(path)
            return real(path, *a, **k)
        return fn

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", io_open)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    for name in ("remove", "unlink", "rmdir", "rename", "replace", "chmod", "truncate"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))
    monkeypatch.setattr(shutil, "rmtree", guard(shutil.rmtree))


def test_output_that_is_a_folder_or_under_a_file_is_one_line(trained, images, tmp_path):
    folder = tmp_path / "existing"
    folder.mkdir()
    proc = run(["--mode=score", f"--workdir={trained}", f"--input={images}",
                f"--output={folder}"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"sagan_jax: error: --output={str(folder)!r} is a folder; pass the path of a CSV "
        f"file, e.g. {folder / 'scores.csv'}"]
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="cannot be written"):
        score(trained, images, a_file / "s.csv")


def test_read_only_output_folder_is_one_error(trained, images, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    with pytest.raises(DataError, match=r"--output='.*s.csv' cannot be written \(Read-only"):
        score(trained, images, ro / "s.csv")
    assert os.listdir(ro) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into chmod -w folders; the "
                    "read-only cases are covered by the in-process EROFS tests")
def test_chmod_read_only_output_and_workdir(trained, images, tmp_path):
    ro_out = tmp_path / "ro_out"
    ro_out.mkdir()
    ro_out.chmod(0o555)
    proc = run(["--mode=score", f"--workdir={trained}", f"--input={images}",
                f"--output={ro_out / 's.csv'}"])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    for dirpath, _, _ in os.walk(work):
        os.chmod(dirpath, 0o555)
    try:
        proc = run(["--mode=score", f"--workdir={work}", f"--input={images}",
                    f"--output={tmp_path / 's.csv'}"])
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        for dirpath, _, _ in os.walk(work):
            os.chmod(dirpath, 0o755)


# (5) a read-only workdir ------------------------------------------------------------------------
def _tree(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def test_read_only_workdir_scores_into_output(trained, images, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    before = _tree(work)
    _read_only(monkeypatch, work)
    result = score(work, images, tmp_path / "out" / "s.csv")
    assert result["n"] == 2 and os.path.isfile(tmp_path / "out" / "s.csv")
    assert _tree(work) == before  # nothing in the workdir created, removed or changed
    # without --output the CSV would go into the read-only workdir: one line naming --output
    with pytest.raises(DataError, match="the workdir is not writable"):
        cli(["--mode=score", f"--workdir={work}", f"--input={images}"])


# (6) fixed map colours; non-finite checkpoints refused --------------------------------------------
def test_map_colours_do_not_depend_on_the_other_images(trained, images, tmp_path):
    from sagan_jax.training.checkpoints import saved_meta

    scale = saved_meta(trained)["calibration"]["map_scale"]
    assert scale["residual"] > 0 and scale["quantile"] == 0.999
    alone = score(trained, images / "a.png", tmp_path / "alone.csv")
    save_png(str(images / "c.png"), np.full((16, 16, 3), 255, np.uint8))  # very unlike digits
    together = score(trained, images, tmp_path / "together.csv")
    a1 = open(os.path.join(alone["maps"], "a.png.png"), "rb").read()
    a2 = open(os.path.join(together["maps"], "a.png.png"), "rb").read()
    assert a1 == a2
    assert alone["map_scale"] == together["map_scale"] == scale["residual"]


def test_scale_not_stored_is_measured_on_the_runs_calibration_images(trained, images,
                                                                      tmp_path):
    from sagan_jax.training.checkpoints import saved_meta

    stored = saved_meta(trained)["calibration"]["map_scale"]["residual"]
    work = rewritten(trained, tmp_path / "old",
                     meta_change=lambda m: m["calibration"].pop("map_scale"))
    got = score(work, images, tmp_path / "s.csv")
    assert got["map_scale"] == pytest.approx(stored, rel=1e-5)
    grad = score(trained, images, tmp_path / "g.csv", "--anomaly_map=grad")
    assert grad["map_scale"] > 0 and grad["n"] == 2


def test_non_finite_threshold_or_weights_are_refused(trained, images, tmp_path):
    import jax

    def nan_threshold(meta):
        meta["calibration"]["threshold"] = float("nan")

    work = rewritten(trained, tmp_path / "nan_t", meta_change=nan_threshold)
    with pytest.raises(CheckpointError, match=r"non-finite calibration \(threshold=nan\)"):
        score(work, images, tmp_path / "s.csv")
    work = rewritten(trained, tmp_path / "nan_w", state_change=lambda s: s.replace(
        g_params=jax.tree.map(lambda a: a * np.nan, s.g_params)))
    proc = run(["--mode=score", f"--workdir={work}", f"--input={images}",
                f"--output={tmp_path / 's.csv'}"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"sagan_jax: error: the checkpoint in {work} holds non-finite weights; it cannot "
        "score (retrain, or restore an earlier checkpoint)"]
