"""Table 2's runs: where each lives, the flags that define it, its row in runs.csv, and the
committed per-run record (--record) that lets a checkout without workdirs redo the report.
table2_runner.py trains the runs (python -m experiments.table2); table2_report.py writes the
tables."""
from __future__ import annotations

import csv
import json
import os

from experiments import common
from sagan_jax.config import RUN_SPECIFIC, Config, flags_where


BUDGETS = {
    "paper": {"epochs": 15, "max_train_images": 0},
    "reduced": {"epochs": 3, "max_train_images": 4000, "ngf": 32},
    "tiny": {"epochs": 1, "max_train_images": 1000, "ngf": 16, "ndf": 32},
    # the quickstart's training flags (experiments/quickstart.cfg) for the embedded digits
    "digits": {"epochs": 3, "max_train_images": 0, "ngf": 16, "kernels_per_layer": 1,
                   "dsc_autotune": False},
}
CSV_FIELDS = ("model", "abnormal_class", "seed", "epochs", "auc_last_epoch",
              "auc_best_epoch_test_selected", "best_epoch", "auc_originals_evaluation",
              "originals_best_epoch", "auc_val_selected", "val_selected_epoch",
              "ap_last_epoch", "f1_last_epoch", "f1_oracle_last_epoch", "pixel_auc_last_epoch",
              "pixel_aupro_last_epoch",
              "wall_time_s", "train_s", "budget", "dataset", "protocol", "workdir",
              "runs_in_program", "flags")
# Value types of a row read back from a CSV (runs.csv, a --record); every other field is text.
INT_FIELDS = ("seed", "epochs", "best_epoch", "originals_best_epoch", "val_selected_epoch",
              "runs_in_program")
FLOAT_FIELDS = ("auc_last_epoch", "auc_best_epoch_test_selected", "auc_originals_evaluation",
                "auc_val_selected", "ap_last_epoch", "f1_last_epoch", "f1_oracle_last_epoch",
                "pixel_auc_last_epoch", "pixel_aupro_last_epoch", "wall_time_s", "train_s")
# Records written before the F1 rename: their f1_last_epoch was the oracle F1 (the best over
# thresholds chosen on the test set); read as f1_oracle_last_epoch, f1_last_epoch not measured.
LEGACY_COLUMNS = {"f1_last_epoch": "f1_oracle_last_epoch"}
# Columns a record written before they existed may lack (read as '': not measured). The pixel
# metrics need defect masks (an anomaly folder with ground truth): empty for CIFAR-10 and digits.
OPTIONAL_FIELDS = ("pixel_auc_last_epoch", "pixel_aupro_last_epoch")
# Of the flags a resumed run may change, the ones a finished run's numbers depend on (declared
# in sagan_jax/config.py), so the record keeps them.
RECORD_DEFINING = flags_where(resume=True, result=True)
# Where a run's data lies: another machine keeps the same images elsewhere (not recorded).
RECORD_LOCATIONS = flags_where(location=True)


def model_workdir(out: str, model: str) -> str:
    """The workdir of a model's program: its runs live in runs/<class>_seed<seed>/ below."""
    return os.path.join(out, "runs", model)


def run_workdir(out: str, model: str, cls: str, seed: int) -> str:
    """Where one run lives: the training loop's layout of a run list (training/runs.py)."""
    return os.path.join(model_workdir(out, model), "runs", f"{cls}_seed{seed}")


def legacy_workdir(out: str, model: str, cls: str, seed: int) -> str:
    """Where one run lived before the run axis (one process per run); read back, resumed."""
    return os.path.join(out, "runs", model, cls, f"seed{seed}")


def run_flags(flags: dict) -> str:
    """The flags that define a run's numbers (a Config's ``to_dict()``, or the ``flags`` a
    run's metrics.json saved), as the record keeps them: all of them, less the ones a rerun may
    change without changing a finished run's result (checkpoints.RESUMABLE_CHANGES but
    RECORD_DEFINING), the run's own class, seed and workdir (RUN_SPECIFIC), and where its data
    lies (RECORD_LOCATIONS: another machine keeps the same images elsewhere). Sorted compact
    JSON, so equal flags are equal text."""
    from sagan_jax.training.checkpoints import RESUMABLE_CHANGES

    return json.dumps({k: v for k, v in flags.items()
                       if k not in RUN_SPECIFIC and k not in RECORD_LOCATIONS
                       and (k not in RESUMABLE_CHANGES or k in RECORD_DEFINING)},
                      sort_keys=True, separators=(",", ":"))


def flag_differences(had: dict, want: dict) -> list:
    """``--flag=recorded (now wanted)`` for each flag both define differently (a flag one of
    them lacks, e.g. one added to the package after the run, is not compared)."""
    return [f"--{k}={had[k]} (now {want[k]})" for k in sorted(set(had) & set(want))
            if had[k] != want[k]]


def _typed(row: dict) -> dict:
    """A row read back from CSV with its numbers as numbers ('' stays '': not measured)."""
    out = dict(row)
    for k in INT_FIELDS:
        if out.get(k, "") != "":
            out[k] = int(out[k])
    for k in FLOAT_FIELDS:
        if out.get(k, "") != "":
            out[k] = float(out[k])
    return out


