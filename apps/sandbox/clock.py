"""The sandbox's clock: real time by default; tests freeze, set and advance it."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time


def parse_moment(value) -> float:
    """Unix seconds from an int/float or an ISO-8601 string (a naive one is read as UTC)."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dt.datetime):
        moment = value
    else:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


class SandboxClock:
    """Unix seconds as a float. Frozen, it stands still until set or advanced; running, it follows the
    real clock plus an offset (so `advance` also works on a running clock)."""

    def __init__(self, *, frozen_at: float | None = None):
        self._lock = threading.Lock()
        self._offset = 0.0
        self._frozen_at = frozen_at

    def now(self) -> float:
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return time.time() + self._offset

    def datetime(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now(), tz=dt.UTC)

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def freeze(self, at=None) -> float:
        moment = self.now() if at is None else parse_moment(at)
        with self._lock:
            self._frozen_at = moment
        return moment

    @contextlib.contextmanager
    def held_at(self, moment: float):
        """Read `moment` until the block ends, then go on as before: a scenario generated as of its end sees
        that moment everywhere (a store's expiry, a thread's retention), not the day it is generated again."""
        with self._lock:
            saved = (self._frozen_at, self._offset)
            self._frozen_at = moment
        try:
            yield
        finally:
            with self._lock:
                self._frozen_at, self._offset = saved

    def unfreeze(self) -> None:
        """Resume following real time from the current reading (no jump)."""
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - time.time()
                self._frozen_at = None

    def set(self, at) -> float:
        moment = parse_moment(at)
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at = moment
            else:
                self._offset = moment - time.time()
        return moment

    def advance(self, seconds: float) -> float:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += float(seconds)
                return self._frozen_at
            self._offset += float(seconds)
            return time.time() + self._offset

    def describe(self) -> dict:
        now = self.now()
        return {"now": now, "iso": dt.datetime.fromtimestamp(now, tz=dt.UTC).isoformat(), "frozen": self.frozen}
