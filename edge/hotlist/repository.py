"""The hot lists in force on this unit: one verified, signed bundle per list in the encrypted database.

A bundle is verified, checked against the version in force (no replay), parsed completely, and only then swapped in
with one transaction replacing its list's row, so the list in force is never touched by a refused bundle and a
crash leaves either the old version or the new one. Every acceptance and refusal is recorded in
``hotlist_changes``. The stored bundle is verified again whenever it is loaded, so tampering at rest is caught.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..store.db import Connection, DBError, open_db
from ..store.errors import StoreError
from ..store.migrations import migrate
from .bundle import (
    DEFAULT_MAX_BUNDLE_BYTES,
    DEFAULT_MAX_SKEW_S,
    BundleError,
    FutureBundleError,
    UntrustedKeyError,
    peek_header,
    verify_bundle,
)
from .csvformat import DEFAULT_MAX_BYTES, CsvError, ParseError, parse_csv
from .entry import HotEntry, ListInfo

log = logging.getLogger(__name__)

DEFAULT_STALE_AFTER_S = 24 * 3600.0  # P4: general lists are refreshed at least every 24 hours


@dataclass(frozen=True)
class Accepted:
    """The bundle is now the list in force."""

    info: ListInfo
    previous_version: int | None
    bad_lines: int  # lines of the CSV skipped (headquarters saw the same when it signed)
    errors: tuple[ParseError, ...]  # the first of them


@dataclass(frozen=True)
class Refused:
    """The bundle was not used; the list in force is as it was."""

    reason: str
    # unchanged (the bundle in force offered again: not recorded), replay, invalid, untrusted (key), future (created
    # beyond the clock skew), bad-list (no good entries, wrong header, count differs from the signed one)
    code: str
    list_id: str | None = None
    version: int | None = None
    errors: tuple[ParseError, ...] = ()

    @property
    def permanent(self) -> bool:
        """A later offer of the very same bytes would be refused again: a refresher need not offer them again."""
        return self.code not in ("untrusted", "future")


class ListStatus(NamedTuple):
    info: ListInfo
    age_s: float
    stale: bool


class HotListRepository:
    """Hot list bundles in force, over one connection (``open`` makes and owns one; otherwise the caller does)."""

    def __init__(
        self,
        conn: Connection,
        trusted_keys: Sequence[Ed25519PublicKey] = (),
        *,
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        max_csv_bytes: int = DEFAULT_MAX_BYTES,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        owns_connection: bool = False,
    ) -> None:
        self.conn = conn
        self.trusted_keys = tuple(trusted_keys)
        self.max_bundle_bytes = max_bundle_bytes
        self.max_csv_bytes = max_csv_bytes
        self.max_skew_s = max_skew_s
        self._owns = owns_connection

    @classmethod
    def open(
        cls, path: Path, key: bytes, trusted_keys: Sequence[Ed25519PublicKey] = (), *, create: bool = True
    ) -> HotListRepository:
        conn = open_db(path, key, create=create)
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return cls(conn, trusted_keys, owns_connection=True)

    def close(self) -> None:
        if self._owns:
            self.conn.close()

    def __enter__(self) -> HotListRepository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- offering a bundle -------------------------------------------------------------------------------------

    def offer(
        self,
        bundle_bytes: bytes,
        trusted_keys: Sequence[Ed25519PublicKey] | None = None,
        source: str = "",
        *,
        actor: str = "hq",
        now: float | None = None,
    ) -> Accepted | Refused:
        """Verify, check the version, parse, and only then swap the bundle in; record the outcome."""
        now = time.time() if now is None else now
        keys = self.trusted_keys if trusted_keys is None else tuple(trusted_keys)
        digest = hashlib.sha256(bundle_bytes).hexdigest()
        try:
            row = self.conn.execute("SELECT list_id, version FROM hotlist_bundles WHERE sha256 = ?", (digest,))
            same = row.fetchone()
        except DBError as e:
            raise StoreError(f"cannot read the hot lists in force: {e}") from e
        if same is not None:
            return Refused(f"version {same[1]} of list {same[0]} is already in force", "unchanged", same[0], same[1])
        try:
            vb = verify_bundle(
                bundle_bytes,
                keys,
                now=now,
                max_skew_s=self.max_skew_s,
                max_bundle_bytes=self.max_bundle_bytes,
                max_csv_bytes=self.max_csv_bytes,
            )
        except BundleError as e:
            list_id, version = _claimed(bundle_bytes, self.max_bundle_bytes)
            code = (
                "untrusted"
                if isinstance(e, UntrustedKeyError)
                else "future"
                if isinstance(e, FutureBundleError)
                else "invalid"
            )
            return self._refuse(Refused(str(e), code, list_id, version), source, actor, digest, now)
        info = vb.info
        current = self._version(info.list_id)
        if current is not None and info.version <= current:
            why = "an older" if info.version < current else "the same"
            reason = f"replayed bundle: version {info.version} is {why} version than the {current} in force"
            return self._refuse(Refused(reason, "replay", info.list_id, info.version), source, actor, digest, now)
        try:
            parsed = parse_csv(vb.body, info.list_id, f"{info.list_id} v{info.version}", max_bytes=self.max_csv_bytes)
            good = parsed.consume()
        except CsvError as e:
            refused = Refused(f"the list is not usable: {e}", "bad-list", info.list_id, info.version)
            return self._refuse(refused, source, actor, digest, now)
        errors = tuple(parsed.errors)
        if good == 0:
            refused = Refused("the list has no good entries", "bad-list", info.list_id, info.version, errors)
            return self._refuse(refused, source, actor, digest, now)
        if good != info.entry_count:
            reason = f"the list has {good} good entries but its signed header says {info.entry_count}"
            refused = Refused(reason, "bad-list", info.list_id, info.version, errors)
            return self._refuse(refused, source, actor, digest, now)
        return self._swap(info, bundle_bytes, digest, source, actor, now, parsed.error_count, errors)

    def _swap(
        self,
        info: ListInfo,
        bundle_bytes: bytes,
        digest: str,
        source: str,
        actor: str,
        now: float,
        bad_lines: int,
        errors: tuple[ParseError, ...],
    ) -> Accepted | Refused:
        details = {
            "list_id": info.list_id,
            "version": info.version,
            "created": info.created,
            "entries": info.entry_count,
            "bad_lines": bad_lines,
            "sha256": digest,
            "source": source,
        }
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                # Checked again inside the write lock: another process may have swapped in a newer one meanwhile.
                row = self.conn.execute(
                    "SELECT version FROM hotlist_bundles WHERE list_id = ?", (info.list_id,)
                ).fetchone()
                previous = None if row is None else int(row[0])
                if previous is not None and info.version <= previous:
                    self.conn.execute("ROLLBACK")
                    reason = f"replayed bundle: version {info.version} is not newer than the {previous} in force"
                    refused = Refused(reason, "replay", info.list_id, info.version)
                    return self._refuse(refused, source, actor, digest, now)
                self.conn.execute(
                    "INSERT OR REPLACE INTO hotlist_bundles (list_id, version, created, received_at, entry_count,"
                    " sha256, source, bundle) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (info.list_id, info.version, info.created, now, info.entry_count, digest, source, bundle_bytes),
                )
                details["previous_version"] = previous
                self._record(actor, "bundle-accepted", details, now)
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.rollback()
                raise
        except DBError as e:
            raise StoreError(f"cannot store hot list {info.list_id} version {info.version}: {e}") from e
        log.info(
            "hot list %s version %d accepted from %s: %d entries, %d bad lines (was version %s)",
            info.list_id, info.version, source or "?", info.entry_count, bad_lines, previous,
        )  # fmt: skip
        return Accepted(ListInfo(info.list_id, info.version, info.created, info.entry_count, source), previous,
                        bad_lines, errors)  # fmt: skip

    def _refuse(self, refused: Refused, source: str, actor: str, digest: str, now: float) -> Refused:
        details: dict[str, object] = {
            "list_id": refused.list_id,
            "version": refused.version,
            "reason": refused.reason,
            "code": refused.code,
            "sha256": digest,
            "source": source,
            "bad_lines_shown": [str(e) for e in refused.errors[:10]],
        }
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self._record(actor, "bundle-refused", details, now)
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.rollback()
                raise
        except DBError as e:
            raise StoreError(f"cannot record a refused hot list bundle: {e}") from e
        log.warning("hot list bundle from %s refused: %s", source or "?", refused.reason)
        return refused

    def _record(self, actor: str, action: str, details: dict[str, object], now: float) -> None:
        self.conn.execute(
            "INSERT INTO hotlist_changes (at, actor, action, entry_id, details) VALUES (?, ?, ?, NULL, ?)",
            (now, actor, action, json.dumps(details, sort_keys=True)),
        )

    def _version(self, list_id: str) -> int | None:
        try:
            row = self.conn.execute("SELECT version FROM hotlist_bundles WHERE list_id = ?", (list_id,)).fetchone()
        except DBError as e:
            raise StoreError(f"cannot read the hot lists in force: {e}") from e
        return None if row is None else int(row[0])

    # -- reading the lists in force ----------------------------------------------------------------------------

    def lists(self) -> list[ListInfo]:
        try:
            rows = self.conn.execute(
                "SELECT list_id, version, created, entry_count, source FROM hotlist_bundles ORDER BY list_id"
            ).fetchall()
        except DBError as e:
            raise StoreError(f"cannot read the hot lists in force: {e}") from e
        return [ListInfo(str(r[0]), int(r[1]), float(r[2]), int(r[3]), str(r[4])) for r in rows]

    def version(self, list_id: str) -> int | None:
        """The version in force of a list, or None."""
        return self._version(list_id)

    def entries(self, list_id: str, trusted_keys: Sequence[Ed25519PublicKey] | None = None) -> Iterator[HotEntry]:
        """The entries of a list in force, from its stored bundle verified again now (``BundleError`` if it was
        altered at rest or its key is no longer trusted). Verification happens before this returns."""
        info, body = self._verified(list_id, trusted_keys)
        parsed = parse_csv(body, list_id, f"{list_id} v{info.version}", max_bytes=self.max_csv_bytes)
        return iter(parsed)

    def _verified(self, list_id: str, trusted_keys: Sequence[Ed25519PublicKey] | None) -> tuple[ListInfo, bytes]:
        keys = self.trusted_keys if trusted_keys is None else tuple(trusted_keys)
        try:
            row = self.conn.execute(
                "SELECT version, created, entry_count, source, bundle FROM hotlist_bundles WHERE list_id = ?",
                (list_id,),
            ).fetchone()
        except DBError as e:
            raise StoreError(f"cannot read hot list {list_id}: {e}") from e
        if row is None:
            raise KeyError(list_id)
        try:
            # No future-date check: a unit without a real-time clock may start with a wrong time.
            vb = verify_bundle(
                bytes(row[4]),
                keys,
                check_time=False,
                max_bundle_bytes=self.max_bundle_bytes,
                max_csv_bytes=self.max_csv_bytes,
            )
        except BundleError as e:
            raise BundleError(f"stored hot list {list_id} failed verification: {e}") from e
        h = vb.info
        if (h.list_id, h.version, h.entry_count) != (list_id, int(row[0]), int(row[2])) or h.created != row[1]:
            raise BundleError(f"stored hot list {list_id}: the bundle does not match its record (altered at rest)")
        return ListInfo(list_id, h.version, h.created, h.entry_count, str(row[3])), vb.body

    def status(self, now: float | None = None, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> list[ListStatus]:
        """Each list in force with its age (from headquarters' signed creation time) and whether it is stale."""
        now = time.time() if now is None else now
        return [ListStatus(i, now - i.created, now - i.created > stale_after_s) for i in self.lists()]


def _claimed(data: bytes, max_bundle_bytes: int) -> tuple[str | None, int | None]:
    """What a refused bundle claims to be, for the record; nothing when it is too broken to say."""
    try:
        h = peek_header(data, max_bundle_bytes)
    except BundleError:
        return None, None
    return h.list_id, h.version
