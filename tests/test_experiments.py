"""experiments/common.py (flagfiles -> Config through absl), sections.py (docs sections),
machine.py (the load guard) and that every script in experiments/ starts. Fast: no training, no
benchmark."""
import argparse
import ast
import dataclasses
import datetime
import glob
import json
import os
import subprocess
import sys

import pytest
from absl.testing import flagsaver

from experiments import common, machine, sections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The modules of experiments/ (dotted, below it) that scripts import; every other one is a
# script, run as python -m experiments.NAME (demo and table2 start results.demo and
# results.table2_runner).
LIBRARIES = ("common", "machine", "sections", "results.demo", "results.table2_runner",
             "results.table2_record", "results.table2_report", "results.table2_eval_modes",
             "benchmarks.bench_runs_measure", "benchmarks.bench_runs_report",
             "benchmarks.step_probe")
MODULES = sorted(
    os.path.relpath(p, os.path.join(ROOT, "experiments"))[:-3].replace(os.sep, ".")
    for folder in ("", "results", "benchmarks")
    for p in glob.glob(os.path.join(ROOT, "experiments", folder, "*.py"))
    if os.path.basename(p) != "__init__.py")
SCRIPTS = [m for m in MODULES if m not in LIBRARIES]


def module_path(name: str) -> str:
    """experiments/results/demo.py for results.demo."""
    return os.path.join(ROOT, "experiments", *name.split(".")) + ".py"


def cli_config(argv):
    """The Config that `python -m sagan_jax.main ARGV` builds (absl's global FLAGS)."""
    from sagan_jax import main

    with flagsaver.flagsaver():
        main.FLAGS.unparse_flags()
        main.FLAGS(["sagan_jax", *argv])
        try:
            return main.config_from_flags()
        finally:
            main.FLAGS.unparse_flags()


# --- flagfiles -> Config ------------------------------------------------------------------------
def test_quickstart_flagfile_matches_the_cli():
    path = common.flagfile("quickstart.cfg")
    cfg = common.config_from_flagfiles(path)
    assert (cfg.dataset, cfg.abnormal_class, cfg.ngf, cfg.epochs, cfg.batch_size) == (
        "digits", "0", 16, 3, 64)
    assert (cfg.isize, cfg.kernels_per_layer, cfg.seeds) == (16, 1, "")
    assert cfg.workdir == "workdirs/quickstart"
    assert cfg == cli_config([f"--flagfile={path}"])


def test_nested_flagfiles_follow_absl(tmp_path):
    base = tmp_path / "base.cfg"
    base.write_text("# a comment\n// another\n\n   \n--epochs=5\n--ngf=16\n--nouse_cbam\n"
                    "--workdir=~/not_expanded\n")
    after = tmp_path / "after.cfg"  # the include first: its own later lines win
    after.write_text(f"--flagfile={base}\n--epochs=7\n--dsc_impl=shift\n")
    before = tmp_path / "before.cfg"  # the include last: the included lines win
    before.write_text(f"--epochs=7\n--use_cbam\n--flagfile={base}\n")

    a = common.config_from_flagfiles(str(after), args=["--ngf=8"])
    assert (a.epochs, a.ngf, a.use_cbam, a.dsc_impl) == (7, 8, False, "shift")
    assert a.workdir == "~/not_expanded"  # absl leaves string values alone
    b = common.config_from_flagfiles(str(before))
    assert (b.epochs, b.ngf, b.use_cbam) == (5, 16, False)
    # Python values as flags (True -> --name, False -> --noname, None -> left out), and
    # command-line strings after them.
    c = common.config_from_flagfiles(str(base), overrides=dict(use_cbam=True, data_root=None,
                                                               epochs=2),
                                     args=common.set_args(["ngf=32"]))
    assert (c.use_cbam, c.data_root, c.epochs, c.ngf) == (True, None, 2, 32)
    for path, extra in ((after, ["--ngf=8"]), (before, []), (base, ["--use_cbam", "--epochs=2",
                                                                      "--ngf=32"])):
        got = common.config_from_flagfiles(str(path), args=extra)
        assert got == cli_config([f"--flagfile={path}", *extra])


def test_config_flags_mirror_the_config_fields():
    from absl import flags

    fv = common.define_config_flags(flags.FlagValues())
    for f in dataclasses.fields(common.Config):
        assert fv[f.name].default == f.default
        assert fv[f.name].help == f.metadata["help"]


@pytest.mark.parametrize("content, expected", [
    ("--epochs=3\n--bogus_flag=1\n", "Unknown command line flag 'bogus_flag'"),
    ("--epoch=3\n", "Unknown command line flag 'epoch'. Did you mean: epochs ?"),
    ("--epochs=three\n", "flag --epochs=three: invalid literal for int()"),
    ("--isize=40\n", "--isize=40 must be a multiple of 16"),
    ("--epochs=3\nstray words\n", "unexpected arguments ['stray words']"),
])
def test_bad_flagfile_gives_one_line(tmp_path, content, expected):
    path = tmp_path / "bad.cfg"
    path.write_text(content)
    with pytest.raises(common.FlagError) as e:
        common.config_from_flagfiles(str(path))
    msg = str(e.value)
    assert expected in msg and "bad.cfg" in msg
    assert "\n" not in msg


def test_missing_flagfile_gives_one_line(tmp_path):
    with pytest.raises(common.FlagError, match="Unable to open flagfile") as e:
        common.config_from_flagfiles(str(tmp_path / "nope.cfg"))
    assert "\n" not in str(e.value)


