"""Per-step and per-epoch metrics to metrics.jsonl and TensorBoard event files."""
from __future__ import annotations

import json
import os


class MetricWriter:
    """Appends one JSON object per line to WORKDIR/metrics.jsonl ({"kind": "step"|"epoch",
    ...}) and writes the same scalars to TensorBoard event files under WORKDIR/tensorboard."""

    def __init__(self, workdir: str, tensorboard: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, kind: str, step: int, scalars: dict, **extra) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"kind": kind, "step": step, **extra, **scalars}) + "\n")
        if self._tb is not None:
            for name, value in scalars.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{kind}/{name}", value, step)

    def truncate(self, first_step: int, first_epoch: int) -> int:
        """Drop the records a killed process wrote after its last checkpoint (step records
        from ``first_step`` on, epoch records from ``first_epoch`` on), so that a resumed run
        logs each step once. Rewrites the file atomically; returns how many were dropped."""
        if not os.path.exists(self.path):
            return 0
        keep, dropped = [], 0
        for rec in read_jsonl(self.path):
            late = (rec.get("kind") == "step" and rec.get("step", 0) >= first_step) or (
                rec.get("kind") == "epoch" and rec.get("epoch", 0) >= first_epoch)
            if late:
                dropped += 1
            else:
                keep.append(rec)
        if dropped or first_step == 0:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in keep)
            os.replace(tmp, self.path)
        return dropped

    def flush(self):
        if self._tb is not None:
            self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str, kind: str | None = None) -> list:
    """Records of a metrics.jsonl file (of one kind), skipping a torn last line."""
    out = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if kind is None or rec.get("kind") == kind:
                out.append(rec)
    return out
