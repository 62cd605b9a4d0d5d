"""Settings pushed by headquarters: signed, versioned, limited to what is safe to change from afar.

Headquarters publishes a settings document (retained, QoS 1) for one unit (``alpr/<device>/config``) or for an
agency's fleet (``alpr/fleet/<agency>/config``). The unit believes it only if it is signed by a key it already
trusts for hot lists (``hotlist.public_keys``), names this unit or its agency, has a higher version than the one in
force from the same topic, changes only the keys in ``REMOTE_KEYS`` and gives a valid configuration once merged.

Why so narrow: a remote setting can tune how the unit works (retention, batch sizes, hot list refresh, reading
thresholds) but never where data goes or who the unit is (broker, certificates, keys, paths, cameras and their
capture zones, P2). Someone holding headquarters' signing key can then make a unit slower or keep less, but cannot
redirect its reads.

Accepted documents are kept in ``<data_dir>/remote-config.json`` (written atomically, fsynced) and take effect at
the next start: the configuration is read once and passed in. The runner restarts the daemon when a new one arrives.
A stored overlay that no longer validates (after a software update) is ignored with a warning: a unit never fails
to start because of a remote setting.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import os
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .. import config
from .protocol import ProtocolError, check_device

log = logging.getLogger(__name__)

SCHEMA = "alpr-edge/config/1"
MAX_DOC_BYTES = 64 * 1024
OVERLAY_FILE = "remote-config.json"

# section -> keys headquarters may set. Nothing here names a host, a path, a key, a camera or the unit's identity.
REMOTE_KEYS: Mapping[str, frozenset[str]] = {
    "store": frozenset({"retention_days", "min_free_mb", "scene_min_free_mb"}),
    "pipeline": frozenset(
        {"min_frames", "single_frame_confidence", "track_gap_s", "jpeg_quality", "scene_max_width", "status_interval_s"}
    ),
    "models": frozenset({"detector_threshold", "min_read_confidence", "ocr_views"}),
    "hotlist": frozenset({"refresh_interval_min", "stale_after_h", "lookalike_limit", "recheck_hours"}),
    "sync": frozenset(
        {"batch_max_items", "batch_max_kb", "bandwidth_kbps", "ack_timeout_s", "warn_after_days", "critical_after_days"}
    ),
}


class RemoteConfigError(ValueError):
    """A settings document that must not be used; the text says why (it holds no secrets)."""


@dataclass(frozen=True)
class ConfigDoc:
    scope: str  # "device" or "agency"
    target: str  # the device id or the agency id
    version: int  # strictly increasing per topic; headquarters uses the publication time in milliseconds
    issued_at: float
    settings: Mapping[str, Mapping[str, Any]]

    def topic(self) -> str:
        return config_topic(self.scope, self.target)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "scope": self.scope,
            "target": self.target,
            "version": self.version,
            "issued_at": self.issued_at,
            "settings": {s: dict(v) for s, v in self.settings.items()},
        }


def config_topic(scope: str, target: str) -> str:
    if scope == "device":
        return f"alpr/{check_device(target)}/config"
    if scope == "agency":
        return f"alpr/fleet/{check_device(target)}/config"
    raise RemoteConfigError(f"scope: {scope!r} is not device or agency")


def check_settings(settings: object) -> dict[str, dict[str, Any]]:
    """Only REMOTE_KEYS, with scalar values; RemoteConfigError names the first offending key."""
    if not isinstance(settings, dict) or not settings:
        raise RemoteConfigError("settings: expected a non-empty table of sections")
    out: dict[str, dict[str, Any]] = {}
    for section, values in settings.items():
        allowed = REMOTE_KEYS.get(section)
        if allowed is None:
            raise RemoteConfigError(
                f"settings.{section}: not a section headquarters may set (allowed: {', '.join(sorted(REMOTE_KEYS))})"
            )
        if not isinstance(values, dict) or not values:
            raise RemoteConfigError(f"settings.{section}: expected a non-empty table")
        for k, v in values.items():
            if k not in allowed:
                raise RemoteConfigError(
                    f"settings.{section}.{k}: may not be set by headquarters (allowed: {', '.join(sorted(allowed))})"
                )
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise RemoteConfigError(f"settings.{section}.{k}: expected a finite number")
        out[section] = dict(values)
    return out


def merge(raw: Mapping[str, Any], settings: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``raw`` (parsed TOML) with ``settings`` laid over it; neither is changed."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for section, values in settings.items():
        base = out.get(section, {})
        if not isinstance(base, dict):
            raise RemoteConfigError(f"{section}: not a table in the local configuration")
        out[section] = {**base, **values}
    return out


def sign_doc(doc: ConfigDoc, key: Ed25519PrivateKey) -> bytes:
    """The message headquarters publishes: JSON with the document (base64 of its exact bytes) and its signature."""
    check_settings(doc.settings)
    config_topic(doc.scope, doc.target)
    body = json.dumps(doc.to_json(), sort_keys=True, separators=(",", ":")).encode()
    sig = key.sign(body)
    return json.dumps({"doc": base64.b64encode(body).decode(), "sig": base64.b64encode(sig).decode()}).encode()


def verify_doc(data: bytes, trusted: Sequence[Ed25519PublicKey]) -> ConfigDoc:
    """The document in ``data`` if a trusted key signed it and it is well formed; RemoteConfigError otherwise."""
    if len(data) > MAX_DOC_BYTES:
        raise RemoteConfigError(f"{len(data)} bytes, over the {MAX_DOC_BYTES} limit")
    try:
        env = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RemoteConfigError(f"not JSON: {e}") from e
    if not isinstance(env, dict) or set(env) != {"doc", "sig"}:
        raise RemoteConfigError("expected an object with doc and sig")
    try:
        body = base64.b64decode(env["doc"], validate=True)
        sig = base64.b64decode(env["sig"], validate=True)
    except (binascii.Error, TypeError, ValueError) as e:
        raise RemoteConfigError("doc and sig must be base64") from e
    if not trusted:
        raise RemoteConfigError("no trusted headquarters key configured (hotlist.public_keys)")
    for key in trusted:
        try:
            key.verify(sig, body)
            break
        except InvalidSignature:
            continue
    else:
        raise RemoteConfigError("signature does not verify with any trusted headquarters key")
    try:
        d = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RemoteConfigError(f"signed document is not JSON: {e}") from e
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise RemoteConfigError(f"schema: expected {SCHEMA}")
    version, issued = d.get("version"), d.get("issued_at")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < 2**53:
        raise RemoteConfigError("version: expected a positive integer")
    if isinstance(issued, bool) or not isinstance(issued, int | float) or not math.isfinite(issued):
        raise RemoteConfigError("issued_at: expected a time")
    scope, target = d.get("scope"), d.get("target")
    if not isinstance(scope, str) or not isinstance(target, str):
        raise RemoteConfigError("scope and target: expected strings")
    try:
        config_topic(scope, target)
    except ProtocolError as e:
        raise RemoteConfigError(f"target: {e}") from e
    return ConfigDoc(scope, target, version, float(issued), check_settings(d.get("settings")))


# -- the overlay file ---------------------------------------------------------------------------------------------


def overlay_path(data_dir: Path) -> Path:
    return data_dir / OVERLAY_FILE


def read_overlay(path: Path) -> dict[str, ConfigDoc]:
    """topic -> document in force; {} when there is none. The file holds only verified documents."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise RemoteConfigError(f"{path}: unreadable ({e})") from e
    if not isinstance(raw, dict):
        raise RemoteConfigError(f"{path}: expected an object")
    out = {}
    for topic, d in raw.items():
        if not isinstance(d, dict):
            raise RemoteConfigError(f"{path}: {topic}: expected an object")
        try:
            doc = ConfigDoc(d["scope"], d["target"], int(d["version"]), float(d["issued_at"]),
                            check_settings(d["settings"]))  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise RemoteConfigError(f"{path}: {topic}: {e}") from e
        out[topic] = doc
    return out


