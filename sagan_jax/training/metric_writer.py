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
