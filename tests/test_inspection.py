"""What people who inspect parts expect: good images only (false-positive rate instead of an
AUC), overlay pictures bounded by --max_pictures, the portable export (and its optional
TensorFlow SavedModel) loaded in a fresh process without sagan_jax, and the Python API
(docs/api.md's example, run as written)."""
import csv
import json
import logging
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from sagan_jax.training.checkpoints import CheckpointError
from sagan_jax.config import Config, ConfigError
from sagan_jax.data.base import DataError
from _cli import run_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 20, 24   # not square, not isize: the export's loader must resize as training did


def save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def code_block(doc):
    """The ```python block of a doc."""
    with open(os.path.join(ROOT, "docs", doc)) as f:
        text = f.read()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def cli(*args):
    return run_in_process(args)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def doc_run(tmp_path_factory):
    """docs/api.md's example, run as written on a good-images-only MVTec-layout folder (24
    training, 6 test normals), its DATA and WORK lines pointed at temporary folders."""
    tmp = tmp_path_factory.mktemp("inspection")
    rng = np.random.default_rng(5)
    data = tmp / "parts"
    for split, n in (("train/good", 24), ("test/good", 6)):
        for i in range(n):
            save(str(data / split / f"{i:02d}.png"), rng.integers(0, 256, (H, W, 3), np.uint8))
    code = code_block("api.md")
    code = re.sub(r'^DATA = .*$', f"DATA = {str(data)!r}", code, flags=re.M)
    code = re.sub(r'^WORK = .*$', f"WORK = {str(tmp / 'work')!r}", code, flags=re.M)
    home = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp)  # the tfds cache of the folder: ~/.cache/sagan_jax/tfds
    try:
        namespace = {}
        exec(compile(code, "docs/api.md", "exec"), namespace)
    finally:
        if home is None:
            os.environ.pop("HOME")
        else:
            os.environ["HOME"] = home
    return {"data": data, "work": tmp / "work", "ns": namespace, "tmp": tmp}


def test_api_example_trains_on_good_images_only(doc_run):
    ns, work = doc_run["ns"], doc_run["work"]
    metrics = ns["metrics"]
    assert "auc" not in metrics and "pixel_auc" not in metrics
    assert 0.0 <= metrics["fpr_at_threshold"] <= 1.0
    assert "no abnormal images" in metrics["metrics_absent"]
    saved = json.loads((work / "metrics.json").read_text())
    assert saved["fpr_at_threshold"] == metrics["fpr_at_threshold"]
    detector, result = ns["detector"], ns["result"]
    assert detector.calibration["source"] == "validation normals"  # held-out normals
    assert len(result.scores) == 6 and np.all(np.isfinite(result.scores))
    np.testing.assert_array_equal(result.abnormal, result.scores > detector.threshold)
    assert result.maps.shape == (6, 16, 16) and result.skipped == ()
    # the fpr reported is that of the same decisions on the same test images, at the
    # threshold metrics.json names beside it
    assert metrics["fpr_at_threshold"] == pytest.approx(float(np.mean(result.abnormal)))
    assert saved["threshold"] == pytest.approx(detector.threshold, rel=1e-6)
    assert saved["threshold_source"] == "validation normals" and saved["n_normal"] == 6
    assert os.path.isfile(ns["exported"]["model"])


