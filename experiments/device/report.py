"""device_check.sh's report: its stages' records (WORK/stages.tsv), the machine, the tests and
each stage's figures, into OUTDIR/device_check.json and device_check.md (printed too).

    python experiments/device/report.py MODE WORK OUTDIR T0 BUDGET   (device_check.sh runs it)
"""
import json, os, sys, time

mode, work, out, t0, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
stages = []
for line in open(os.path.join(work, "stages.tsv")):
    name, status, rc, secs, note = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    stages.append({"stage": name, "status": status, "rc": rc, "seconds": int(secs), "note": note})
rep = {"mode": mode, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0)),
       "total_s": int(time.time()) - t0, "budget_s": budget, "stages": stages}


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


rep["info"] = load(os.path.join(work, "info.json"), {})
# tests: counts from the junit XML
try:
    import xml.etree.ElementTree as ET
    suite = ET.parse(os.path.join(out, "tests.xml")).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    rep["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    rep["tests"]["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                              if c.find("failure") is not None or c.find("error") is not None]
except Exception as e:  # noqa: BLE001
    # no junit XML (the stage timed out): the per-test lines of pytest -v in the log
    import re
    lines = open(os.path.join(out, "device_check.log"), errors="replace").read().splitlines()
    res = [m.groups() for m in (re.match(r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)", l)
                                for l in lines) if m]
    rep["tests"] = {"error": f"no junit XML ({type(e).__name__}); counted from the log",
                    "passed": sum(r[1] == "PASSED" for r in res),
                    "failed": [r[0] for r in res if r[1] in ("FAILED", "ERROR")]}
fw = []
if os.path.exists(os.path.join(out, "frameworks.jsonl")):
    fw = [json.loads(l) for l in open(os.path.join(out, "frameworks.jsonl")) if l.strip()]
rep["frameworks"] = fw
runs = load(os.path.join(out, "bench_runs.json"))
rep["run_axis"] = runs and {"results": runs.get("results"), "skipped": runs.get("skipped")}
# paper: metrics.json, or the epochs finished before the stage's time ran out
pw = os.path.join(work, "paper")
paper = load(os.path.join(pw, "metrics.json"))
if paper is None and os.path.exists(os.path.join(pw, "metrics.jsonl")):
    epochs = []
    for l in open(os.path.join(pw, "metrics.jsonl")):
        try:
            r = json.loads(l)
        except ValueError:
            continue
        if r.get("kind") == "epoch":
            epochs.append(r)
    paper = {"partial": True, "epochs_finished": len(epochs), "history": epochs}
if paper is not None:
    with open(os.path.join(out, "paper_metrics.json"), "w") as f:
        json.dump(paper, f, indent=1)
    keep = ("auc", "ap", "f1", "threshold", "f1_oracle", "last_epoch", "epochs", "wall_time_s",
            "time_to_first_step_s", "peak_host_memory_mb", "peak_device_memory_mb", "partial",
            "epochs_finished", "data", "devices")
    rep["paper"] = {k: paper[k] for k in keep if k in paper}
    hist = paper.get("history") or []
    rep["paper"]["train_img_per_s_by_epoch"] = [r.get("train_img_per_s") for r in hist]
    rep["paper"]["test_auc_by_epoch"] = [r.get("test_auc") for r in hist]
    rep["paper"]["stage_seconds"] = next((s["seconds"] for s in stages if s["stage"] == "paper"), None)
with open(os.path.join(out, "device_check.json"), "w") as f:
    json.dump(rep, f, indent=1)

L = [f"# device_check ({mode}), {rep['date_utc']} UTC", "",
     f"Total {rep['total_s']} s (budget {budget} s). " + ", ".join(
         f"{k} {v}" for k, v in rep["info"].items() if k in ("jax_backend", "jax_device_kind", "torch_device", "python")),
     "", "| stage | status | exit | seconds | note |", "|---|---|---:|---:|---|"]
L += [f"| {s['stage']} | {s['status']} | {s['rc']} | {s['seconds']} | {s['note']} |" for s in stages]
t = rep["tests"]
L += ["", f"Tests: {t}"]
if fw:
    L += ["", "| framework | kernels_per_layer | device | train ms/step | train img/s | eval img/s | setup s | first step s | first eval s | peak device MB | peak RSS MB |",
          "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in fw:
        if "error" in r:
            L.append(f"| {r['fw']} | {r['kpl']} | failed: {r['error']} | | | | | | | | |")
            continue
        dev = r["info"].get("device_name") or r["info"].get("device")
        L.append(f"| {r['fw']} | {r['kpl']} | {dev} | {r['train_ms_per_step']} | {r['train_img_per_s']} | "
                 f"{r['eval_img_per_s']} | {r['setup_s']} | {r['first_step_s']} | {r['first_eval_s']} | "
                 f"{r['peak_device_mb']} | {r['peak_rss_mb']} |")
md = os.path.join(work, "bench_runs.md")
if os.path.exists(md):
    L += ["", "## Run axis (experiments.benchmarks.bench_runs)", "", open(md).read()]
md = os.path.join(work, "control_flow.md")
if os.path.exists(md):
    L += ["", "## The step inside control flow (experiments.benchmarks.bench_control_flow)", "", open(md).read()]
if "paper" in rep:
    L += ["", "## Paper protocol, one class (bird), CIFAR-10 JPEG copy", "", json.dumps(rep["paper"])]
with open(os.path.join(out, "device_check.md"), "w") as f:
    f.write("\n".join(L) + "\n")
print("\n".join(L))
