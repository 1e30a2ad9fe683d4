"""What a hostile but realistic user found, second pass: each fault at its mechanism (held-out
calibration of fitted models, one check of a checkpoint's flags for eval and score, every
reachable input file a row, singular beside list flags, the baselines' per-defect outputs, a
fresh maps folder, one layout per workdir, undefined pixel AUROC, classes of an image folder,
no normal training images, a full disk while checkpointing, eval batch padding, Ctrl-C, and
cheap resume checks first). Fitted models (kNN) stand in for the GANs where the code path is
shared, so each test takes seconds."""
import csv
import errno
import json
import logging
import os
import signal

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from sagan_jax.training.checkpoints import CheckpointError
from sagan_jax.config import Config, ConfigError
from sagan_jax.data.base import DataError
from _cli import run_in_process

FAST = ["--isize=16", "--noprogress", "--notensorboard", "--noplots", "--compilation_cache="]
KNN = ["--model=knn", "--max_train_images=40"] + FAST


def cli(args):
    """``python -m sagan_jax.main ARGS`` in this process (errors raise instead of exiting)."""
    return run_in_process(args)


def save_png(path, arr):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(arr).save(str(path))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def meta_of(work):
    mngr = ocp.CheckpointManager(os.path.abspath(os.path.join(work, "checkpoints")))
    return mngr.restore(mngr.latest_step(),
                        args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


@pytest.fixture(scope="module")
def knn_run(tmp_path_factory):
    """A kNN run on the digits without a validation split (digit 0 abnormal)."""
    work = str(tmp_path_factory.mktemp("knn"))
    cli(KNN + [f"--workdir={work}"])
    return work


# (1) a fitted model's threshold comes from images it was not fitted to; (8) the log line ---
def test_knn_without_val_split_calibrates_on_held_out_normals(knn_run, tmp_path, caplog):
    calib = meta_of(knn_run)["calibration"]
    # each training image is its own nearest neighbour: in-sample the threshold was ~1e-15
    assert calib["threshold"] > 1e-3
    assert "5-fold cross-fitting" in calib["source"]
    assert calib["map_scale"]["residual"] > 1e-3 and calib["map_scale"]["grad"] > 0
    # score mode on normal images it never saw: not all abnormal
    from sagan_jax.data import load_data

    test = load_data(Config(isize=16, max_train_images=40)).test
    folder = tmp_path / "normals"
    for i in np.flatnonzero(test.labels == 0)[:20]:
        save_png(folder / f"{i}.png", test.images[i])
    out = cli(["--mode=score", f"--workdir={knn_run}", f"--input={folder}",
               f"--output={tmp_path / 's.csv'}"])
    assert out["abnormal"] < 10


def test_log_names_the_calibrated_threshold_beside_its_f1(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="sagan_jax"):
        cli(KNN + [f"--workdir={tmp_path}", "--val_fraction=0.25"])
    threshold = meta_of(str(tmp_path))["calibration"]["threshold"]
    line = next(r.getMessage() for r in caplog.records if "fitted in" in r.getMessage())
    assert "F1 at the threshold" not in line
    assert f"at the calibrated threshold {threshold:.6g} (oracle F1 " in line


def test_pca_without_val_split_is_cross_fitted_and_refuses_a_fold_it_cannot_fit(tmp_path):
    cli(["--model=pca", "--pca_components=4", "--max_train_images=20"] + FAST
        + [f"--workdir={tmp_path / 'a'}"])
    assert "cross-fitting" in meta_of(str(tmp_path / "a"))["calibration"]["source"]
    with pytest.raises(ConfigError) as e:
        cli(["--model=pca", "--pca_components=20", "--max_train_images=20"] + FAST
            + [f"--workdir={tmp_path / 'b'}"])
    assert str(e.value) == (
        "--model=pca calibrates its threshold on training images it was not fitted to, "
        "refitting without 1/5 of them (16 left), and that fit fails (--pca_components=20 "
        "exceeds what 16 training images of 768 values allow (at most 16); lower "
        "--pca_components); pass --val_fraction (e.g. 0.2) or add training images")


# (2) eval and score share one check of the run's flags; eval.json records them ------------
@pytest.mark.parametrize("flag,shown", [("--abnormal_class=3", "--abnormal_class='3' (the run's: '0')"),
                                        ("--score_lambda=0.5", "--score_lambda=0.5 (the run's: 0.2)")])
def test_eval_refuses_a_flag_the_checkpoint_was_not_trained_with(knn_run, flag, shown):
    for mode in ("eval", "score"):
        with pytest.raises(ConfigError) as e:
            cli([f"--mode={mode}", f"--workdir={knn_run}", "--input=x", flag])
        assert str(e.value) == (f"--mode={mode} reads the model and data flags from the "
                                f"checkpoint in {knn_run}; these differ from the run's: "
                                f"{shown}; drop them")


def test_detector_load_refuses_a_flag_in_python_terms(knn_run):
    from sagan_jax.api import Detector

    with pytest.raises(ConfigError) as e:
        Detector.load(knn_run, isize=64)
    assert str(e.value) == (f"Detector.load reads the model and data flags from the checkpoint "
                            f"in {knn_run}; these differ from the run's: isize=64 (the run's: "
                            "16); drop them")


def test_eval_takes_the_runs_flags_and_records_them(knn_run):
    result = cli(["--mode=eval", f"--workdir={knn_run}"])  # no --model, no --isize
    with open(os.path.join(knn_run, "eval.json")) as f:
        saved = json.load(f)
    assert saved["flags"]["model"] == "knn" and saved["flags"]["isize"] == 16
    assert saved["flags"]["abnormal_class"] == "0" and saved["flags"]["max_train_images"] == 40
    with open(os.path.join(knn_run, "metrics.json")) as f:
        assert abs(result["auc"] - json.load(f)["auc"]) < 1e-9


# (3) every reachable input file is scored or listed; (6) no stale maps ---------------------
def test_symlinked_folders_are_scored_and_loops_listed(knn_run, tmp_path):
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)  # noqa: E731
    inp, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    save_png(inp / "a.png", img())
    for n in ("b.png", "c.png"):
        save_png(elsewhere / n, img())
    os.symlink(elsewhere, inp / "linked")
    os.symlink(inp, inp / "loop")
    out = cli(["--mode=score", f"--workdir={knn_run}", f"--input={inp}",
               f"--output={tmp_path / 's.csv'}"])
    rows = read_csv(tmp_path / "s.csv")
    assert [r["path"] for r in rows] == [str(inp / "a.png"), str(inp / "linked" / "b.png"),
                                         str(inp / "linked" / "c.png"), str(inp / "loop")]
    assert [r["decision"] != "skipped" for r in rows] == [True, True, True, False]
    assert rows[3]["reason"] == (f"symbolic link to a folder it is in (-> {inp}); not "
                                 "followed (a loop)")
    assert out["n"] == 3 and out["skipped"] == 1