def test_api_scores_arrays_and_refuses_wrong_shapes(doc_run):
    from sagan_jax.data.base import DataError

    det, result = doc_run["ns"]["detector"], doc_run["ns"]["result"]
    again = det.score(result.images[:2])
    np.testing.assert_allclose(again.scores, result.scores[:2], rtol=1e-6)
    with pytest.raises(DataError, match=r"expected uint8 \(N, 16, 16, 3\)"):
        det.score(np.zeros((1, 8, 8, 3), np.uint8))
    listed = det.score(list(result.images[:2]))  # a list of arrays is one array
    np.testing.assert_array_equal(listed.scores, again.scores)
    with pytest.raises(DataError) as e:
        det.score([result.images[0], np.zeros((32, 32, 3), np.uint8)])
    assert str(e.value) == ("image 1 of the list has shape (32, 32, 3) and dtype uint8; "
                            "expected uint8 (16, 16, 3) arrays, or a list of image files "
                            "(which are resized)")
    with pytest.raises(DataError, match=r"^no images: an empty array; pass uint8 \(N, 16, 16"):
        det.score(np.zeros((0, 16, 16, 3), np.uint8))
    with pytest.raises(ConfigError, match="differ from the run's: isize=32"):
        type(det).load(str(doc_run["work"]), isize=32)


def test_eval_on_good_images_only_reports_fpr_and_bounds_overlays(doc_run, caplog, capsys):
    work = doc_run["work"]
    with caplog.at_level(logging.INFO, logger="sagan_jax"):
        result = cli("--mode=eval", "--dataset=anomaly_folder", f"--data_root={doc_run['data']}",
                     f"--data_dir={doc_run['tmp'] / 'tfds'}", f"--workdir={work}",
                     "--isize=16", "--ngf=16", "--ndf=16", "--nz=8", "--val_fraction=0.25",
                     "--batch_size=8", "--eval_batch_size=8", "--epochs=1", "--max_pictures=4",
                     "--noprogress", "--notensorboard", "--noplots")
    assert "auc" not in result and "no abnormal images" in result["metrics_absent"]
    assert result["fpr_at_threshold"] == doc_run["ns"]["metrics"]["fpr_at_threshold"]
    assert "false-positive rate at the threshold" in capsys.readouterr().out
    assert result["overlays"]["written"] == 4 and result["overlays"]["not_drawn"] == 2
    assert len(os.listdir(work / "overlays")) == 4
    assert any("4 of 6 images drawn" in r.getMessage() and "2 not drawn" in r.getMessage()
               for r in caplog.records)
    saved = json.loads((work / "eval.json").read_text())
    assert "auc" not in saved and saved["fpr_at_threshold"] == result["fpr_at_threshold"]
    again = cli("--mode=eval", f"--workdir={work}", "--max_pictures=0", "--noprogress")
    assert again.get("overlays") is None and not (work / "overlays").exists()  # none stale
    assert saved["threshold"] == json.loads((work / "metrics.json").read_text())["threshold"]
    assert saved["threshold_source"] == "validation normals" and saved["n_normal"] == 6


