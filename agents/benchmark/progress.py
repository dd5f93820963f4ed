"""The benchmark's progress bar: finished / running / queued / failed / skipped runs, elapsed time and ETA."""

from __future__ import annotations


class Progress:
    """A bar over the runs to train: finished / running / failed, elapsed and ETA."""

    def __init__(self, total: int, skipped: int, slots: int, enabled: bool):
        from tqdm.auto import tqdm

        self.total, self.skipped, self.slots = total, skipped, slots
        self.ok = self.failed = 0
        self.bar = tqdm(total=total, desc="runs", unit="run", disable=not enabled, dynamic_ncols=True, smoothing=0)
        self._postfix()

    def _postfix(self, refresh: bool = True) -> None:
        left = self.total - self.ok - self.failed
        running = min(self.slots, left)
        self.bar.set_postfix_str(
            f"done {self.ok}, running {running}, queued {left - running}, failed {self.failed}, skipped {self.skipped}",
            refresh=refresh,
        )

    def update(self, record: dict) -> None:
        m = record.get("metrics") or {}
        if record["status"] == "ok":
            self.ok += 1
            keys = ("delta_log_z", "delta_log_z_rw") if m.get("delta_log_z") is not None else ("log_z", "log_z_rw")
            vals = ", ".join(f"{k} {m[k]:.3f}" for k in keys if isinstance(m.get(k), (int, float)))
            self.bar.write(f"ok     {record['key']}: {vals} ({m.get('wall_seconds', 0):.0f} s)")
        else:
            self.failed += 1
            self.bar.write(f"FAILED {record['key']}: {record.get('error')}")
        self._postfix(refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