def test_reused_output_keeps_no_maps_of_the_earlier_input(knn_run, tmp_path):
    rng = np.random.default_rng(1)
    for name in ("one/a.png", "one/b.png", "two/c.png"):
        save_png(tmp_path / name, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    out = str(tmp_path / "s.csv")
    cli(["--mode=score", f"--workdir={knn_run}", f"--input={tmp_path / 'one'}", f"--output={out}"])
    assert sorted(os.listdir(tmp_path / "s_maps")) == ["a.png.png", "b.png.png"]
    assert sorted(os.listdir(tmp_path / "s_overlays")) == ["a.png.png", "b.png.png"]
    cli(["--mode=score", f"--workdir={knn_run}", f"--input={tmp_path / 'two'}", f"--output={out}"])
    assert sorted(os.listdir(tmp_path / "s_maps")) == ["c.png.png"]
    assert sorted(os.listdir(tmp_path / "s_overlays")) == ["c.png.png"]
    # another CSV in the same folder gets its own pictures; fewer pictures leave no old ones
    cli(["--mode=score", f"--workdir={knn_run}", f"--input={tmp_path / 'one'}",
         f"--output={tmp_path / 't.csv'}", "--max_pictures=1"])
    assert sorted(os.listdir(tmp_path / "t_overlays")) == ["a.png.png"]
    assert sorted(os.listdir(tmp_path / "s_overlays")) == ["c.png.png"]
    cli(["--mode=score", f"--workdir={knn_run}", f"--input={tmp_path / 'one'}",
         f"--output={tmp_path / 't.csv'}", "--max_pictures=0"])
    # beside the CSVs: their maps and overlay pictures, nothing temporary or stale
    assert sorted(os.listdir(tmp_path)) == ["one", "s.csv", "s_maps", "s_overlays", "t.csv",
                                            "t_maps", "two"]


# (4) a singular flag beside its list ---------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--seed=3", "--seeds=0,1"],
     "--seed=3 and --seeds='0,1' are both given (on the command line or in a --flagfile); "
     "--seeds replaces --seed: pass only one of them"),
    (["--abnormal_class=3", "--abnormal_classes=1,2"],
     "--abnormal_class='3' and --abnormal_classes='1,2' are both given (on the command line "
     "or in a --flagfile); --abnormal_classes replaces --abnormal_class: pass only one of them"),
])
def test_singular_flag_beside_its_list_is_refused(args, message):
    from sagan_jax import main

    main.FLAGS.unparse_flags()
    try:
        main.FLAGS(["sagan_jax", "--mode=summary"] + args)
        with pytest.raises(ConfigError) as e:
            main.config_from_flags()
        assert str(e.value) == message
        main.FLAGS.unparse_flags()
        main.FLAGS(["sagan_jax", "--mode=summary", args[1], "--seed=0" if "seed" in args[0]
                    else "--isize=32"])  # the list alone (the singular at its default): fine
        if "seed" in args[0]:
            with pytest.raises(ConfigError):  # an explicit default is still explicit
                main.config_from_flags()
        else:
            main.config_from_flags()
    finally:
        main.FLAGS.unparse_flags()


