"""The hot lists in force for a running unit: one immutable Matcher, rebuilt off the recorder's thread and swapped in
whole when a signed list arrives or a manual entry is approved, expires or is removed.

Manual entries are changed by other processes (`alpr-edge hotlist approve` ...), so the service watches the
change record (``hotlist_changes``) and rebuilds when it grows. Entries that became active since the last build
are handed to the recorder, which checks the recent reads against them (P5: a new entry also finds the car that
passed an hour ago).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..config import HotlistConfig
from ..store.db import open_db
from ..store.migrations import migrate
from ..vision.ocr import Candidate
from .entry import Hit, HotEntry, ListInfo
from .index import ListIndex
from .manual import ManualEntries
from .matcher import Matcher
from .refresh import BundleSource, Refresher, source_for
from .repository import HotListRepository

log = logging.getLogger(__name__)
MANUAL_LIST = "manual"
POLL_S = 2.0  # how often the change record is looked at


@dataclass(frozen=True)
class HotListState:
    """What the status line and every alert say about the lists."""

    lists: tuple[ListInfo, ...]
    entries: int
    oldest_age_s: float | None  # of the signed lists; None when there are none
    stale: bool  # a signed list older than the limit, or none at all
    fault: str | None


class HotListService:
    """Owns the Matcher in force. ``check`` may be called from any thread; everything else runs on its own."""

    def __init__(
        self,
        db_path: Path,
        key: bytes,
        cfg: HotlistConfig,
        trusted_keys: Sequence[Ed25519PublicKey],
        clock: Callable[[], float] = time.time,
        extra_sources: Sequence[BundleSource] = (),
    ) -> None:
        self.db_path = db_path
        self.key = key
        self.cfg = cfg
        self.keys = tuple(trusted_keys)
        self.clock = clock
        self.extra_sources = tuple(extra_sources)  # e.g. bundles pushed by headquarters over MQTT
        self.stale_after_s = cfg.stale_after_h * 3600
        self._matcher = Matcher([], cfg.lookalike_limit)
        self._infos: dict[str, ListInfo] = {}
        self._manual: dict[str, HotEntry] = {}  # the manual entries in force, whole (the index keeps no P6 details)
        self._new_entries: list[HotEntry] = []
        self._lock = threading.Lock()  # guards _new_entries only; the matcher is swapped by assignment
        self._rebuild = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresher: Refresher | None = None
        self._last_seq = -1
        self._fault: str | None = None
        self._cache: dict[str, ListIndex] = {}  # signed lists by id, reused while their version is unchanged

    # -- the recorder's side --------------------------------------------------------------------------------

    def check(
        self, text: str, char_confidences: Sequence[float], candidates: Sequence[Candidate]
    ) -> tuple[list[Hit], dict[str, ListInfo]]:
        m, infos, manual = self._matcher, self._infos, self._manual
        alts = [(c.text, c.confidence) for c in candidates if c.text != text][:5]
        hits = m.match(text, char_confidences, alts, now=self.clock())
        # A manual entry's hit carries the whole entry (who entered it, requesting officer, synopsis: P6).
        return [
            replace(h, entry=manual.get(h.entry.entry_id, h.entry)) if h.entry.list_id == MANUAL_LIST else h
            for h in hits
        ], infos

    def take_new_entries(self) -> list[HotEntry]:
        """Manual entries that became active since the last call (the recorder checks recent reads on them)."""
        with self._lock:
            out, self._new_entries = self._new_entries, []
        return out

    @property
    def matcher(self) -> Matcher:
        return self._matcher

    def state(self) -> HotListState:
        now = self.clock()
        signed = [i for i in self._infos.values() if i.list_id != MANUAL_LIST]
        ages = [max(0.0, now - i.created) for i in signed]
        oldest = max(ages) if ages else None
        stale = oldest is None or oldest > self.stale_after_s
        return HotListState(
            lists=tuple(self._infos.values()),
            entries=sum(i.entry_count for i in self._infos.values()),
            oldest_age_s=oldest,
            stale=stale,
            fault=self._fault,
        )

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self, stop: threading.Event) -> None:
        """Build the matcher from what is stored (before the first read), then watch for changes."""
        self._build()
        if self.cfg.sources or self.extra_sources:
            if not self.keys:
                self._fault = "hot list sources configured but no public key (hotlist.public_keys)"
                log.error("%s", self._fault)
            else:
                self._refresher = Refresher(
                    lambda: HotListRepository.open(self.db_path, self.key, self.keys),
                    [*(source_for(s, self.cfg.ca_file) for s in self.cfg.sources), *self.extra_sources],
                    self.keys,
                    self.cfg.refresh_interval_min * 60,
                    on_update=self._rebuild.set,
                    stop=stop,
                    stale_after_s=self.stale_after_s,
                    clock=self.clock,
                )
                self._refresher.start()
        self._thread = threading.Thread(target=self._run, args=(stop,), name="hotlist", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """An update is offered (e.g. headquarters announced one): check the sources now."""
        if self._refresher is not None:
            self._refresher.poke()

    def join(self, timeout: float | None = None) -> None:
        if self._refresher is not None:
            self._refresher.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._rebuild.wait(POLL_S)
            if stop.is_set():
                break
            try:
                if self._rebuild.is_set() or self._changed():
                    self._rebuild.clear()
                    self._build()
            except Exception as e:  # a bad list must never stop the unit: keep the matcher in force
                self._fault = f"hot list reload failed: {type(e).__name__}: {e}"
                log.exception("hot list reload failed; the lists in force stay")

    def _changed(self) -> bool:
        conn = open_db(self.db_path, self.key, create=False)
        try:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM hotlist_changes").fetchone()
        finally:
            conn.close()
        return int(row[0]) != self._last_seq

    def _build(self) -> None:
        t0 = time.monotonic()
        conn = open_db(self.db_path, self.key)
        try:
            migrate(conn)
            seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM hotlist_changes").fetchone()[0])
            repo = HotListRepository(conn, self.keys)
            indexes = []
            problems = []
            for info in repo.lists():
                cached = self._cache.get(info.list_id)
                if cached is not None and cached.info == info:
                    indexes.append(cached)  # unchanged: a manual entry's approval must not re-parse a state extract
                    continue
                try:
                    indexes.append(ListIndex.build(info, repo.entries(info.list_id)))
                except Exception as e:  # tampered at rest, or a key no longer trusted: that list is out
                    problems.append(f"list {info.list_id}: {e}")
                    log.error("hot list %s not loaded: %s", info.list_id, e)
            manual = ManualEntries(conn, self.clock)
            now = self.clock()
            manual.expire_due(now)
            active = manual.active(now)
        finally:
            conn.close()
        minfo = ListInfo(MANUAL_LIST, seq, now, len(active), "manual entries")
        indexes.append(ListIndex.build(minfo, active))
        matcher = Matcher(indexes, self.cfg.lookalike_limit)
        new = [e for e in active if e.entry_id not in self._manual]
        first = self._last_seq < 0
        self._matcher, self._infos = matcher, {ix.info.list_id: ix.info for ix in indexes}
        self._manual = {e.entry_id: e for e in active}
        self._cache = {ix.info.list_id: ix for ix in indexes if ix.info.list_id != MANUAL_LIST}
        self._last_seq = seq
        self._fault = "; ".join(problems) or None
        if new and not first:
            with self._lock:
                self._new_entries.extend(new)
        log.info(
            "hot lists in force: %d list(s), %d entries (built in %.1f s)",
            len(indexes),
            sum(len(ix) for ix in indexes),
            time.monotonic() - t0,
        )