def test_script_reports_a_bad_flag_in_one_line():
    p = subprocess.run(
        [sys.executable, "-m", "experiments.table2", "--dataset=digits", "--classes=0",
         "--models=sagan", "--out=/nonexistent/never_written", "--set", "bogus=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith("table2: error: Unknown command line flag 'bogus'"), p.stderr
    assert "model_sagan.cfg" in lines[-1]


def test_done_metrics(tmp_path):
    assert common.done_metrics(str(tmp_path), 3) is None
    (tmp_path / "metrics.json").write_text('{"last_epoch": 2, "auc": 0.5}')
    assert common.done_metrics(str(tmp_path), 3) is None  # stopped half-way: resume
    (tmp_path / "metrics.json").write_text('{"last_epoch": 3, "auc": 0.5}')
    assert common.done_metrics(str(tmp_path), 3) == {"last_epoch": 3, "auc": 0.5}


# --- Markdown sections --------------------------------------------------------------------------
DOC = """# Title

intro <!-- not a marker -->

<!-- bench:begin -->
old bench
<!-- bench:end -->

between

<!-- bench_loaded:begin -->
old loaded
<!-- bench_loaded:end -->
tail without newline"""


def test_replace_section_touches_only_its_section(tmp_path):
    path = tmp_path / "doc.md"
    path.write_text(DOC)
    sections.replace_section(str(path), "bench", "new\nbody\n")
    assert path.read_text() == DOC.replace("old bench", "new\nbody")
    assert sections.read_section(str(path), "bench_loaded") == "old loaded"
    sections.replace_section(str(path), "bench_loaded", "x")
    assert path.read_text() == DOC.replace("old bench", "new\nbody").replace("old loaded", "x")

    with pytest.raises(ValueError, match="lacks the section markers"):
        sections.replace_section(str(path), "other", "y")
    before = path.read_text()
    sections.replace_section(str(path), "other", "y", heading="## Other")
    assert path.read_text() == before + "\n\n## Other\n<!-- other:begin -->\ny\n<!-- other:end -->\n"


# --- machine header and load guard --------------------------------------------------------------
def report(load1, others, cores=2):
    return machine.LoadReport(cores=cores, started=datetime.datetime.now(datetime.timezone.utc),
                             wall_s=600.0, load_before=(load1, load1, load1),
                             load_after=(load1 + 2, 1.0, 1.0), others_cores=others,
                             own_cores=1.9)


def test_load_report_threshold_is_half_the_cores():
    assert not report(0.3, 0.05).loaded
    assert not report(1.0, 1.0).loaded  # at the threshold: quiet
    assert report(1.2, 0.05).loaded  # load average before the run
    assert report(0.3, 1.5).loaded  # other processes during the run
    assert not report(3.0, 0.5, cores=8).loaded
    assert "Loaded machine" in report(6.0, 1.5).describe()
    assert "Quiet machine" in report(0.2, 0.0).describe()
    assert "not measured" in report(0.2, None).describe()


def test_load_monitor_and_header():
    r = machine.LoadMonitor().report()
    assert r.cores == os.cpu_count() and len(r.load_before) == len(r.load_after) == 3
    assert r.others_cores is None or r.others_cores >= 0
    h = machine.machine_header(r, packages=("absl-py", "no-such-package-xyz"))
    assert f"{os.cpu_count()} logical CPUs" in h and "Python " in h
    assert "no-such-package-xyz not installed" in h and "commit " in h
    assert "Load average (1/5/15 min)" in h


def test_guard_refuses_loaded_figures_unless_allowed(tmp_path, capsys):
    path = tmp_path / "doc.md"
    path.write_text(DOC)
    loaded = report(6.0, 1.4)
    assert machine.write_benchmark_section(str(path), "bench", "figures", loaded) is None
    assert path.read_text() == DOC
    assert "not writing" in capsys.readouterr().err

    assert machine.write_benchmark_section(str(path), "bench", "figures", loaded,
                                          allow_loaded=True) == "bench_loaded"
    assert sections.read_section(str(path), "bench") == "old bench"  # the headline untouched
    assert sections.read_section(str(path), "bench_loaded").startswith(
        "**Loaded-machine figures**")

    assert machine.write_benchmark_section(str(path), "bench", "quiet figures",
                                          report(0.2, 0.1)) == "bench"
    assert sections.read_section(str(path), "bench") == "quiet figures"


def test_publish_writes_the_named_section(tmp_path, capsys):
    """--section sends a table to another marked section (a second machine's), leaving the
    headline; a new name is appended with its heading."""
    path = tmp_path / "doc.md"
    path.write_text(DOC)
    ap = argparse.ArgumentParser()
    machine.add_output_arguments(ap, str(path))
    machine.add_load_arguments(ap)
    machine.publish(ap.parse_args(["--section", "bench_amd"]), "bench", "amd figures",
                    report(0.2, 0.1))
    assert sections.read_section(str(path), "bench") == "old bench"
    assert sections.read_section(str(path), "bench_amd") == "amd figures"
    assert "### bench_amd\n<!-- bench_amd:begin -->" in path.read_text()
    machine.publish(ap.parse_args([]), "bench", "new figures", report(0.2, 0.1))
    assert sections.read_section(str(path), "bench") == "new figures"
    assert "amd figures" in capsys.readouterr().out


def test_benchmarks_doc_has_both_tables():
    for name in ("bench_train", "bench_train_loaded", "bench_input", "bench_input_loaded"):
        assert sections.read_section(common.BENCHMARKS_MD, name) is not None, name
    assert "Loaded-machine figures" in sections.read_section(common.BENCHMARKS_MD,
                                                           "bench_train_loaded")


# --- the scripts --------------------------------------------------------------------------------
def test_scripts_use_no_path_hacks_or_private_imports():
    for name in MODULES:
        path = module_path(name)
        with open(path) as f:
            src = f.read()
        assert "sys.path" not in src, name
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, (name, node.module, private)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.value.id in ("common", "machine", "sections", "table2", "table2_record",
                                      "table2_report", "table2_runner")
                        and node.attr.startswith("_")):
                    pytest.fail(f"{name}: {node.value.id}.{node.attr}")


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_starts(script):
    p = subprocess.run([sys.executable, "-m", f"experiments.{script}", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "usage" in p.stdout.lower(), p.stdout


@pytest.mark.parametrize("isize", [16, 32])
def test_anomaly_map_defects_and_their_exact_masks(isize):
    """experiments/results/anomaly_maps.py: each defect changes exactly the pixels its mask marks,
    within one square (isize/4) or patch (3 isize/8), and the dark square sits on a stroke."""
    import numpy as np

    from experiments.results.anomaly_maps import KINDS, make_defects

    rng = np.random.default_rng(0)
    images = np.zeros((6, isize, isize, 3), np.uint8)
    images[:, isize // 2 - 1:isize // 2 + 1, 2:-2] = 200  # a horizontal stroke
    abnormal = rng.integers(1, 256, (4, isize, isize, 3), dtype=np.uint8)  # no zero pixel
    for kind in KINDS:
        out, masks = make_defects(images, abnormal, kind, np.random.default_rng(1))
        assert out.shape == images.shape and masks.shape == images.shape[:3]
        np.testing.assert_array_equal(masks, (out != images).any(-1))
        side = 3 * isize // 8 if kind == "digit-0 patch" else isize // 4
        for m in masks:
            ys, xs = np.nonzero(m)
            assert len(ys) > 0 and np.ptp(ys) < side and np.ptp(xs) < side, kind
        if kind == "dark square":
            assert (out[masks.astype(bool)] == 0).all()
            assert (images[masks.astype(bool)].max(-1) == 200).any()


def test_package_errors_end_a_script_with_one_line(capsys):
    """A workdir trained with other flags (CheckpointError) ends an experiment script as it
    ends the CLI: one line, exit 2; other exceptions propagate unchanged."""
    from sagan_jax.training.checkpoints import CheckpointError

    with pytest.raises(SystemExit) as e:
        with common.package_errors("experiments.x"):
            raise CheckpointError("workdir w holds a model trained with other flags: ngf=32 (now 16)")
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        "experiments.x: error: workdir w holds a model trained with other flags: ngf=32 (now 16)\n")
    with pytest.raises(KeyError):
        with common.package_errors("experiments.x"):
            raise KeyError("not the user's input")


# --- Table 2's three evaluations (evaluations (a)/(b)/(c), docs/design.md, section 8) ------------
def test_history_gives_the_three_evaluations():
    from sagan_jax.training.results import summarise_history

    history = [  # epoch 2 has the lowest validation score, epoch 1 the best originals' AUC
        {"epoch": 0, "test_auc": 0.6, "test_ap": 0.5, "test_f1": 0.4, "test_auc_r": 0.5,
         "test_auc_lat": 0.5, "val_score_mean": 0.30, "test_auc_originals": 0.7},
        {"epoch": 1, "test_auc": 0.7, "test_ap": 0.5, "test_f1": 0.4, "test_auc_r": 0.5,
         "test_auc_lat": 0.5, "val_score_mean": 0.10, "test_auc_originals": 0.9},
        {"epoch": 2, "test_auc": 0.55, "test_ap": 0.5, "test_f1": 0.4, "test_auc_r": 0.5,
         "test_auc_lat": 0.5, "val_score_mean": 0.20, "test_auc_originals": 0.8},
    ]
    out = summarise_history(history)
    assert out["auc"] == 0.55 and out["last_epoch"] == 3  # (b): the last epoch, the result
    assert out["best_epoch_on_test_set"]["epoch"] == 2
    assert out["val_selected_epoch"]["epoch"] == 2 and out["val_selected_epoch"]["auc"] == 0.7
    assert out["originals_evaluation"]["epoch"] == 2 and out["originals_evaluation"]["auc"] == 0.9
    for r in history:
        del r["val_score_mean"], r["test_auc_originals"]
    out = summarise_history(history)
    assert "val_selected_epoch" not in out and "originals_evaluation" not in out


def test_history_f1_names_current_and_before_the_rename():
    """metrics.json's f1 is the F1 at the calibrated threshold, beside threshold and its source;
    the test-set-best F1 is f1_oracle, labelled. A history written before the rename (test_f1
    was the oracle's, test_f1_at_threshold ours) reads back under today's names."""
    from sagan_jax.training.results import summarise_history

    base = {"epoch": 0, "test_auc": 0.6, "test_ap": 0.5, "test_auc_r": 0.5, "test_auc_lat": 0.5}
    now = summarise_history([dict(base, test_f1=0.2, test_threshold=0.01, test_f1_oracle=0.7,
                                  threshold_source="validation normals")])
    before = summarise_history([dict(base, test_f1=0.7, test_f1_at_threshold=0.2)])
    for out in (now, before):
        assert out["f1"] == 0.2 and out["f1_oracle"] == 0.7
        assert "oracle, not the result" in out["f1_oracle_note"]
        assert "f1_at_threshold" not in out
    assert now["threshold"] == 0.01 and now["threshold_source"] == "validation normals"
    torch_ref = summarise_history([dict(base, test_f1_oracle=0.7)])  # no calibrated threshold
    assert "f1" not in torch_ref and torch_ref["f1_oracle"] == 0.7


def test_table2_reads_a_record_written_before_the_f1_rename(tmp_path):
    """A per-run record whose f1_last_epoch column held the oracle F1 (before the rename) reads
    back with that value as f1_oracle_last_epoch and f1_last_epoch not measured; a current
    record reads back as written."""
    import csv

    from experiments.results import table2_record, table2_runner as table2

    old_fields = [k for k in table2_record.CSV_FIELDS if k != "f1_oracle_last_epoch"]
    row = {k: "" for k in old_fields}
    row.update(model="sagan", abnormal_class="bird", seed="0", f1_last_epoch="0.61", flags="{}")
    path = tmp_path / "old.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, old_fields)
        w.writeheader()
        w.writerow(row)
    got = table2_record.read_record(str(path))[("sagan", "bird", 0)]
    assert got["f1_oracle_last_epoch"] == 0.61 and got["f1_last_epoch"] == ""
    cur = table2_record.row_of(table2.Config(), {"auc": 0.6, "ap": 0.5, "f1": 0.2, "f1_oracle": 0.61,
                                          "last_epoch": 1, "wall_time_s": 1.0,
                                          "best_epoch_on_test_set": {"auc": 0.6, "epoch": 1}},
                        "tiny")
    assert cur["f1_last_epoch"] == 0.2 and cur["f1_oracle_last_epoch"] == 0.61


def test_three_way_table():
    from experiments.results import table2_report

    def row(model, cls, seed, a, b, c):
        return {"model": model, "abnormal_class": cls, "seed": seed,
                "auc_originals_evaluation": a, "auc_last_epoch": b, "auc_val_selected": c}

    rows = [row("sagan", "0", 0, 0.9, 0.6, 0.7), row("sagan", "0", 1, 0.8, 0.6, 0.5),
            row("sagan", "1", 0, 0.7, 0.4, 0.4), row("pca", "0", 0, 0.8, 0.8, 0.8)]
    text = table2_report.three_way_table(rows, ["0", "1"], ["sagan", "pca"])
    lines = text.splitlines()
    assert lines[2] == "| PCA (baseline) | (a) = (b) = (c): no BatchNorm, no epochs | 0.800 | – | 0.800 (1 of 2) | 0 |"
    assert lines[3] == ("| SAGAN (proposed) | (a) originals' evaluation | 0.850 ± 0.071 | 0.700 | "
                        "0.775 | 0,1 |")
    assert lines[4] == ("| SAGAN (proposed) | (b) honest: precise BN, last epoch | 0.600 ± 0.000 | "
                        "0.400 | 0.500 | 0,1 |")
    assert lines[5].startswith("| SAGAN (proposed) | (c) epoch chosen on validation normals | "
                               "0.600 ± 0.141 | 0.400 | 0.500 |")
    assert lines[-1].endswith("SAGAN (proposed): (a) - (b) = +26.7 AUC points on average over 3 "
                              "runs (from +20.0 to +30.0).")


def test_three_way_facts():
    from experiments.results import table2_report

    def row(model, cls, seed, a, b, c, c_epoch, wall=100.0, train=40.0):
        return {"model": model, "abnormal_class": cls, "seed": seed, "epochs": 3,
                "auc_originals_evaluation": a, "auc_last_epoch": b, "auc_val_selected": c,
                "val_selected_epoch": c_epoch, "wall_time_s": wall, "train_s": train,
                "runs_in_program": 1}

    rows = [row("sagan", "0", 0, 0.9, 0.6, 0.7, 2, wall=90.0),
            row("sagan", "0", 1, 0.8, 0.4, 0.4, 3, wall=110.0, train=50.0),
            row("sagan", "1", 0, 0.3, 0.45, 0.45, 3, wall=400.0),
            row("pca", "0", 0, "", 0.8, "", "", wall=5.0, train=0.0)]
    lines = table2_report.three_way_facts(rows, ["sagan", "pca"]).splitlines()
    assert lines[2] == "| PCA (baseline) | 1 | 0.800 | 0 of 1 | – | – | – | 5 s | – |"
    # (b) mean 0.483; 2 runs below chance; (c) chose the last epoch in 2 of 3 runs and added
    # +10 points in one: +3.3 on average; (a) - (b): +30, +40, -15
    assert lines[3] == ("| SAGAN (proposed) | 3 | 0.483 | 2 of 3 | 2 of 3 | +3.3 | "
                        "+18.3 [-15.0, +40.0] | 110 s | 40 s |")


def test_every_script_ends_user_errors_in_one_line(tmp_path):
    """Each script's entry point goes through common.run_script, so a user error raised in the
    package (here: a data root that does not exist) ends it with one line and exit status 2,
    not a traceback."""
    for name in SCRIPTS:
        with open(module_path(name)) as f:
            assert f.read().endswith('if __name__ == "__main__":\n    common.run_script(main)\n'), name
    p = subprocess.run([sys.executable, "-m", "experiments.table2", "--models=pca",
                        "--classes=bird", "--data_root=/nonexistent/cifar", f"--out={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines()[-1] == (
        "experiments.table2: error: /nonexistent/cifar: data root does not exist or is not a "
        "folder; expected a folder holding the dataset")
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("seeds, expected", [
    ("a", "argument --seeds: 'a' is not a comma-separated list of integers (e.g. 0,1,2)"),
    ("0,x", "argument --seeds: '0,x' is not a comma-separated list of integers (e.g. 0,1,2)"),
    ("", "--seeds: give at least one seed, e.g. --seeds=0,1,2"),
])
def test_table2_bad_seeds_give_one_line(capsys, seeds, expected):
    from experiments.results import table2_runner as table2

    assert table2.parse_args(["--seeds=0,1, 2"]).seeds == [0, 1, 2]
    with pytest.raises(SystemExit) as e:
        table2.parse_args([f"--seeds={seeds}"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {expected}")


@pytest.mark.parametrize("module, argv, expected", [
    ("benchmarks.bench_train", ["--configs=dsc,bogus"],
     "--configs=dsc,bogus: choose dsc and/or plain, e.g. --configs dsc,plain"),
    ("benchmarks.bench_train", ["--jax_dsc_impls=shift,bogus"],
     "--jax_dsc_impls=shift,bogus: choose from auto, dense, shift, shift_vjp, repeat, xla"),
    ("benchmarks.bench_train", ["--batch=0"], "argument --batch: '0' is not a positive integer (e.g. 3)"),
    ("benchmarks.bench_train", ["--sizes=64:2,8:x"], "bad --sizes entry '8:x'"),
    ("benchmarks.startup_time", ["--compute_dtype=float16"], "--compute_dtype"),
    ("benchmarks.startup_time", ["--repeats=0"], "argument --repeats: '0' is not a positive integer (e.g. 3)"),
    ("benchmarks.bench_conv", ["--repeats=-1"], "argument --repeats: '-1' is not a positive integer (e.g. 3)"),
    ("benchmarks.bench_input", ["--steps=x"], "argument --steps: 'x' is not a positive integer (e.g. 3)"),
    ("benchmarks.bench_dsc", ["--impls=bogus"], "--impls=bogus: choose from"),
    ("benchmarks.bench_runs", ["--epochs=0"], "argument --epochs: '0' is not a positive integer (e.g. 3)"),
    ("benchmarks.profile_step", ["--steps=0"], "argument --steps: '0' is not a positive integer (e.g. 3)"),
    ("benchmarks.bench_control_flow", ["--repeats=0"], "argument --repeats: '0' is not a positive integer"),
    ("benchmarks.bf16_check", ["--batch=0"], "argument --batch: '0' is not a positive integer (e.g. 3)"),
    ("benchmarks.bench_control_flow", ["--scan_steps=0"], "argument --scan_steps: '0' is not a positive"),
    ("benchmarks.bench_runs", ["--ks=1,2", "--separate_ks=4"], "--separate_ks=4: each must be one of --ks=1,2"),
    ("benchmarks.bench_runs", ["--proc_timeout_s=0"], "--proc_timeout_s must be > 0"),
    ("benchmarks.bench_train", ["--jax_dsc_impls=shift,shift"], "choose from auto, dense, shift, shift_vjp, "
                                                     "repeat, xla, each once"),
    ("benchmarks.profile_step", ["--kernels_per_layer=,"], "give at least one value, e.g. 2,1"),
    ("benchmarks.profile_control_flow", ["--top=0"], "argument --top: '0' is not a positive integer"),
    ("results.anomaly_maps", ["--n_images=0"], "argument --n_images: '0' is not a positive integer"),
    ("benchmarks.bf16_check", ["--batch=1798"], "--batch=1798: the embedded digits hold 1797 images"),
    ("results.anomaly_maps", ["--seeds="], "--seeds=: give distinct seeds, at least one"),
    ("benchmarks.profile_step", ["--threads=-1"], "--threads=-1: give 0 (PyTorch's default) or more"),
    ("results.budget_curve", ["--collect", "--models=sagan,bogus"],
     "--models=sagan,bogus: choose from "),
    ("results.budget_curve", ["--collect", "--seeds=x"],
     "argument --seeds: 'x' is not a comma-separated list of integers (e.g. 0,1,2)"),
    ("results.budget_curve", ["--collect", "--classes=,"], "--classes and --seeds: give at least one"),
])
def test_benchmarks_refuse_bad_flags_before_waiting(monkeypatch, capsys, module, argv, expected):
    """A benchmark waits up to --wait_quiet seconds for a quiet machine; a bad flag must end it
    (one line, exit 2) before that wait, not after it or half-way through the measurement."""
    import importlib

    def waited(*a, **k):
        raise AssertionError(f"{module} started waiting before refusing {argv}")

    monkeypatch.setattr(machine, "wait_for_quiet", waited)
    main = importlib.import_module(f"experiments.{module}").main
    with pytest.raises(SystemExit) as e:
        with common.package_errors(f"experiments.{module}"):
            main(argv)
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # argparse: usage lines, then this
    assert "error: " in last and expected in last, last


@pytest.mark.parametrize("flag, expected", [
    ("--seeds=a", "argument --seeds: 'a' is not a comma-separated list of integers (e.g. 0,1,2)"),
    ("--seeds=", "--seeds: give at least one value"),
    ("--ngf=16,x", "argument --ngf: '16,x' is not a comma-separated list of integers (e.g. 0,1,2)"),
])
def test_demo_sweep_bad_lists_give_one_line(capsys, flag, expected):
    from experiments.results import demo_sweep

    args = demo_sweep.parse_args(["--seeds=0, 2", "--ngf=8"])
    assert args.seeds == "0,2" and args.ngf == [8]  # sagan_jax's --seeds gets "0,2"
    with pytest.raises(SystemExit) as e:
        demo_sweep.parse_args([flag])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {expected}")


def _t2_row(model, cls, seed, auc=0.6):
    return {"model": model, "abnormal_class": cls, "seed": seed, "epochs": 3,
            "auc_last_epoch": auc, "auc_best_epoch_test_selected": auc,
            "auc_originals_evaluation": "" if model == "pca" else auc + 0.1,
            "auc_val_selected": "" if model == "pca" else auc, "val_selected_epoch": 3,
            "wall_time_s": 10.0, "train_s": 5.0, "runs_in_program": 1, "flags": "{}"}


def test_table2_coverage_names_each_missing_run_and_the_command(tmp_path):
    """A partial report says which requested runs it lacks and why (diverged, started, not
    run), and gives the commands that complete it; a complete one says so."""
    from experiments.results import table2_record, table2_report, table2_runner as table2

    argv = ["--three_way", "--dataset=digits", "--models", "sagan,pca,ganomaly",
            "--classes=0,1,2", "--seeds=0,1", f"--out={tmp_path}", "--report_only"]
    args = table2.parse_args(argv)
    rows = [_t2_row("pca", c, s) for c in "012" for s in (0, 1)]
    rows += [_t2_row("sagan", c, 0) for c in "012"] + [_t2_row("sagan", "0", 1)]
    started = table2_record.run_workdir(str(tmp_path), "sagan", "1", 1)
    os.makedirs(started)
    open(os.path.join(started, "metrics.jsonl"), "w").close()
    diverged = table2_record.run_workdir(str(tmp_path), "sagan", "2", 1)
    os.makedirs(diverged)
    with open(os.path.join(diverged, "metrics.json"), "w") as f:
        json.dump({"diverged": {"step": 12, "what": "loss g_loss = nan"}, "last_epoch": 1}, f)
    text = table2_report.coverage(args, rows).splitlines()
    assert text[0] == (
        "Coverage: PARTIAL, 10 of 18 requested runs (3 models x 3 classes x 2 seeds) finished. "
        "PCA (baseline): seeds 0,1 complete. "
        "GANomaly: no seed complete; seeds 0,1 not run. "
        "SAGAN (proposed): seed 0 complete; seed 1: 1 of 3 classes finished (0), class 1 "
        "started, not finished, class 2 diverged (loss g_loss = nan at step 12).")
    base = (f"python -m experiments.table2 --three_way --dataset=digits --classes=0,1,2 "
            f"--out={tmp_path}")
    assert text[4:6] == [f"    {base} --models=ganomaly --seeds=0,1",
                         f"    {base} --models=sagan --seeds=1"]
    assert text[-1].startswith("A diverged run is not retried by a command")
    os.remove(os.path.join(started, "metrics.jsonl"))  # seed 1: class 2 diverged, 1 not run
    rows.append(_t2_row("sagan", "1", 1))
    text = table2_report.coverage(args, rows).splitlines()
    assert text[0].endswith("SAGAN (proposed): seed 0 complete; seed 1: 2 of 3 classes "
                            "finished (0, 1), class 2 diverged (loss g_loss = nan at step 12).")
    assert not any("--models=sagan" in line for line in text)  # nothing a command would train
    os.remove(os.path.join(diverged, "metrics.json"))
    rows += [_t2_row("sagan", "2", 1)] + [_t2_row("ganomaly", c, s) for c in "012"
                                          for s in (0, 1)]
    assert table2_report.coverage(args, rows) == (
        "Coverage: complete, all 18 requested runs (3 models x 3 classes x 2 seeds) finished.")


def test_committed_three_way_sections_are_their_records():
    """Each table2 section of docs/results.md that has a committed record (docs/runs/NAME.csv)
    is what its own command makes of that record: the three-way table and the per-model
    figures, rebuilt here from the CSV alone, equal the text in the doc. So a published table
    never drifts from the runs it names."""
    import shlex

    from experiments.results import table2_report, table2_runner as table2

    checked = 0
    for record in sorted(glob.glob(os.path.join(common.DOCS, "runs", "*.csv"))):
        name = os.path.basename(record)[:-len(".csv")]
        body = sections.read_section(common.RESULTS_MD, name)
        assert body is not None, f"{record}: docs/results.md has no section {name}"
        command = body.splitlines()[0]
        if name == "budget_curve":  # its own script: the section is its report of the record
            from experiments.results import budget_curve

            assert body == budget_curve.report(budget_curve.read_record(record))
            continue
        assert command.startswith("Command: `python -m experiments.table2 "), command
        args = table2.parse_args(shlex.split(command[len("Command: `"):-1])[3:])
        assert os.path.samefile(args.record, record)
        rows = [r for (m, c, s), r in args.recorded.items()
                if m in args.models and c in args.classes and s in args.seeds]
        assert table2_report.three_way_table(rows, args.classes, args.models) in body
        assert table2_report.three_way_facts(rows, args.models) in body
        checked += 1
    assert checked >= 1


def test_table2_doc_section(tmp_path, capsys):
    """--doc_section writes the report into that section of --doc and leaves the rest of the
    file as it was; a file without the section's markers is refused before any training."""
    from experiments.results import table2_record, table2_report, table2_runner as table2

    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nby hand\n")
    argv = ["--three_way", "--dataset=digits", "--models=pca,sagan", "--classes=0,1",
            "--seeds=0", f"--out={tmp_path / 'out'}", "--report_only", "--doc_section=t2",
            f"--doc={doc}"]
    with pytest.raises(SystemExit) as e:
        table2.parse_args(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"error: --doc_section=t2: {doc} has no <!-- t2:begin --> ... <!-- t2:end --> markers; "
        "add them where the report belongs")
    doc.write_text("# Results\n\nby hand\n<!-- t2:begin -->\nold\n<!-- t2:end -->\n\nafter\n")
    args = table2.parse_args(argv)
    table2_report.write_outputs(args, [_t2_row(m, c, 0, 0.4) for m in ("pca", "sagan") for c in "01"])
    text = doc.read_text()
    assert text.startswith("# Results\n\nby hand\n<!-- t2:begin -->\nCommand: `python -m "
                           "experiments.table2 --three_way")
    assert text.endswith("<!-- t2:end -->\n\nafter\n") and "old" not in text
    body = sections.read_section(str(doc), "t2")
    assert "Coverage: complete, all 4 requested runs (2 models x 2 classes x 1 seed) finished." in body
    assert "| SAGAN (proposed) | (b) honest: precise BN, last epoch | 0.400 | 0.400 | 0.400 | 0 |" in body
    assert "ours, last epoch" not in body  # the one-evaluation table stays in table2.md only
    assert "ours, last epoch" in (tmp_path / "out" / "table2.md").read_text()
    # the section's per-run record sits beside the doc, in runs/NAME.csv, named in the report
    assert sorted(table2_record.read_record(str(tmp_path / "runs" / "t2.csv"))) == [
        (m, c, 0) for m in ("pca", "sagan") for c in "01"]
    assert f"Per-run record (each finished run's numbers and defining flags; runs found there " \
           f"are not retrained): {tmp_path / 'runs' / 't2.csv'}." in body


def test_table2_keeps_no_row_of_an_unfinished_run(tmp_path, monkeypatch):
    """A run that diverged (even after epochs that were scored, so it has an AUC) or stopped
    short of its epochs is not a row of the table; the coverage line names it instead."""
    from experiments.results import table2_runner as table2
    import sagan_jax.training.loop as loop

    def metrics(auc, last_epoch, diverged=None):
        m = {"auc": auc, "ap": 0.5, "f1": 0.5, "f1_oracle": 0.6, "last_epoch": last_epoch, "wall_time_s": 1.0,
             "best_epoch_on_test_set": {"auc": auc, "epoch": 1}}
        return dict(m, diverged=diverged) if diverged else m

    results = [metrics(0.7, 1), metrics(0.6, 1, {"step": 3, "what": "loss d_loss = nan"}),
               metrics(0.5, 0)]
    monkeypatch.setattr(loop, "train", lambda cfg, load: {"per_class": True, "results": results})
    args = table2.parse_args(["--dataset=digits", "--models=sagan", "--classes=0,1,2",
                              "--budget=tiny", f"--out={tmp_path}"])
    rows = table2.run_all(args, machine.LoadMonitor())
    assert [(r["abnormal_class"], r["auc_last_epoch"]) for r in rows] == [("0", 0.7)]


def _fake_train(calls):
    """loop.train for table2.run_all: records which (class, seed) runs it was asked to train
    and returns a finished three-way result for each, its AUC set by the class."""
    def train(cfg, load):
        classes = cfg.abnormal_classes.split(",") if cfg.abnormal_classes else [cfg.abnormal_class]
        seeds = [int(s) for s in cfg.seeds.split(",")] if cfg.seeds else [cfg.seed]
        runs = [(c, s) for c in classes for s in seeds]
        calls.extend(runs)
        results = [{"auc": 0.5 + int(c) / 10, "ap": 0.5, "f1": 0.25, "f1_oracle": 0.3,
                    "last_epoch": cfg.epochs,
                    "wall_time_s": 12.5, "history": [{"train_s": 4.0}],
                    "best_epoch_on_test_set": {"auc": 0.9, "epoch": 1},
                    "originals_evaluation": {"auc": 0.8, "epoch": 1},
                    "val_selected_epoch": {"auc": 0.7, "epoch": cfg.epochs}} for c, s in runs]
        return {"per_class": True, "results": results} if len(runs) > 1 else results[0]
    return train


def test_table2_record_rebuilds_and_completes_a_report_without_workdirs(tmp_path, monkeypatch):
    """--record keeps each finished run's row (numbers and defining flags) in a file that can
    be committed: a checkout without the workdirs reads those runs back instead of retraining
    them, trains only the missing ones, writes the same table, and keeps recorded runs it was
    not asked for."""
    from experiments.results import table2_record, table2_report, table2_runner as table2
    import sagan_jax.training.loop as loop

    calls = []
    monkeypatch.setattr(loop, "train", _fake_train(calls))
    rec = tmp_path / "record.csv"
    other = _t2_row("ganomaly", "5", 0)  # another table's run: kept
    with open(rec, "w") as f:
        f.write(",".join(table2_record.CSV_FIELDS) + "\n"
                + ",".join(str(other.get(k, "")) for k in table2_record.CSV_FIELDS) + "\n")
    argv = ["--three_way", "--dataset=digits", "--models=sagan", "--seeds=0", "--budget=tiny",
            f"--record={rec}"]
    args = table2.parse_args([*argv, "--classes=0,1", f"--out={tmp_path / 'a'}"])
    first = table2.run_all(args, machine.LoadMonitor())
    assert sorted(calls) == [("0", 0), ("1", 0)]
    assert json.loads(first[0]["flags"])["ngf"] == 16  # the tiny budget's width
    table2_report.write_outputs(args, first)
    args = table2.parse_args([*argv, "--classes=0,1", f"--out={tmp_path / 'b'}",
                              "--report_only"])  # a fresh checkout: no workdirs
    assert set(args.recorded) == {("ganomaly", "5", 0), ("sagan", "0", 0), ("sagan", "1", 0)}
    again = table2.run_all(args, machine.LoadMonitor())
    assert again == first  # every field, typed as it was
    assert (table2_report.three_way_table(again, ["0", "1"], ["sagan"])
            == table2_report.three_way_table(first, ["0", "1"], ["sagan"]))
    calls.clear()
    args = table2.parse_args([*argv, "--classes=0,1,2", f"--out={tmp_path / 'c'}"])
    rows = table2.run_all(args, machine.LoadMonitor())
    assert calls == [("2", 0)]  # only the run the record lacks was trained
    assert [(r["abnormal_class"], r["auc_last_epoch"]) for r in rows] == [
        ("0", 0.5), ("1", 0.6), ("2", 0.7)]
    kept = table2_record.read_record(str(rec))
    assert sorted(kept) == [("ganomaly", "5", 0), ("sagan", "0", 0), ("sagan", "1", 0),
                            ("sagan", "2", 0)]
    assert kept[("ganomaly", "5", 0)]["auc_last_epoch"] == 0.6
    args = table2.parse_args([*argv, "--classes=0,1,2,3", f"--out={tmp_path / 'c'}",
                              "--report_only"])
    assert table2_report.coverage(args, table2.run_all(args, machine.LoadMonitor())).splitlines()[-1] \
        == (f"    python -m experiments.table2 --three_way --dataset=digits --budget=tiny "
            f"--classes=0,1,2,3 --out={tmp_path / 'c'} --record={rec} --models=sagan --seeds=0")


def test_table2_record_refuses_other_flags_and_bad_files(tmp_path, capsys, monkeypatch):
    """A finished run trained with other flags, in the record or in a workdir, is not read into
    this command's table (one line naming the flag, exit 2, before any training); nor is a file
    that is not a record. Two commands writing one record keep each other's runs."""
    from experiments.results import table2_record, table2_report, table2_runner as table2
    import sagan_jax.training.loop as loop

    monkeypatch.setattr(loop, "train", _fake_train([]))
    rec = tmp_path / "runs.csv"
    argv = ["--three_way", "--dataset=digits", "--models=sagan", "--classes=0", "--seeds=0",
            "--budget=tiny", f"--out={tmp_path / 'a'}", f"--record={rec}"]

    def refused(argv):
        with pytest.raises(SystemExit) as e:
            table2.main(argv)
        assert e.value.code == 2
        return capsys.readouterr().err.splitlines()[-1]

    args = table2.parse_args(argv)
    table2_report.write_outputs(args, table2.run_all(args, machine.LoadMonitor()))
    fresh = [a.replace("/a", "/b") for a in argv]  # no workdir: the record alone
    assert refused([*fresh, "--set", "ngf=32", "--report_only"]).endswith(
        f"error: --record={rec}: run sagan class 0 seed 0 there was trained with other "
        "flags: --ngf=16 (now 32); rerun with the record's flags, or give another --record (or "
        "--doc_section) for a new table")
    # a finished workdir run is compared with the flags its metrics.json saved, not labelled
    # with the command's
    workdir = table2_record.run_workdir(str(tmp_path / "a"), "sagan", "0", 0)
    os.makedirs(workdir)
    cfg = table2.run_config(args, "sagan", "0", 0)
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump({"last_epoch": cfg.epochs, "flags": cfg.replace(ngf=48).to_dict()}, f)
    assert refused([*argv, "--report_only"]).endswith(
        f"error: workdir {workdir}: run sagan class 0 seed 0 there was trained with other "
        "flags: --ngf=48 (now 16); use another --out, or this run's flags")
    # another machine keeps the data elsewhere: not a difference
    assert "data_root" not in json.loads(table2_record.read_record(str(rec))[("sagan", "0", 0)]["flags"])
    # two commands that read the record before either wrote it keep both runs
    one = table2.parse_args([*fresh[:3], "--classes=1", *fresh[4:]])
    two = table2.parse_args([*fresh[:3], "--classes=2", *fresh[4:]])
    table2_report.write_outputs(one, table2.run_all(one, machine.LoadMonitor()))
    table2_report.write_outputs(two, table2.run_all(two, machine.LoadMonitor()))
    assert sorted(table2_record.read_record(str(rec))) == [("sagan", c, 0) for c in "012"]
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]
    text = rec.read_text()
    lines = text.splitlines()
    for bad, expected in (
            ("model,seed\nsagan,0\n", "not a table2 record (no column abnormal_class); give a "
                                       "file this script wrote, or a new path"),
            (lines[0] + ",note\n", "column note is not a record column; remove it (the record "
                                   "keeps only what table2 writes)"),
            (text + lines[1] + "\n", "run sagan class 0 seed 0 appears twice; keep one line per "
                                     "run"),
            (text.replace(",0.5,", ",half,", 1), "line 2 does not parse (could not convert "
                                                 "string to float: 'half'); restore the file "
                                                 "from git, or give a new path"),
            (lines[0] + "\n<<<<<<< HEAD\n", "line 2 has fewer cells than columns; restore the "
                                             "file from git, or give a new path"),
            (lines[0] + "\n" + lines[1] + ",x\n", "line 2 has more cells than columns; restore "
                                                  "the file from git, or give a new path"),
            (text.replace('"{', '"[{', 1).replace('}"', '}]"', 1),
             "line 2: its flags are not a JSON object; restore the file from git, or give a new "
             "path")):
        rec.write_text(bad)
        with pytest.raises(SystemExit) as e:
            table2.parse_args(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].endswith(
            f"error: --record={rec}: {expected}")
    with pytest.raises(SystemExit):
        table2.parse_args([*argv[:-1], f"--record={tmp_path}"])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"error: --record={tmp_path}: cannot be read (Is a directory); give a CSV file's path")


def test_parity_train_one_seed_and_failed_runs_are_written_plainly(capsys):
    """One seed per framework: no standard deviation, no ratio to it (never 'nan' in the
    docs); a run without a result is named under the table; bad --frameworks are refused."""
    from experiments.results import parity_train

    rows = [{"framework": fw, "seed": 0, "auc": a, "wall_time_s": 10.0, "runs_in_program": 1}
            for fw, a in (("jax", 0.61), ("torch", 0.58))]
    summary = parity_train.summarise(rows)
    assert summary["jax"]["std"] is None and summary["welch_t"] is None
    assert summary["difference_in_torch_std"] is None
    md = parity_train.markdown(None, rows, summary, "cmd", None,
                               failed=[("jax", 1, "diverged (loss g = nan at step 4)")])
    assert "nan" not in md.replace("loss g = nan", "")
    assert "| JAX (sagan_jax) | 0.6100 | 0.6100 | – | 0.6100-0.6100 | 10 |" in md
    assert md.endswith("No result (not in the table, not in the means): jax seed 1: diverged "
                       "(loss g = nan at step 4).")
    for bad in ("jax,pytorch", "jax,jax", ","):
        with pytest.raises(SystemExit) as e:
            parity_train.main([f"--frameworks={bad}", "--no-write"])
        assert e.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].endswith(
            "give jax and/or torch, each once (e.g. --frameworks=jax,torch)")


def test_demo_sweep_refuses_results_of_other_settings(tmp_path, capsys):
    """sweep.json's keys name a digit and sizes only: results stored with other seeds, --set
    flags or without a requested lambda are refused, not reused under this sweep's heading."""
    from experiments.results import demo_sweep

    run = {"seed": 0, "auc": {"0.2": 0.6, "0.9": 0.5}, "auc_r": 0.5, "auc_lat": 0.5,
           "wall_time_s": 1.0, "epochs": 3}
    state = {"sagan": {"isize16_digit0_ngf16_kpl1_e3": {"r0": run, "r1": dict(run, seed=1)}},
             "baselines": {}}  # written before settings were stored: read off the runs
    ok = demo_sweep.parse_args(["--seeds=1,0", "--lambdas=0.9"])  # the order is no matter
    demo_sweep.check_settings(ok, state, "sweep.json")
    for argv, expected in (
            (["--seeds=0,1,2", "--lambdas=0.2"], "--seeds=0,1 (now 0,1,2)"),
            (["--seeds=0,1", "--set", "lr=1e-3"], "--set nothing (now ['lr=1e-3'])"),
            (["--seeds=0,1", "--lambdas=0.2,0.5"], "lambdas 0.2,0.9 re-scored (now also 0.5)")):
        with pytest.raises(SystemExit) as e:
            demo_sweep.check_settings(demo_sweep.parse_args(argv), state, "sweep.json")
        assert e.value.code == 2
        assert expected in capsys.readouterr().err
    for bad in ("nan", "1.5", "0.2,0.2"):
        with pytest.raises(SystemExit):
            demo_sweep.parse_args([f"--lambdas={bad}"])
        assert "give distinct score weights in [0, 1]" in capsys.readouterr().err


def test_digits_sweep_refuses_several_runs_per_digit(capsys):
    from experiments.results import digits_sweep

    with pytest.raises(SystemExit) as e:
        digits_sweep.main(["--digits=0", "--extra=--seeds=0,1", "--doc=/nonexistent/x.md"])
    assert e.value.code == 2
    assert "--extra sets --seeds or --abnormal_classes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        digits_sweep.main(["--digits=0,0"])
    assert "give distinct digits" in capsys.readouterr().err


def test_digits_sweep_table_names_what_is_missing(tmp_path):
    """A partial sweep's mean says over how many digits it is; a run without a result is named
    under the table, not averaged."""
    from experiments.results import digits_sweep

    doc = tmp_path / "r.md"
    m = {"auc": 0.8, "ap": 0.7, "auc_r_alone": 0.6, "auc_lat_alone": 0.5, "wall_time_s": 9.0,
         "best_epoch_on_test_set": {"auc": 0.9}}
    args = digits_sweep.argparse.Namespace(doc=str(doc))
    digits_sweep.write_table(args, [("0", m)], machine.LoadMonitor(),
                             [("1", "diverged (loss g = nan at step 3)")], 4)
    body = sections.read_section(str(doc), "digits_sweep")
    assert "| mean of 1 of 4 digits | 0.8000 | | | | | |" in body
    assert "No result (not in the mean): digit 1: diverged (loss g = nan at step 3)." in body
    assert body.endswith("PARTIAL: 2 of 4 digits not run yet (the same command resumes the sweep).")


@pytest.mark.parametrize("argv, expected", [
    (["--models=sagan,sagan"], "--models=sagan,sagan: give distinct values, at least one"),
    (["--classes="], "--classes=: give distinct values, at least one"),
    (["--seeds=0,0"], "--seeds=0,0: give distinct values, at least one"),
    (["--eval_modes=bird,cat"], "--eval_modes=bird,cat: give MODEL:CLASS,... with the model in"),
    (["--models=sagan", "--eval_modes=sgan:bird"], "--eval_modes=sgan:bird: give MODEL:CLASS"),
    (["--classes=bird", "--eval_modes=sagan:cat"], "--eval_modes=sagan:cat: give MODEL:CLASS"),
])
def test_table2_refuses_lists_it_would_misread(capsys, argv, expected):
    from experiments.results import table2_runner as table2

    assert table2.parse_args(["--classes=bird,cat", "--eval_modes=sagan:cat"]).eval_modes_classes == ["cat"]
    with pytest.raises(SystemExit) as e:
        table2.parse_args(argv)
    assert e.value.code == 2
    assert expected in capsys.readouterr().err.splitlines()[-1]


def test_demo_counts_no_diverged_run():
    """A run that diverged after scored epochs carries an earlier epoch's AUC: the demo and
    bf16_auc take it for no result (by seed), never for the run's last-epoch AUC."""
    from experiments.results import demo

    result = {"results": [{"flags": {"seed": 0}, "auc": 0.7},
                          {"flags": {"seed": 1}, "auc": 0.9, "diverged": {"step": 5}},
                          {"flags": {"seed": 2}, "diverged": {"step": 1}}]}
    assert demo.aucs_by_seed(result) == {0: 0.7, 1: None, 2: None}
    assert demo.aucs_of(result) == [0.7] and demo.failed_seeds(result) == [1, 2]
    assert demo.aucs_of({"flags": {"seed": 3}, "auc": 0.6}) == [0.6]  # one run, no summary


def test_demo_verdicts_compare_95_percent_intervals():
    """The demo's closing line follows the README's rule: Student-t 95% intervals of the mean
    over seeds, never one mean against a line."""
    from experiments.results import demo

    lo, hi = demo.interval((0.7, 0.1), 5)  # t(0.975, 4) = 2.7764
    assert (lo, hi) == pytest.approx((0.7 - 2.7764 * 0.1 / 5 ** 0.5,
                                      0.7 + 2.7764 * 0.1 / 5 ** 0.5), abs=1e-4)
    assert demo.interval((0.6, 0.0), 3) == pytest.approx((0.6 - 4.3027 * 0.01 / 3 ** 0.5,
                                                           0.6 + 4.3027 * 0.01 / 3 ** 0.5),
                                                          abs=1e-4)
    # mean 0.70 above chance, but 3 wide seeds: the interval reaches 0.5, no claim
    line = demo.conclusion((0.70, 0.13), (0.82, 0.03), (0.99, 0.01), 3)
    assert "is not reliably better than chance (95% interval 0.38 to 1.02)" in line
    assert "a kNN baseline with no training beats it" not in line  # 1.02 > kNN's lower end
    assert "no verdict between them at 3 seeds" in line
    line = demo.conclusion((0.60, 0.02), (0.82, 0.03), (0.99, 0.01), 5)
    assert "beats chance (95% interval 0.58 to 0.62)" in line
    assert "a kNN baseline with no training beats it (its interval 0.98 to 1.00)" in line
    assert "below chance" in demo.conclusion((0.30, 0.02), (0.8, 0.0), (0.9, 0.0), 5)


def test_table2_reports_a_registered_model_after_the_built_in_ones():
    """table2 takes any registered model: the built-in ones in the paper's order, then the
    others under their --model name (none is dropped from a report)."""
    from experiments.results import table2_report

    assert table2_report.in_table_order(["mine", "sagan", "pca"]) == ["pca", "sagan", "mine"]
    assert table2_report.model_label("mine") == "mine"
    assert table2_report.model_label("sagan") == "SAGAN (proposed)"