# (5) fitted baselines on an MVTec folder; (8) all-empty masks --------------------------------
def make_mvtec(root, empty_masks=False):
    rng = np.random.default_rng(2)
    for i in range(12):
        save_png(root / "train/good" / f"{i:03d}.png", rng.integers(0, 120, (16, 16, 3), np.uint8))
    for i in range(3):
        save_png(root / "test/good" / f"{i:03d}.png", rng.integers(0, 120, (16, 16, 3), np.uint8))
    for d in ("crack", "hole"):
        for i in range(2):
            m = np.zeros((16, 16), np.uint8)
            if not empty_masks:
                m[4:10, 4:10] = 255
            x = rng.integers(0, 120, (16, 16, 3), np.uint8)
            x[m > 0] = 255
            save_png(root / "test" / d / f"{i:03d}.png", x)
            save_png(root / "ground_truth" / d / f"{i:03d}_mask.png", m)
    return root


@pytest.fixture()
def no_tfds_cache(monkeypatch):
    from sagan_jax.data import anomaly_folder, tfds_import

    monkeypatch.setattr(tfds_import, "tfds_available", lambda: False)
    monkeypatch.setattr(anomaly_folder, "tfds_available", lambda: False, raising=False)


def test_fitted_baseline_on_mvtec_writes_per_defect_aucs_and_test_scores(tmp_path,
                                                                         no_tfds_cache):
    root = make_mvtec(tmp_path / "mvtec")
    work = tmp_path / "w"
    cli(["--model=knn", "--dataset=anomaly_folder", f"--data_root={root}", f"--workdir={work}"]
        + FAST)
    with open(work / "metrics.json") as f:
        metrics = json.load(f)
    assert sorted(metrics["auc_per_class"]) == ["crack", "hole"]
    assert metrics["history"][0]["test_auc_per_class"] == metrics["auc_per_class"]
    rows = read_csv(work / "test_scores.csv")
    assert len(rows) == 7 and [r["label"] for r in rows].count("1") == 4
    assert metrics["scores_csv"] == str(work / "test_scores.csv")


def test_all_empty_masks_are_warned_about(tmp_path, no_tfds_cache, caplog):
    root = make_mvtec(tmp_path / "mvtec", empty_masks=True)
    with caplog.at_level(logging.WARNING, logger="sagan_jax"):
        cli(["--model=knn", "--dataset=anomaly_folder", f"--data_root={root}",
             f"--workdir={tmp_path / 'w'}", "--val_fraction=0.25"] + FAST)
    with open(tmp_path / "w" / "metrics.json") as f:
        assert json.load(f)["pixel_auc"] is None
    assert ("pixel AUROC is undefined and recorded as null: the 7 defect masks hold no defect "
            "pixel (every mask is empty); check the masks (--mask_root)") in caplog.text