def _write_overlay(path: Path, docs: Mapping[str, ConfigDoc]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps({t: d.to_json() for t, d in sorted(docs.items())}, indent=1, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _ordered(docs: Mapping[str, ConfigDoc]) -> list[ConfigDoc]:
    """Fleet settings first, then the unit's own: a unit-specific value wins."""
    return sorted(docs.values(), key=lambda d: (d.scope != "agency", d.topic()))


def read_raw(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise config.ConfigError(f"{path}: {e}") from e


def load(path: Path) -> tuple[config.Config, list[ConfigDoc], str | None]:
    """The configuration with headquarters' settings in force laid over it: (config, documents applied, problem).

    The local file is validated on its own first (its errors are the technician's to fix and stop the start); a
    stored overlay that makes it invalid is ignored and reported as ``problem``.
    """
    base = config.load(path)
    opath = overlay_path(base.unit.data_dir)
    try:
        docs = read_overlay(opath)
    except RemoteConfigError as e:
        return base, [], f"headquarters settings ignored: {e}"
    if not docs:
        return base, [], None
    applied = _ordered(docs)
    try:
        raw = read_raw(path)
        for d in applied:
            raw = merge(raw, d.settings)
        return config.parse(raw, path.resolve().parent, path), applied, None
    except (config.ConfigError, RemoteConfigError) as e:
        return base, [], f"headquarters settings ignored: {e}"


@dataclass(frozen=True)
class RemoteConfigStatus:
    versions: Mapping[str, int]  # topic -> version stored
    pending_restart: bool  # a document arrived that is not in force yet
    problem: str | None  # the last document refused, and why


class RemoteConfig:
    """Receives settings documents from the uplink (``offer``, any thread), verifies them against the local
    configuration and stores the accepted ones; ``on_accepted`` is told (the runner restarts the daemon)."""

    def __init__(
        self,
        config_path: Path,
        cfg: config.Config,
        trusted: Sequence[Ed25519PublicKey],
        on_accepted: Callable[[ConfigDoc], None] | None = None,
    ) -> None:
        self.config_path = config_path
        self.device = cfg.unit.id
        self.agency = cfg.sync.agency
        self.trusted = tuple(trusted)
        self.path = overlay_path(cfg.unit.data_dir)
        self.on_accepted = on_accepted
        self._lock = threading.Lock()
        try:
            self._docs = read_overlay(self.path)
        except RemoteConfigError as e:
            log.warning("%s", e)
            self._docs = {}
        self._pending = False
        self._problem: str | None = None

    def topics(self) -> list[str]:
        out = [config_topic("device", self.device)]
        if self.agency:
            out.append(config_topic("agency", self.agency))
        return out

    def status(self) -> RemoteConfigStatus:
        with self._lock:
            return RemoteConfigStatus({t: d.version for t, d in self._docs.items()}, self._pending, self._problem)

    def offer(self, data: bytes, topic: str) -> ConfigDoc | None:
        """Verify and store one received document; the accepted document, or None (refused or not new)."""
        if not data:  # headquarters cleared the retained message: the settings stay until it sends new ones
            return None
        try:
            doc = self._check(data, topic)
        except (RemoteConfigError, config.ConfigError) as e:
            with self._lock:
                self._problem = f"{topic}: {e}"
            log.warning("headquarters settings refused: %s: %s", topic, e)
            return None
        if doc is None:
            return None
        log.info("headquarters settings version %d accepted from %s; they take effect at restart", doc.version, topic)
        cb = self.on_accepted
        if cb is not None:
            cb(doc)
        return doc

    def _check(self, data: bytes, topic: str) -> ConfigDoc | None:
        doc = verify_doc(data, self.trusted)
        if topic not in self.topics() or doc.topic() != topic:
            raise RemoteConfigError(f"document for {doc.scope} {doc.target!r} arrived on {topic}: not for this unit")
        with self._lock:
            old = self._docs.get(topic)
            if old is not None and doc.version <= old.version:
                if doc.version == old.version and doc.settings == old.settings:
                    return None  # the retained copy again, after a reconnect
                raise RemoteConfigError(f"version {doc.version} is not newer than {old.version} (a replay?)")
            docs = {**self._docs, topic: doc}
            raw = read_raw(self.config_path)
            for d in _ordered(docs):
                raw = merge(raw, d.settings)
            config.parse(raw, self.config_path.resolve().parent, self.config_path)  # ConfigError: refused
            _write_overlay(self.path, docs)
            self._docs = docs
            self._pending = True
            self._problem = None
        return doc


def sha256_of(doc: ConfigDoc) -> str:
    return hashlib.sha256(json.dumps(doc.to_json(), sort_keys=True).encode()).hexdigest()


def new_version() -> int:
    """Headquarters' default version: milliseconds since the epoch (increases with every publication)."""
    return int(time.time() * 1000)
