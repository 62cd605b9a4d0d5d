"""``alpr-edge hq devices register DEVICE --audit-key PEM_FILE``: the unit's public key for its access record.

Headquarters verifies each unit's chain with this key (hq audit verify), so it is registered once, at provisioning,
from the PEM the unit printed. Replacing a registered key needs --replace (a new key would also make a forged chain
verify) and, like every registration, is recorded in headquarters' own access record, by the server's
administrator ("root", role "system"), atomically with the change.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ..access.audit import AuditError, load_public_pem
from ..hotlist import bundle as hlb
from ..sync import protocol
from .access import HqAuditLog, SignerError, add_signing_key_arg, load_hq_signer

ADMIN = ("root", "system")  # who is recorded: the server's administrator, with the database credentials
MAX_PEM_BYTES = 4096


class RegisterError(ValueError):
    """The key was not registered; the message says why."""


@dataclass(frozen=True)
class Registered:
    device: str
    key_id: str
    outcome: str  # "registered", "replaced" or "unchanged"
    old_key_id: str | None = None


def read_public_pem(path: Path) -> tuple[str, str]:
    """(normalised PEM, key id) of an Ed25519 public key file; RegisterError naming the file and the fault."""
    try:
        if path.stat().st_size > MAX_PEM_BYTES:
            raise RegisterError(f"{path}: over {MAX_PEM_BYTES} bytes, not a public key file")
    except OSError as e:
        raise RegisterError(f"cannot read {path}: {e.strerror}") from e
    try:
        key = hlb.load_public_key(path)
    except hlb.BundleError as e:
        raise RegisterError(str(e)) from e
    return hlb.public_key_pem(key).decode("ascii"), hlb.key_id(key)


def _key_id(pem: str) -> str:
    try:
        return hlb.key_id(load_public_pem(pem))
    except ValueError:
        return "unreadable"


def register_key(
    conn: psycopg.Connection, audit: HqAuditLog, device: str, pem: str, key_id: str, *, replace: bool, now: float
) -> Registered:
    """Store ``pem`` as ``device``'s audit key (creating the device's row if it never connected) and record it, in
    one transaction. RegisterError when another key is registered and ``replace`` is False."""
    try:
        protocol.check_device(device)
    except protocol.ProtocolError as e:
        raise RegisterError(str(e)) from e
    with conn.transaction():
        row = conn.execute("SELECT audit_key FROM devices WHERE device_id = %s FOR UPDATE", (device,)).fetchone()
        old = row[0] if row else None
        if old is not None and old.strip() == pem.strip():
            return Registered(device, key_id, "unchanged")
        old_id = _key_id(old) if old is not None else None
        if old is not None and not replace:
            raise RegisterError(
                f"{device} already has audit key {old_id}; give --replace to replace it with {key_id} (recorded)"
            )
        if row is None:
            # a unit registered before its first batch: it counts as never synced from now on (P9)
            conn.execute(
                "INSERT INTO devices (device_id, first_seen, last_seen, audit_key) VALUES (%s, %s, %s, %s)",
                (device, now, now, pem),
            )
        else:
            conn.execute("UPDATE devices SET audit_key = %s WHERE device_id = %s", (pem, device))
        action = "device.audit_key.replace" if old is not None else "device.audit_key.register"
        detail = {"device": device, "key_id": key_id, "old_key_id": old_id, "os_user": getpass.getuser()}
        audit.record(*ADMIN, action, detail=detail)
    return Registered(device, key_id, "replaced" if old is not None else "registered", old_id)


def cmd_register(args: argparse.Namespace) -> int:
    from .commands import HqError, _connect_db

    try:
        pem, key_id = read_public_pem(args.audit_key)
        signer = load_hq_signer(args)
        with _connect_db(args) as conn:
            got = register_key(
                conn, HqAuditLog(conn, signer), args.device, pem, key_id, replace=args.replace, now=time.time()
            )
    except (RegisterError, SignerError, AuditError, HqError, psycopg.Error) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    if got.outcome == "unchanged":
        print(f"{got.device}: audit key {got.key_id} was already registered; nothing changed")
    elif got.outcome == "replaced":
        print(f"{got.device}: audit key {got.old_key_id} replaced by {got.key_id} (recorded)")
    else:
        print(f"{got.device}: audit key {got.key_id} registered (recorded)")
    return 0


def add_register(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``register`` under ``hq devices``."""
    from .commands import add_db_url_arg

    reg = dsub.add_parser(
        "register",
        help="register a unit's public key for its access record",
        description="Store the unit's Ed25519 public key (the PEM it printed when its audit key was made) so that "
        "'alpr-edge hq audit verify' can check its access record (issue 7, P13). The unit may not have connected "
        "yet. Replacing a registered key needs --replace. Every registration is recorded in headquarters' own "
        "access record, signed with headquarters' key.",
    )
    reg.add_argument("device", metavar="DEVICE", help="the unit's device id (unit.id in its configuration)")
    reg.add_argument("--audit-key", type=Path, required=True, metavar="PEM_FILE", help="the unit's public key (PEM)")
    reg.add_argument("--replace", action="store_true", help="replace a key that is already registered (recorded)")
    add_signing_key_arg(reg)
    add_db_url_arg(reg, under_devices=True)
    reg.set_defaults(func=cmd_register)