# (7) one layout per workdir ------------------------------------------------------------------
def test_single_run_beside_a_run_list_is_refused(tmp_path):
    for name in ("0_seed0", "0_seed1"):
        os.makedirs(tmp_path / "runs" / name / "checkpoints")
    with pytest.raises(ConfigError) as e:
        cli(KNN + [f"--workdir={tmp_path}", "--seeds=0"])
    assert str(e.value) == (
        f"--workdir={str(tmp_path)!r} holds a run list (0_seed0, 0_seed1 under runs/); one run "
        "would be trained beside it: pass its --seeds/--abnormal_classes again, train into "
        f"--workdir={tmp_path / 'runs' / '0_seed0'} (one of its runs), or use a new --workdir")
    assert not os.path.exists(tmp_path / "checkpoints")
    single = tmp_path / "single"
    os.makedirs(single / "checkpoints")
    with pytest.raises(ConfigError, match="holds a single run; a run list of 2 runs"):
        cli(KNN + [f"--workdir={single}", "--seeds=0,1"])


# (9) --abnormal_classes=all on an image folder; (10) no normal training images ---------------
def make_folder(root, classes):
    for split in ("train", "test"):
        for c in classes:
            for i in range(3):
                save_png(root / split / c / f"{i}.png", np.full((16, 16, 3), 9 * i, np.uint8))
    return root


def test_abnormal_classes_all_on_an_image_folder(tmp_path):
    from sagan_jax.training.runs import plan_runs

    root = make_folder(tmp_path / "f", ["cat", "dog", "emu"])
    cfg = Config(dataset="image_folder", data_root=str(root), abnormal_classes="all",
                 workdir=str(tmp_path / "w"))
    assert [r.cfg.abnormal_class for r in plan_runs(cfg)] == ["cat", "dog", "emu"]


@pytest.mark.parametrize("model", ["pca", "knn", "sagan"])
def test_no_normal_training_images_is_one_line_for_every_model(tmp_path, model):
    root = make_folder(tmp_path / "f", ["only"])
    with pytest.raises(DataError) as e:
        cli([f"--model={model}", "--dataset=image_folder", f"--data_root={root}",
             "--abnormal_class=only", f"--workdir={tmp_path / 'w'}"] + FAST)
    assert str(e.value) == (
        "image_folder(abnormal=only, ganomaly): no normal training images to learn from; every "
        "training image is of the abnormal class 'only'; choose another --abnormal_class or "
        "add folders of normal classes")


# (11) a full disk while a checkpoint is written ------------------------------------------------
def test_full_disk_while_checkpointing_is_one_line_and_a_rerun_resumes(tmp_path, monkeypatch,
                                                                       caplog):
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as jh

    async def full(self, x, directory):
        raise OSError(errno.ENOSPC, "No space left on device", str(directory))

    monkeypatch.setattr(jh.JsonCheckpointHandler, "_save_fn", full)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(CheckpointError) as e:
            cli(KNN + [f"--workdir={tmp_path}"])
    assert str(e.value) == (
        f"cannot write the checkpoint of epoch 1 to {tmp_path / 'checkpoints'} (No space left "
        "on device); the checkpoints saved before it are intact: free some space, then rerun "
        "the same command to resume")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no thread tracebacks
    monkeypatch.undo()
    cli(KNN + [f"--workdir={tmp_path}"])
    assert os.listdir(tmp_path / "checkpoints") == ["0"]