def test_score_mode_writes_overlays_and_lists_unreadable_files(doc_run, tmp_path, caplog):
    src = doc_run["data"] / "test/good"
    inp = tmp_path / "in"
    for name in ("00.png", "01.png", "02.png"):
        save(str(inp / name), np.asarray(Image.open(src / name)))
    (inp / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out/scores.csv"
    with caplog.at_level(logging.INFO, logger="sagan_jax"):
        res = cli("--mode=score", f"--workdir={doc_run['work']}", f"--input={inp}",
                  f"--output={out}", "--on_bad_image=skip", "--max_pictures=2")
    rows = read_csv(out)
    assert [r["decision"] for r in rows][-1] == "skipped" and rows[-1]["reason"]
    assert len(os.listdir(tmp_path / "out/scores_maps")) == 3   # the map PNGs stay
    overlays = sorted(os.listdir(tmp_path / "out/scores_overlays"))
    assert overlays == ["00.png.png", "01.png.png"] and res["overlays"]["not_drawn"] == 1
    assert any("1 not drawn, the first of them 02.png.png" in r.getMessage()
               for r in caplog.records)
    pic = np.asarray(Image.open(tmp_path / "out/scores_overlays/00.png.png"))
    assert pic.shape == (256, 256, 3)
    # the decision's colour in the corner: red text for abnormal, green for normal
    corner = pic[:20, :120].reshape(-1, 3).astype(int)
    red = np.any((corner[:, 0] > 200) & (corner[:, 1] < 100))
    green = np.any((corner[:, 1] > 200) & (corner[:, 0] < 100))
    assert (red, green) == ((True, False) if rows[0]["decision"] == "abnormal" else (False, True))


def test_overlay_draws_the_mask_outline():
    from sagan_jax.overlays import OUTLINE, render

    img = np.full((16, 16, 3), 128, np.uint8)
    amap = np.zeros((16, 16), np.float32)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 1
    with_mask = render(img, amap, 1.0, False, 0.5, mask)
    without = render(img, amap, 1.0, False, 0.5)
    cyan = np.all(with_mask == OUTLINE, axis=-1)
    assert not np.any(np.all(without == OUTLINE, axis=-1))
    # the outline follows the mask's edge (4..12 of 16, upscaled 16x): rows 64 and 191
    assert cyan[64, 100] and cyan[191, 100] and cyan[100, 64] and not cyan[128, 128]


def test_export_loads_in_a_fresh_process(doc_run, tmp_path):
    """docs/export.md's loader, run as written in a process that never imports sagan_jax,
    scores the images as --mode=score does."""
    work = doc_run["work"]
    res = cli("--mode=export", f"--workdir={work}")
    meta = json.loads(open(res["meta"]).read())
    assert meta["input"] == {"shape": ["batch", 16, 16, 3], "dtype": "uint8", "channels": "RGB",
                             "isize": 16, "resize": "crop",
                             "resize_rule": "shorter side to isize (bilinear), centre crop"}
    assert meta["threshold"] == doc_run["ns"]["detector"].threshold
    assert meta["class_names"] == ["normal", "abnormal"] and meta["versions"]["jax"]
    paths = sorted(str(p) for p in (doc_run["data"] / "test/good").iterdir())[:5]
    out = tmp_path / "scores.csv"
    cli("--mode=score", f"--workdir={work}", f"--input={doc_run['data'] / 'test/good'}",
        f"--output={out}", "--max_pictures=0")
    want = {r["path"]: float(r["raw_score"]) for r in read_csv(out)}
    code = code_block("export.md")
    code = re.sub(r'^EXPORT = .*$', f"EXPORT = {os.path.dirname(res['model'])!r}", code,
                  flags=re.M)
    code = re.sub(r'^PATHS = .*$', f"PATHS = {paths!r}", code, flags=re.M)
    code += ("\nimport sys\nprint('RESULT', json.dumps({'score': score.tolist(), "
             "'map': list(amap.shape), 'abnormal': abnormal.tolist(), "
             "'sagan_jax': 'sagan_jax' in sys.modules}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert got["sagan_jax"] is False and got["map"] == [5, 16, 16]
    # float32 in the export against score mode's float64 sum of the same float32 terms (and
    # another batch size): equal to about 1e-7 relative; 1e-5 leaves room for other CPUs
    np.testing.assert_allclose(got["score"], [want[p] for p in paths], rtol=1e-5)
    assert got["abnormal"] == [want[p] > meta["threshold"] for p in paths]


def test_export_batch_is_symbolic(doc_run):
    path = doc_run["work"] / "export/model.jaxexport"
    if not path.exists():
        cli("--mode=export", f"--workdir={doc_run['work']}")
    exp = jax.export.deserialize(bytearray(path.read_bytes()))
    assert not isinstance(exp.in_avals[0].shape[0], int)   # a symbolic dimension
    for b in (1, 3):
        score, amap = exp.call(np.zeros((b, 16, 16, 3), np.uint8))
        assert score.shape == (b,) and amap.shape == (b, 16, 16)


def test_export_writes_to_output_folder(doc_run, tmp_path):
    """--output names the export folder (default WORKDIR/export); a file there is refused in
    one line before anything is written."""
    res = cli("--mode=export", f"--workdir={doc_run['work']}", f"--output={tmp_path / 'exp'}")
    assert res["model"] == str(tmp_path / "exp" / "model.jaxexport")
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["model.jaxexport",
                                                                     "model.json"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"is a file; pass --output=FOLDER"):
        cli("--mode=export", f"--workdir={doc_run['work']}", f"--output={tmp_path / 'file'}")
    assert (tmp_path / "file").read_text() == "x"


def test_export_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint"):
        cli("--mode=export", f"--workdir={tmp_path}")


def test_max_pictures_is_validated():
    with pytest.raises(ConfigError, match=r"--max_pictures=-1 must be >= 0"):
        Config(max_pictures=-1)


def test_lbot_layout_without_abnormal_folder_is_good_images_only(tmp_path):
    from sagan_jax.data.anomaly_folder import load_anomaly_folder

    for rel in ("train/0.normal/a.png", "test/0.normal/b.png"):
        save(str(tmp_path / rel), np.zeros((16, 16, 3), np.uint8))
    data = load_anomaly_folder(tmp_path, 16, cache=False)
    assert data.class_names == ("0.normal",) and data.test.labels.tolist() == [0]


def test_auc_per_defect_also_with_one_defect_type():
    from sagan_jax.training.metrics import auc_per_class, auc_per_defect

    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.3, 0.9])
    classes = np.array([0, 0, 1, 1])
    assert auc_per_defect(labels, scores, classes, ("good", "crack")) == {"crack": 0.75}
    assert auc_per_class(labels, scores, classes, ("good", "crack")) == {}  # two or more only
    classes = np.array([0, 0, 1, 2])
    assert auc_per_defect(labels, scores, classes, ("good", "crack", "dent")) == {
        "crack": 0.5, "dent": 1.0}


