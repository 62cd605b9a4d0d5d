"""The hot lists in force: built from the stored signed lists and approved manual entries, rebuilt on change."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edge.config import HotlistConfig
from edge.hotlist.bundle import generate_keypair, sign_bundle
from edge.hotlist.csvformat import write_csv
from edge.hotlist.entry import HotEntry
from edge.hotlist.manual import ManualEntries
from edge.hotlist.repository import HotListRepository
from edge.hotlist.service import HotListService
from edge.store.db import open_db
from edge.store.keys import create_key_file, load_key
from edge.store.migrations import migrate


def entry(plate: str, i: int) -> HotEntry:
    return HotEntry(f"e{i}", "ncic-or", plate, None, "STOLEN_VEHICLE", "Stolen vehicle", f"C{i}",
                    time.time() - 3600, None, "")  # fmt: skip


def test_lists_and_manual_entries_in_force_rebuilt_on_change(tmp_path: Path) -> None:
    create_key_file(tmp_path / "k")
    key = load_key(tmp_path / "k")
    db = tmp_path / "reads.db"
    conn = open_db(db, key)
    migrate(conn)
    priv, pub = generate_keypair()
    created = time.time() - 30 * 3600
    bundle = sign_bundle(priv, "ncic-or", 5, write_csv([entry("7ABC123", 1), entry("KM4521", 2)]), created=created)
    repo = HotListRepository(conn, [pub])
    assert type(repo.offer(bundle, source="test")).__name__ == "Accepted"

    svc = HotListService(db, key, HotlistConfig(stale_after_h=24), [pub])
    stop = threading.Event()
    svc.start(stop)
    try:
        hits, lists = svc.check("7A8C123", [0.9] * 7, [])
        assert [(h.entry.plate, h.kind) for h in hits] == [("7ABC123", "lookalike")]
        assert lists["ncic-or"].version == 5
        st = svc.state()
        assert st.stale and 29 * 3600 < (st.oldest_age_s or 0) < 31 * 3600 and st.entries == 2
        signed_index = next(ix for ix in svc.matcher.indexes if ix.info.list_id == "ncic-or")

        manual = ManualEntries(conn)
        eid = manual.add(
            "QHB5*", "BOLO", "Armed robbery", "Felony stop", "C9", "Witness saw a partial plate", "m1", "Det. A"
        )
        time.sleep(2.5)
        assert svc.check("QHB5J73", [0.9] * 7, [])[0] == []  # pending: not in force
        manual.approve(eid, "admin1", role="administrator")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not svc.check("QHB5J73", [0.9] * 7, [])[0]:
            time.sleep(0.2)
        (hit,) = svc.check("QHB5J73", [0.9] * 7, [])[0]
        assert hit.kind == "wildcard" and hit.entry.list_id == "manual"
        assert [e.entry_id for e in svc.take_new_entries()] == [eid] and svc.take_new_entries() == []
        # the signed list was not re-parsed for a manual change
        assert any(ix is signed_index for ix in svc.matcher.indexes)
    finally:
        stop.set()
        svc.join(5)
        conn.close()