# (12) a huge --eval_batch_size ------------------------------------------------------------------
def test_huge_eval_batch_size_pads_only_what_the_images_need():
    import jax

    from sagan_jax import anomaly_maps
    from sagan_jax.data.pipeline import padded_batch_size, to_float_np
    from sagan_jax.methods import knn
    from sagan_jax.methods.spec import variables_of
    from sagan_jax.methods.state import fitted_state
    from sagan_jax.training.evaluate import score_images

    assert [padded_batch_size(n, 64) for n in (1, 2, 3, 5, 64, 65, 10**6)] == [1, 2, 4, 8, 64,
                                                                                64, 64]
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (9, 16, 16, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    small = Config(model="knn", isize=16, eval_batch_size=3)
    huge = small.replace(eval_batch_size=2 ** 40)  # 2^40 padded images: terabytes
    state = jax.device_put(fitted_state(knn.fit(small, train)))
    r_small, _, rec_small = score_images(small, state, test, keep_recon=True)
    r_huge, _, rec_huge = score_images(huge, state, test, keep_recon=True)
    np.testing.assert_allclose(r_huge, r_small, rtol=1e-6)
    np.testing.assert_allclose(rec_huge, rec_small, atol=1e-6)
    x = to_float_np(test)
    np.testing.assert_allclose(anomaly_maps.maps(huge, variables_of(state), x, "grad"),
                               anomaly_maps.maps(small, variables_of(state), x, "grad"),
                               atol=1e-6)


# (13) Ctrl-C ------------------------------------------------------------------------------------
@pytest.fixture()
def interrupts():
    from sagan_jax.training import errors

    handler = signal.getsignal(signal.SIGINT)
    errors.reset_interrupt()
    yield errors
    errors.reset_interrupt()
    signal.signal(signal.SIGINT, handler)


def test_ctrl_c_while_saving_completes_the_checkpoint_then_stops(tmp_path, monkeypatch,
                                                                  interrupts):
    real_wait = ocp.CheckpointManager.wait_until_finished

    def wait_then_ctrl_c(self):
        interrupts.request_interrupt()  # the SIGINT handler, mid-save: recorded, not raised
        return real_wait(self)

    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", wait_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        cli(KNN + [f"--workdir={tmp_path}"])
    monkeypatch.undo()
    assert meta_of(str(tmp_path))["epoch"] == 0  # the checkpoint was completed


def test_swallowed_ctrl_c_stops_training_before_the_next_chunk(tmp_path, interrupts,
                                                              monkeypatch):
    from sagan_jax.training import loop

    calls = []
    monkeypatch.setattr(loop.prog, "pack_chunk_inputs",
                        lambda *a: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    interrupts._interrupt["requested"] = True  # as if
    # the KeyboardInterrupt had been raised inside a garbage-collection callback and lost
    with pytest.raises(KeyboardInterrupt):
        cli(["--model=ganomaly", "--ngf=16", "--ndf=16", "--nz=8", "--max_train_images=32",
             "--batch_size=16", "--epochs=1", f"--workdir={tmp_path}"] + FAST)
    assert not calls


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, interrupts, capsys):
    from sagan_jax import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # main.main's basicConfig replaces them
    absl_level = logging.getLogger("absl").level
    main.FLAGS.unparse_flags()
    try:
        main.FLAGS(["sagan_jax", "--mode=summary", "--model=knn", f"--workdir={tmp_path}"])
        interrupts._interrupt["requested"] = True
        with pytest.raises(SystemExit) as e:
            main.main(["sagan_jax"])
        assert e.value.code == 130
        assert signal.getsignal(signal.SIGINT) is interrupts.request_interrupt
        main.FLAGS.unparse_flags()
        main.FLAGS(["sagan_jax", "--mode=train", f"--workdir={tmp_path}"] + KNN)
        with pytest.raises(SystemExit) as e:  # the fit ends, then the recorded Ctrl-C stops
            main.main(["sagan_jax"])
        assert e.value.code == 130
    finally:
        main.FLAGS.unparse_flags()
        for h in root.handlers[:]:  # the handlers on this test's captured stderr
            if h not in handlers:
                root.removeHandler(h)
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
        logging.getLogger("absl").setLevel(absl_level)
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("sagan_jax:")]
    assert err == ["sagan_jax: interrupted (Ctrl-C); nothing was half-written",
                   f"sagan_jax: interrupted (Ctrl-C); the checkpoints in {tmp_path} are "
                   "intact; rerun the same command to resume"]


# resume checks that need no computation come first ---------------------------------------------
def test_resume_of_another_experiment_is_refused_before_loading_anything(knn_run):
    from sagan_jax.training import loop

    def load(cfg):
        raise AssertionError("data loaded before the checkpoint's flags were checked")

    with pytest.raises(CheckpointError, match=r"isize=16 \(now 32\)"):
        loop.train(Config(model="knn", max_train_images=40, isize=32, workdir=knn_run,
                          progress=False, tensorboard=False, plots=False), load=load)