def test_pixel_metrics_in_summaries_and_table2_rows():
    """summary.json/summary.md and table2's runs.csv carry pixel AUROC and AUPRO when the runs
    have defect masks, and nothing (empty cells) when they do not."""
    from experiments.results import table2_record
    from sagan_jax.training.results import summarise_runs, summary_markdown
    from sagan_jax.training.runs import Run

    runs = [Run(f"a_seed{s}", Config(abnormal_class="1", seed=s)) for s in (0, 1)]
    res = [{"auc": 0.5 + 0.2 * s, "best_epoch_on_test_set": {"auc": 0.6, "epoch": 1},
            "pixel_auc": 0.7 + 0.2 * s, "pixel_aupro": 0.3 + 0.2 * s} for s in (0, 1)]
    row = summarise_runs(runs, res)["per_class"][0]
    assert row["pixel_auc_mean"] == pytest.approx(0.8)
    assert row["pixel_aupro_mean"] == pytest.approx(0.4)
    md = summary_markdown(summarise_runs(runs, res), "sagan")
    assert "| 1 | 0.8000 ± 0.1414 | 0.4000 ± 0.1414 |" in md
    assert "AUPRO" not in summary_markdown(
        summarise_runs(runs, [{k: v for k, v in r.items() if "pixel" not in k} for r in res]),
        "sagan")
    metrics = dict(res[0], ap=0.5, f1=0.5, last_epoch=1, wall_time_s=1.0)
    got = table2_record.row_of(runs[0].cfg, metrics, "tiny")
    assert (got["pixel_auc_last_epoch"], got["pixel_aupro_last_epoch"]) == (0.7, 0.3)
    got = table2_record.row_of(runs[0].cfg, dict(metrics, pixel_auc=None, pixel_aupro=None), "tiny")
    assert (got["pixel_auc_last_epoch"], got["pixel_aupro_last_epoch"]) == ("", "")
    assert set(table2_record.OPTIONAL_FIELDS) <= set(table2_record.CSV_FIELDS)