def read_record(path: str) -> dict:
    """The runs a --record file holds, by (model, class, seed); {} when it does not exist yet.
    A file that is not such a record (a missing or unknown column, a short or long line, a
    number or flags cell that does not parse, a run twice) is refused with common.FlagError,
    never half-read."""
    if not path or not os.path.exists(path):
        return {}

    def bad(what: str, fix: str = "restore the file from git, or give a new path"):
        return common.FlagError(f"--record={home_as_tilde(path)}: {what}; {fix}")

    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or ())
            legacy = {old: new for old, new in LEGACY_COLUMNS.items()
                      if old in columns and new not in columns}
            columns = [legacy.get(k, k) for k in columns]
            for old, new in legacy.items():
                columns.insert(columns.index(new), old)
            missing = [k for k in CSV_FIELDS if k not in columns and k not in OPTIONAL_FIELDS]
            extra = [k for k in columns if k not in CSV_FIELDS]
            if missing or extra:
                raise bad(f"not a table2 record (no column {missing[0]})" if missing else
                          f"column {extra[0]} is not a record column",
                          "give a file this script wrote, or a new path" if missing else
                          "remove it (the record keeps only what table2 writes)")
            raw = [{**r, **{new: r[old] for old, new in legacy.items()},
                    **{old: "" for old in legacy}} if legacy else r for r in reader]
    except OSError as e:
        raise bad(f"cannot be read ({e.strerror})", "give a CSV file's path") from None
    out = {}
    for n, r in enumerate(raw, start=2):
        if None in r or any(v is None for v in r.values()):
            raise bad(f"line {n} has {'more' if None in r else 'fewer'} cells than columns")
        try:
            r = _typed(r)
            flags = json.loads(r["flags"])
        except ValueError as e:
            raise bad(f"line {n} does not parse ({e})") from None
        if not isinstance(flags, dict):
            raise bad(f"line {n}: its flags are not a JSON object")
        key = (r["model"], r["abnormal_class"], r["seed"])
        if key in out:
            raise bad(f"run {key[0]} class {key[1]} seed {key[2]} appears twice",
                      "keep one line per run")
        out[key] = r
    return out


def write_record(args, rows: list) -> None:
    """This report's rows into --record, beside the runs recorded there that it did not ask
    for (kept: nothing is dropped). Under a lock on the record's folder the file is read again
    (another command may have added runs since this one started), merged, written to a
    temporary file and renamed: a crash leaves the previous record whole."""
    import fcntl

    folder = os.path.dirname(os.path.abspath(args.record))
    os.makedirs(folder, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    tmp = f"{args.record}.tmp{os.getpid()}"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        merged = read_record(args.record)
        for r in rows:
            merged[(r["model"], r["abnormal_class"], int(r["seed"]))] = r
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, CSV_FIELDS, restval="")
            w.writeheader()
            for key in sorted(merged):
                w.writerow({k: (home_as_tilde(v) if k == "workdir" else v)
                            for k, v in merged[key].items()})
        os.replace(tmp, args.record)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        os.close(fd)  # releases the lock


def _rounded(value):
    return "" if value is None else round(value, 4)


def row_of(cfg: Config, metrics: dict, budget: str) -> dict:
    best = metrics["best_epoch_on_test_set"]
    orig = metrics.get("originals_evaluation") or {}
    val = metrics.get("val_selected_epoch") or {}
    return {
        "auc_originals_evaluation": (round(orig["auc"], 4) if orig else ""),
        "originals_best_epoch": orig.get("epoch", ""),
        "auc_val_selected": (round(val["auc"], 4) if val else ""),
        "val_selected_epoch": val.get("epoch", ""),
        "model": cfg.model, "abnormal_class": cfg.abnormal_class, "seed": cfg.seed,
        "epochs": metrics["last_epoch"], "auc_last_epoch": round(metrics["auc"], 4),
        "auc_best_epoch_test_selected": round(best["auc"], 4), "best_epoch": best["epoch"],
        "ap_last_epoch": round(metrics["ap"], 4),
        # metrics.json written before the rename: f1 was the oracle F1, f1_at_threshold ours
        "f1_last_epoch": _rounded(metrics.get("f1_at_threshold" if "f1_oracle" not in metrics
                                              else "f1")),
        "f1_oracle_last_epoch": _rounded(metrics.get("f1_oracle", metrics.get("f1"))),
        **{f"{k}_last_epoch": (round(metrics[k], 4) if metrics.get(k) is not None else "")
           for k in ("pixel_auc", "pixel_aupro")},
        "wall_time_s": metrics["wall_time_s"],
        "train_s": round(sum(r.get("train_s", 0.0) for r in metrics.get("history", [])), 2),
        "budget": budget, "dataset": cfg.dataset,
        "protocol": cfg.protocol, "workdir": cfg.workdir,
        "runs_in_program": metrics.get("runs_in_program", 1),
        "flags": run_flags(metrics.get("flags") or cfg.to_dict()),  # what it trained with
    }


def home_as_tilde(path: str) -> str:
    """``path`` with the user's home as ``~``: a report names no one's home folder."""
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if path == home or path.startswith(home + os.sep) else path
