"""Per-step metrics to JSONL (the source of truth, appended) and TensorBoard (for looking).

Every line is strict JSON (RFC 8259): a non-finite number (a NaN mean of no items, an infinite
ratio) is written as `null`, so any JSON parser reads the file, not only Python's.
"""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm


class MetricsWriter:
    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(tensorboard_dir))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **metrics}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(strict_json(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def truncate_after(self, step: int) -> None:
        """Drop rows past `step` — a resumed run rewrites the steps after its checkpoint."""
        if not self.path.exists():
            return
        rows = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        self.path.write_text("".join(r + "\n" for r in rows))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]


def strict_json(obj: Any, indent: int | None = None) -> str:
    """json.dumps that writes NaN/±inf as null (and anything else unknown as its str)."""
    return json.dumps(_strict(obj), allow_nan=False, default=str, indent=indent)


def _strict(v: Any) -> Any:
    """NaN/±inf → None, at any depth (json.dumps writes them as bare NaN/Infinity tokens otherwise)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _strict(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_strict(x) for x in v]
    return v


class MetricsProgress:
    """A live progress bar (step/total, chosen metrics, s/step, ETA) that follows a metrics.jsonl
    another process appends to — how the driver shows an SFT stage whose loop runs in Ray Train
    workers: their rows are already written for the record, so the bar needs no channel of its own.

        with MetricsProgress(stage_dir / "metrics.jsonl", desc="SFT stage2", show=("loss",)):
            trainer.fit()

    The total comes from the rows' `total_steps` when the writer gives it. A file cut back by a
    resumed run (MetricsWriter.truncate_after) is read again from the start.
    """

    def __init__(self, path: str | Path, *, desc: str, show: Sequence[str] = (), poll_s: float = 1.0,
                 enabled: bool = True):
        self.path, self.desc, self.show, self.poll_s = Path(path), desc, tuple(show), poll_s
        self.enabled = enabled
        self.bar: tqdm | None = None
        self._offset = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "MetricsProgress":
        if self.enabled:
            self.bar = tqdm(total=None, desc=self.desc, unit="step", dynamic_ncols=True)
            self._thread = threading.Thread(target=self._follow, name=f"progress {self.desc}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.bar is not None:
            self.poll()
            self.bar.close()

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def poll(self) -> None:
        """Read the complete rows appended since the last poll and move the bar to the last one."""
        if self.bar is None or not self.path.exists():
            return
        if self.path.stat().st_size < self._offset:  # truncated by a resume
            self._offset = 0
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a row being written is read next time
        self._offset += len(complete)
        rows = [json.loads(ln) for ln in complete.decode("utf-8").splitlines() if ln.strip()]
        if not rows:
            return
        last = rows[-1]
        if last.get("total_steps") and self.bar.total != last["total_steps"]:
            self.bar.total = last["total_steps"]
        if last["step"] != self.bar.n:
            self.bar.update(last["step"] - self.bar.n)
        shown = {k: last[k] for k in self.show if isinstance(last.get(k), (int, float))}
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=True)