SAVED_MODEL_RUN = r"""
import json, sys
import numpy as np
images = np.load(sys.argv[1])
{doc}
print("RESULT", json.dumps({{"score": score.tolist(), "map": amap.tolist(),
                            "sagan_jax": "sagan_jax" in sys.modules}}))
"""


def test_export_savedmodel_loads_in_tensorflow(doc_run, tmp_path):
    """--export_savedmodel: docs/export.md's SavedModel block, run in a process that never
    imports sagan_jax, gives the .jaxexport's scores and maps and score mode's scores, at
    another batch size than the export was traced with (the batch is polymorphic)."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed (the optional tfds extra: pip install '.[tfds]')")
    work, det = doc_run["work"], doc_run["ns"]["detector"]
    res = cli("--mode=export", f"--workdir={work}", "--export_savedmodel")
    meta = json.loads(open(res["meta"]).read())
    saved = meta["saved_model"]
    assert saved["path"] == "saved_model" and saved["signature"] == "serving_default"
    assert os.path.isfile(os.path.join(res["saved_model"], "saved_model.pb"))
    images = doc_run["ns"]["result"].images[:5]
    np.save(tmp_path / "images.npy", images)
    doc = re.findall(r"```python\n(.*?)```", open(os.path.join(ROOT, "docs/export.md")).read(),
                     re.S)[1]
    doc = re.sub(r'^SAVED = .*$', f"SAVED = {res['saved_model']!r}", doc, flags=re.M)
    doc = re.sub(r'^images = .*$', "", doc, flags=re.M)   # the test's images instead
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", SAVED_MODEL_RUN.format(doc=doc),
                           str(tmp_path / "images.npy")], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert got["sagan_jax"] is False
    exp = jax.export.deserialize(bytearray(open(res["model"], "rb").read()))
    want_score, want_map = (np.asarray(a) for a in exp.call(images))
    score, amap = np.asarray(got["score"]), np.asarray(got["map"])
    print("max |SavedModel - jaxexport| score", np.abs(score - want_score).max(),
          "map", np.abs(amap - want_map).max(), "| SavedModel - score mode| score",
          np.abs(score - doc_run["ns"]["result"].scores[:5]).max(), "platforms",
          saved["platforms"])
    # the same StableHLO compiled by TensorFlow's XLA instead of jax's: float32 rounding
    # (measured on CPU: 1.8e-7 on scores of about 0.3, 3e-7 on maps); 1e-5 relative leaves
    # room for another XLA version or CPU
    np.testing.assert_allclose(score, want_score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(amap, want_map, rtol=1e-5, atol=1e-6)
    # score mode (the Detector) adds the score's terms in float64: about 1e-7 relative
    np.testing.assert_allclose(score, doc_run["ns"]["result"].scores[:5], rtol=1e-5)
    assert amap.shape == (5, 16, 16)
    # a later export without the flag says the SavedModel is not this export's
    res = cli("--mode=export", f"--workdir={work}")
    assert json.loads(open(res["meta"]).read())["saved_model"] is None


def test_export_savedmodel_without_tensorflow_is_one_line(doc_run, monkeypatch, capsys):
    """--export_savedmodel where tensorflow does not import: a ConfigError (main prints it as
    one line and exits 2) naming the fix, raised before anything is written."""
    from sagan_jax import main

    monkeypatch.setitem(sys.modules, "tensorflow", None)   # `import tensorflow` fails
    folder = doc_run["work"] / "export"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.exists() else {}
    with pytest.raises(ConfigError) as e:
        cli("--mode=export", f"--workdir={doc_run['work']}", "--export_savedmodel")
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.exists() else {}
    assert after == before   # nothing written, not even model.jaxexport
    assert isinstance(e.value, main.USER_ERRORS)
    with pytest.raises(SystemExit) as code:
        main.fail(str(e.value))
    assert code.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sagan_jax: error: --export_savedmodel"), err
    assert 'pip install ".[tfds]"' in err[0] and "drop --export_savedmodel" in err[0]
