"""Evidence at headquarters (P10): holds in PostgreSQL, and exports signed with headquarters' key.

The same holds and the same export format as the unit (edge.evidence, edge.evidence_format), over headquarters'
tables. The units' own holds, synced as kind ``hold`` into ``unit_hold_events``, are listed with headquarters',
keep their reads from the purge and are exported with a case (each marked ``placed_on`` "unit <device>", with the
unit's user, case and reason), but are released only on the unit. As in the purge, a unit's hold counts only for
that unit's own reads; one whose read has not reached headquarters yet (holds travel before reads) cannot be
exported here and is named to the caller and in the export's record instead. A hold and its access-record entry
commit in one transaction (HqAuditLog joins the caller's), and a hold locks the read it holds (``FOR SHARE``) so that
a purge running at that moment either waits or skips the read.
An export carries headquarters' own access-record entries about the case or its reads and, for each unit whose
reads are in it and whose audit key is registered, that unit's entries about them, each with its chain's key.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..access.audit import AuditEntry, AuditError
from ..access.session import AccessDenied
from ..access.users import AuthError
from ..evidence import DETAIL_UUIDS, MAX_READS, Hold, HoldError, check_hold_purpose, check_release, concerns
from ..evidence_commands import holds_detail, print_holds
from ..evidence_format import (
    ACCESS_RECORD,
    READS,
    EvidenceError,
    ExportMeta,
    ExportResult,
    ExportWriter,
    image_name,
    iso_utc,
    public_pem,
)
from ..store.reads import check_uuid
from .access import HqSession, SignerError, add_hq_login_args, hq_cli_login, load_hq_signer

_HOLD_COLUMNS = (
    "id::text, read_uuid::text, case_number, reason, held_by, held_at, released_by, released_at, release_reason"
)
_READ_COLUMNS = (
    "uuid::text, device_id, camera_id, text, confidence, char_confidences, candidates, region, plate_format, box_x, "
    "box_y, box_w, box_h, first_seen, last_seen, best_seen, frames_seen, fix_source, fix_mode, lat, lon, alt_m, "
    "fix_time, fix_age_s, eph_m, speed_mps, track_deg, stored_at, received_at"
)
_HIT_COLUMNS = (
    "uuid::text, device_id, camera_id, read_text, read_confidence, seen_at, list_id, list_version, entry_id, "
    "wanted_plate, wanted_state, list_code, reason, instructions, case_number, entered_by, requesting_officer, "
    "synopsis, matched_text, match_kind, created_at, published_at, received_at"
)


def _hold(row: Sequence[Any]) -> Hold:
    return Hold(
        str(row[0]),
        str(row[1]),
        row[2],
        row[3],
        row[4],
        float(row[5]),
        row[6],
        None if row[7] is None else float(row[7]),
        row[8],
    )


class HqEvidence:
    """Holds and exports on one headquarters connection (autocommit; transactions are explicit here)."""

    def __init__(self, conn: psycopg.Connection, *, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._clock = clock

    def hold(
        self,
        read_uuids: Iterable[str],
        case_number: str,
        reason: str,
        user: str,
        record: Callable[[list[Hold]], object] | None = None,
    ) -> list[Hold]:
        """As edge.evidence.Evidence.hold; ``record`` runs inside the same transaction."""
        case_number, reason = check_hold_purpose(case_number, reason)
        uuids = list(dict.fromkeys(check_uuid(u, "read uuid") for u in read_uuids))
        if not uuids or len(uuids) > MAX_READS:
            raise HoldError(f"read uuids: give 1..{MAX_READS}")
        now = float(self._clock())
        out: list[Hold] = []
        with self._conn.transaction():
            for u in uuids:
                if not self._conn.execute("SELECT 1 FROM reads WHERE uuid = %s FOR SHARE", (u,)).fetchone():
                    raise HoldError(f"read {u} is not stored at headquarters (purged, or not yet received)")
                row = self._conn.execute(
                    f"SELECT {_HOLD_COLUMNS} FROM holds WHERE read_uuid = %s AND case_number = %s"
                    " AND released_at IS NULL",
                    (u, case_number),
                ).fetchone()
                if row:
                    out.append(_hold(row))
                    continue
                h = Hold(str(uuidlib.uuid4()), u, case_number, reason, user, now)
                self._conn.execute(
                    "INSERT INTO holds (id, read_uuid, case_number, reason, held_by, held_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (h.uuid, h.read_uuid, h.case_number, h.reason, h.held_by, h.held_at),
                )
                out.append(h)
            if record is not None:
                record(out)
        return out

    def release(
        self,
        *,
        hold_uuids: Sequence[str] = (),
        case_number: str | None = None,
        reason: str,
        user: str,
        record: Callable[[list[Hold]], object] | None = None,
    ) -> list[Hold]:
        check_release(hold_uuids, case_number, reason)
        now = float(self._clock())
        with self._conn.transaction():
            if case_number:
                rows = self._conn.execute(
                    f"SELECT {_HOLD_COLUMNS} FROM holds WHERE case_number = %s AND released_at IS NULL FOR UPDATE",
                    (case_number.strip(),),
                ).fetchall()
                if not rows:
                    raise HoldError(f"case {case_number}: no active hold")
            else:
                rows = []
                for u in dict.fromkeys(hold_uuids):
                    row = self._conn.execute(
                        f"SELECT {_HOLD_COLUMNS} FROM holds WHERE id = %s FOR UPDATE", (check_uuid(u, "hold uuid"),)
                    ).fetchone()
                    if not row:
                        raise HoldError(f"hold {u}: no such hold")
                    if row[7] is not None:
                        raise HoldError(f"hold {u}: already released")
                    rows.append(row)
            released = [
                Hold(str(r[0]), str(r[1]), r[2], r[3], r[4], float(r[5]), user, now, reason.strip()) for r in rows
            ]
            for h in released:
                self._conn.execute(
                    "UPDATE holds SET released_by = %s, released_at = %s, release_reason = %s WHERE id = %s",
                    (user, now, h.release_reason, h.uuid),
                )
            if record is not None:
                record(released)
        return released

    def holds(self, case_number: str | None = None, *, active_only: bool = False) -> list[Hold]:
        where, params = ["TRUE"], []
        if case_number:
            where.append("case_number = %s")
            params.append(case_number.strip())
        if active_only:
            where.append("released_at IS NULL")
        rows = self._conn.execute(
            f"SELECT {_HOLD_COLUMNS} FROM holds WHERE {' AND '.join(where)} ORDER BY held_at, id", params
        ).fetchall()
        return [_hold(r) for r in rows]

    def unit_holds(self, case_number: str | None = None, *, active_only: bool = False) -> list[Hold]:
        """The units' holds as synced (kind ``hold``), each with ``placed_on`` "unit <device>" and, once its release
        has arrived, who released it on the unit, when and why. Read-only here: a unit's hold is released on the
        unit. A release that came before its hold shows nothing until the hold comes (and then shows released)."""
        where, params = ["h.event = 'hold'"], []
        if case_number:
            where.append("h.case_number = %s")
            params.append(case_number.strip())
        if active_only:
            where.append("r.at IS NULL")
        rows = self._conn.execute(
            "SELECT h.hold_uuid::text, h.read_uuid::text, h.case_number, h.reason, h.user_name, h.at, r.user_name,"
            " r.at, r.reason, h.device_id FROM unit_hold_events h LEFT JOIN LATERAL (SELECT x.user_name, x.at,"
            " x.reason FROM unit_hold_events x WHERE x.device_id = h.device_id AND x.hold_uuid = h.hold_uuid"
            " AND x.event = 'release' ORDER BY x.at, x.uuid LIMIT 1) r ON TRUE"
            f" WHERE {' AND '.join(where)} ORDER BY h.at, h.device_id, h.hold_uuid",
            params,
        ).fetchall()
        return [replace(_hold(row), placed_on=f"unit {row[9]}") for row in rows]

    def exportable_unit_holds(self, case_number: str) -> tuple[list[Hold], list[Hold]]:
        """The case's active unit holds whose read is at headquarters, and those whose read has not arrived yet.
        A unit's hold on another unit's read is in neither: it covers nothing (as in the purge)."""
        holds = self.unit_holds(case_number, active_only=True)
        device_of = {
            str(r[0]): str(r[1])
            for r in self._conn.execute(
                "SELECT uuid::text, device_id FROM reads WHERE uuid = ANY(%s::uuid[])",
                (sorted({h.read_uuid for h in holds}),),
            ).fetchall()
        }
        ok = [h for h in holds if device_of.get(h.read_uuid) == _unit_of(h)]
        return ok, [h for h in holds if h.read_uuid not in device_of]

    def export(
        self,
        case_number: str,
        out: Path,
        *,
        signer: Ed25519PrivateKey,
        user: str,
        role: str,
        entries: Iterable[AuditEntry],
        record: Callable[[Mapping[str, Any]], object],
        left_out: Callable[[list[Hold]], object] | None = None,
    ) -> ExportResult:
        """As edge.evidence.Evidence.export, signed with headquarters' key; ``entries`` is hq_audit. The case's
        reads held at headquarters and those held on the units (exportable_unit_holds), each hold saying where.
        ``left_out`` is given the unit holds whose reads have not reached headquarters, once the export is written
        (the same ones its record names, not looked up again)."""
        unit_holds, missing = self.exportable_unit_holds(case_number)
        holds = [replace(h, placed_on="headquarters") for h in self.holds(case_number, active_only=True)]
        holds += unit_holds
        if not holds:
            if missing:
                raise HoldError(
                    f"case {case_number}: its reads are held only on unit(s) {_units(missing)} and have not reached "
                    "headquarters yet; export when the unit has synced, or on the unit"
                )
            raise HoldError(f"case {case_number}: no read is held for it (hold them first)")
        read_uuids = list(dict.fromkeys(h.read_uuid for h in holds))
        if len(read_uuids) > MAX_READS:
            raise HoldError(f"case {case_number}: more than {MAX_READS} reads in one export")
        wanted = set(read_uuids)
        writer = ExportWriter(out)
        try:
            reads = []
            for u in read_uuids:
                doc = self._read(u)
                doc["images"] = []
                for kind, jpeg in self._conn.execute(
                    "SELECT kind, jpeg FROM read_images WHERE read_uuid = %s ORDER BY kind", (u,)
                ).fetchall():
                    writer.add(image_name(u, kind), bytes(jpeg))
                    doc["images"].append(image_name(u, kind))
                doc["has_scene"] = image_name(u, "scene") in doc["images"]
                doc["holds"] = [h.to_json() for h in holds if h.read_uuid == u]
                doc["hits"] = self._hits(u)
                reads.append(doc)
            reads.sort(key=lambda d: (d["best_seen_epoch"], d["uuid"]))  # in the order they were seen
            writer.add_json(READS, {"case_number": case_number, "device": "headquarters", "reads": reads})
            chains = [
                {
                    "source": "headquarters",
                    "public_key": public_pem(signer.public_key()).decode(),
                    "entries": [e.to_json() for e in entries if concerns(e.to_json(), case_number, wanted)],
                }
            ]
            chains += self._unit_chains(sorted({str(r["device"]) for r in reads}), case_number, read_uuids)
            writer.add_json(ACCESS_RECORD, {"chains": chains})
            meta = ExportMeta(
                case_number,
                user,
                role,
                "headquarters",
                float(self._clock()),
                tuple(read_uuids),
                tuple(h.uuid for h in holds),
            )
            sha = writer.seal(meta, signer)
            record(
                {
                    "case_number": case_number,
                    "read_uuids": read_uuids[:DETAIL_UUIDS],
                    "hold_uuids": [h.uuid for h in holds][:DETAIL_UUIDS],
                    "held_on_units": sorted({_unit_of(h) for h in unit_holds}),
                    "not_received_read_uuids": sorted({h.read_uuid for h in missing})[:DETAIL_UUIDS],
                    "path": str(Path(out).resolve()),
                    "manifest_sha256": sha,
                }
            )
        except BaseException:
            writer.abort()
            raise
        result = writer.commit()
        if missing and left_out is not None:
            left_out(missing)
        return result

    def _read(self, u: str) -> dict[str, Any]:
        row = self._conn.execute(f"SELECT {_READ_COLUMNS} FROM reads WHERE uuid = %s", (u,)).fetchone()
        if row is None:
            raise EvidenceError(f"held read {u} is missing from the database")
        (
            uuid,
            device,
            camera,
            text,
            conf,
            char_conf,
            cands,
            region,
            fmt,
            bx,
            by,
            bw,
            bh,
            first,
            last,
            best,
            frames,
            fix_source,
            fix_mode,
            lat,
            lon,
            alt,
            fix_time,
            fix_age,
            eph,
            speed,
            track,
            stored,
            received,
        ) = row
        return {
            "uuid": uuid,
            "device": device,
            "camera_id": camera,
            "text": text,
            "confidence": round(conf, 4),
            "char_confidences": [round(float(c), 4) for c in char_conf],
            "candidates": [{"text": str(t), "confidence": round(float(c), 4)} for t, c in cands],
            "region": region,
            "format": fmt,
            "box": [bx, by, bw, bh],
            "first_seen": iso_utc(first),
            "last_seen": iso_utc(last),
            "best_seen": iso_utc(best),
            "best_seen_epoch": best,
            "frames_seen": frames,
            "fix": {
                "source": fix_source,
                "mode": fix_mode,
                "lat": lat,
                "lon": lon,
                "alt_m": alt,
                "time": iso_utc(fix_time),
                "age_s": fix_age,
                "eph_m": eph,
                "speed_mps": speed,
                "track_deg": track,
            },
            "stored_at": iso_utc(stored),
            "received_at": iso_utc(received),
        }

    def _hits(self, read_uuid: str) -> list[dict[str, Any]]:
        names = [c.strip().removesuffix("::text") for c in _HIT_COLUMNS.split(",")]
        out = []
        for row in self._conn.execute(
            f"SELECT {_HIT_COLUMNS} FROM hits WHERE read_uuid = %s ORDER BY created_at", (read_uuid,)
        ).fetchall():
            hit = dict(zip(names, row, strict=True))
            for t in ("seen_at", "created_at", "published_at", "received_at"):
                hit[t] = iso_utc(hit[t])
            hit["outcomes"] = [
                {"uuid": o[0], "outcome": o[1], "officer": o[2], "at": iso_utc(o[3]), "note": o[4]}
                for o in self._conn.execute(
                    "SELECT uuid::text, outcome, officer, at, note FROM hit_outcomes WHERE hit_uuid = %s ORDER BY at",
                    (hit["uuid"],),
                ).fetchall()
            ]
            out.append(hit)
        return out

    def _unit_chains(self, devices: list[str], case_number: str, read_uuids: list[str]) -> list[dict[str, Any]]:
        """Each unit's received entries about the case or its reads, with the unit's registered audit key; a unit
        without a registered key is left out (its entries could not be checked by anyone)."""
        chains = []
        for device in devices:
            row = self._conn.execute("SELECT audit_key FROM devices WHERE device_id = %s", (device,)).fetchone()
            if not row or not row[0]:
                continue
            docs = self._conn.execute(
                "SELECT data FROM audit WHERE device_id = %s AND (data->'detail'->'read_uuids' ?| %s"
                " OR data->'detail'->>'case_number' = %s OR data->'detail'->'purpose'->>'case_number' = %s)"
                " ORDER BY (data->>'seq')::bigint",
                (device, read_uuids, case_number, case_number),
            ).fetchall()
            chains.append({"source": f"unit {device}", "public_key": str(row[0]), "entries": [d[0] for d in docs]})
        return chains


def _unit_of(h: Hold) -> str:
    """The device of a unit hold (``placed_on`` "unit <device>")."""
    return (h.placed_on or "").removeprefix("unit ")


def _units(holds: Iterable[Hold]) -> str:
    return ", ".join(sorted({_unit_of(h) for h in holds}))


# -- commands -------------------------------------------------------------------------------------------------------


def _session(args: argparse.Namespace, what: str, body: Callable[[HqSession, psycopg.Connection], int]) -> int:
    from .commands import HqError, _connect_db

    try:
        with _connect_db(args) as conn:
            return body(hq_cli_login(args, conn, what), conn)
    except (
        AuthError,
        AccessDenied,
        AuditError,
        SignerError,
        HqError,
        EvidenceError,
        ValueError,
        OSError,
        psycopg.Error,
    ) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2


def cmd_hold(args: argparse.Namespace) -> int:
    def body(s: HqSession, conn: psycopg.Connection) -> int:
        holds = HqEvidence(conn).hold(
            args.read_uuids,
            args.case,
            args.reason,
            s.user.name,
            record=lambda hs: s.record(
                "evidence.hold", reason=f"case {args.case}: {args.reason}", detail=holds_detail(hs)
            ),
        )
        for h in holds:
            print(f"{h.uuid}  read {h.read_uuid}  case {h.case_number}  held by {h.held_by} at {iso_utc(h.held_at)}")
        print(f"{len(holds)} read(s) held for case {holds[0].case_number} at headquarters")
        return 0

    return _session(args, "evidence.hold", body)


def cmd_release(args: argparse.Namespace) -> int:
    def body(s: HqSession, conn: psycopg.Connection) -> int:
        released = HqEvidence(conn).release(
            hold_uuids=args.hold_uuids,
            case_number=args.case,
            reason=args.reason,
            user=s.user.name,
            record=lambda hs: s.record("evidence.release", reason=args.reason, detail=holds_detail(hs)),
        )
        print(f"{len(released)} hold(s) released at headquarters")
        return 0

    return _session(args, "evidence.release", body)


def cmd_list(args: argparse.Namespace) -> int:
    def body(s: HqSession, conn: psycopg.Connection) -> int:
        ev = HqEvidence(conn)
        holds = [replace(h, placed_on="headquarters") for h in ev.holds(args.case, active_only=not args.all)]
        holds += ev.unit_holds(args.case, active_only=not args.all)
        holds.sort(key=lambda h: (h.held_at, h.uuid))
        print_holds(s, holds, args.case, args.json)
        return 0

    return _session(args, "evidence.hold", body)


def cmd_export(args: argparse.Namespace) -> int:
    def body(s: HqSession, conn: psycopg.Connection) -> int:
        ev = HqEvidence(conn)
        missing: list[Hold] = []
        res = ev.export(
            args.case,
            args.out,
            signer=load_hq_signer(args),
            user=s.user.name,
            role=s.user.role,
            entries=s.audit.entries(),
            record=lambda d: s.record("evidence.export", reason=f"case {args.case}", detail=d),
            left_out=missing.extend,
        )
        print(f"exported case {args.case}: {res.files} file(s), {res.bytes} bytes to {res.path}")
        if missing:
            print(
                f"alpr-edge: left out {len({h.read_uuid for h in missing})} read(s) held on unit(s) {_units(missing)}"
                " that have not reached headquarters: " + ", ".join(sorted({h.read_uuid for h in missing})),
                file=sys.stderr,
            )
        print(
            f"manifest SHA-256 {res.manifest_sha256}; signed by headquarters' key; check it with: "
            f"alpr-edge evidence verify {res.path} --public-key HQ_PUBLIC_KEY.pem"
        )
        return 0

    return _session(args, "evidence.export", body)


def register(hsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..evidence_commands import cmd_verify

    ev = hsub.add_parser(
        "evidence",
        help="holds at headquarters and signed exports of a case",
        description="Evidence at headquarters (P10): a held read is never purged; an export is signed with "
        "headquarters' key. Every command but verify needs a headquarters login and is recorded in hq_audit.",
    )
    esub = ev.add_subparsers(dest="hq_evidence_command", required=True, metavar="ACTION", help="what to do")
    hold = esub.add_parser(
        "hold",
        help="keep reads for a case (investigator or administrator)",
        description="Hold reads (by uuid) for a case with a reason; kept until released.",
    )
    hold.add_argument("read_uuids", nargs="+", metavar="READ_UUID", help="the reads to hold")
    hold.add_argument("--case", required=True, help="case or call-for-service number")
    hold.add_argument("--reason", required=True, help="why the reads are kept")
    add_hq_login_args(hold)
    hold.set_defaults(func=cmd_hold)
    rel = esub.add_parser(
        "release",
        help="end holds (administrator only)",
        description="Release holds by uuid or every active hold of a case; kept on file.",
    )
    rel.add_argument("hold_uuids", nargs="*", metavar="HOLD_UUID", help="the holds to release")
    rel.add_argument("--case", default=None, help="release every active hold of this case instead")
    rel.add_argument("--reason", required=True, help="why the reads need no longer be kept")
    add_hq_login_args(rel)
    rel.set_defaults(func=cmd_release)
    lst = esub.add_parser(
        "list",
        help="list holds, headquarters' and the units' (no plate text)",
        description="List holds, active ones by default: those placed at headquarters and those placed on the units "
        "(synced with their reads; released on the unit only), each marked with where it was placed, and its reason.",
    )
    lst.add_argument("--case", default=None, help="only this case's holds")
    lst.add_argument("--all", action="store_true", help="released holds too")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    add_hq_login_args(lst)
    lst.set_defaults(func=cmd_list)
    exp = esub.add_parser(
        "export",
        help="write a case's held reads (held at headquarters or on a unit), images and access record, signed",
        description="As alpr-edge evidence export, from headquarters' database, signed with headquarters' key "
        "(--signing-key): the reads held for the case at headquarters and those held for it on the units (each "
        "hold says where it was placed, by whom, the case and the reason; a unit's hold covers that unit's reads "
        "only). A read held on a unit that has not reached headquarters yet is left out and named on stderr. The "
        "units' own access-record entries about the reads are included with their keys. Investigator or "
        "administrator; recorded in headquarters' access record.",
    )
    exp.add_argument("--case", required=True, help="the case whose held reads are exported")
    exp.add_argument("out", type=Path, metavar="OUT", help="new folder, or .tar/.tar.gz/.zip archive, to write")
    add_hq_login_args(exp)
    exp.set_defaults(func=cmd_export)
    ver = esub.add_parser(
        "verify",
        help="prove an export unaltered (same as alpr-edge evidence verify)",
        description="Check an export's signature and files; exit 0 unaltered, 1 not, 2 not an export.",
    )
    ver.add_argument("path", type=Path, metavar="DIR_OR_ARCHIVE", help="the export folder or archive")
    ver.add_argument("--public-key", type=Path, default=None, help="headquarters' public key (PEM)")
    ver.set_defaults(func=cmd_verify)