def test_full_disk_while_checkpointing_prints_no_thread_tracebacks(tmp_path):
    """orbax's writer threads outlive a failed save: the process waits for them, quietly."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = (
        "import errno, sys\n"
        "from orbax.checkpoint._src.handlers import json_checkpoint_handler as jh\n"
        "async def full(self, x, directory):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', str(directory))\n"
        "jh.JsonCheckpointHandler._save_fn = full\n"
        "from absl import app\n"
        "from sagan_jax import main\n"
        "app.run(main.main, flags_parser=main.flags_parser)\n")
    out = subprocess.run([sys.executable, "-c", script] + KNN + [f"--workdir={tmp_path}"],
                         cwd=root, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=root))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "Exception" not in out.stderr, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith(
        "sagan_jax: error: cannot write the checkpoint of epoch 1 to ")


def test_scoring_and_recalibration_split_or_replicate_any_batch_over_three_devices(tmp_path):
    """With one XLA device per core, a batch that does not divide over the devices (one
    image; 16 images on 3 devices) is scored and recalibrated like any other: same numbers as
    one device, within float rounding (other batch positions and shapes)."""
    code = r'''
import os
os.environ["JAX_NUM_CPU_DEVICES"] = "{n}"
import jax, numpy as np
from sagan_jax.config import Config
from sagan_jax.training.bn_recalibration import recalibrate_batchnorm
from sagan_jax.training.evaluate import score_images
from sagan_jax.training.state import init_state, make_optimizers
assert jax.local_device_count() == {n}
cfg = Config(ngf=16, ndf=16, nz=8, isize=16, batch_size=16, eval_batch_size=8,
             bn_recalibration_batches=2)
g, d = make_optimizers(cfg, 1)
state = init_state(cfg, jax.random.key(0), g, d)
images = np.random.default_rng(0).integers(0, 256, (17, 16, 16, 3), dtype=np.uint8)
state = recalibrate_batchnorm(cfg, state, images, 0)
r, lat = score_images(cfg, state, images)
r1, _ = score_images(cfg, state, images[:1])
np.save(os.path.join({out!r}, "d{n}.npy"), np.stack([r, lat, np.resize(r1, r.shape)]))
'''
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env.pop("XLA_FLAGS", None)
    p = subprocess.run([sys.executable, "-c", code.format(n=3, out=str(tmp_path))], env=env,
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    exec(code.format(n=1, out=str(tmp_path)), {})  # this pytest process: one device
    three, one = np.load(tmp_path / "d3.npy"), np.load(tmp_path / "d1.npy")
    # BatchNorm statistics summed over the devices' shards in another order, then scores at
    # other batch positions: a few float32 ulps, amplified by the networks' depth
    np.testing.assert_allclose(three, one, rtol=1e-4)
    np.testing.assert_allclose(three[2, :1], three[0, :1], rtol=1e-4)  # one image alone


# host devices: a count that cannot split the batch, a junk count, training on fewer ----------
@pytest.mark.parametrize("env,args,message", [
    ({}, ["--host_devices=2", "--batch_size=7"],
     "--batch_size=7 does not split over the 2 host devices of --host_devices=2; use a "
     "multiple of 2, or --host_devices=auto (the most devices that divide the batch)"),
    ({"SAGAN_JAX_HOST_DEVICES": "2"}, ["--batch_size=7"],
     "--batch_size=7 does not split over the 2 host devices of $SAGAN_JAX_HOST_DEVICES=2; use "
     "a multiple of 2, or --host_devices=auto (the most devices that divide the batch)"),
    ({"SAGAN_JAX_HOST_DEVICES": "junk"}, [],
     "$SAGAN_JAX_HOST_DEVICES=junk must be 'auto' or a positive number of host devices; fix "
     "or unset it"),
])
def test_a_host_device_count_that_cannot_work_is_refused_before_anything(tmp_path, monkeypatch,
                                                                         env, args, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    work = tmp_path / "w"
    with pytest.raises(ConfigError) as e:
        cli(["--dataset=digits", f"--workdir={work}", "--ngf=16", "--ndf=16"] + FAST + args)
    assert str(e.value) == message
    assert not work.exists()  # refused before the workdir was made


def test_training_on_fewer_devices_than_the_process_has(tmp_path):
    """--num_devices=1 on two host devices: training, BatchNorm recalibration and scoring use
    the same device, so the state never spans two device sets (it did, and the first
    end of epoch failed)."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    env.pop("JAX_NUM_CPU_DEVICES", None)
    p = subprocess.run([sys.executable, "-m", "sagan_jax.main", "--dataset=digits", "--ngf=16",
                        "--ndf=8", "--nz=8", "--epochs=2", "--max_train_images=64",
                        "--batch_size=16", "--eval_batch_size=16", "--host_devices=2",
                        "--num_devices=1", f"--workdir={tmp_path}"] + FAST,
                       env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "splits evenly" not in p.stderr
    assert json.load(open(tmp_path / "metrics.json"))["last_epoch"] == 2
