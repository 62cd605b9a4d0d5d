"""Settings pushed from headquarters (issue 6): signed, versioned, limited to safe keys, applied by a restart."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import config
from edge.hotlist import bundle as hlb
from edge.store.keys import create_key_file
from edge.sync import remote_config as rc

from .footage import daemon_config, write_passes
from .sync_env import Pki, TlsBroker, mqtt_client, needs_mosquitto, pki_fixture, tls_broker_fixture  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def unit_config(tmp: Path, extra: str = "") -> Path:
    frames = tmp / "frames"
    frames.mkdir(exist_ok=True)
    return daemon_config(tmp, frames, extra='[sync]\nenabled = true\nhost = "127.0.0.1"\nagency = "pdx"\n' + extra)


def doc(settings: dict[str, dict[str, float]], version: int = 10, scope: str = "device",
        target: str = "test-unit") -> rc.ConfigDoc:  # fmt: skip
    return rc.ConfigDoc(scope, target, version, time.time(), settings)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def remote(tmp_path: Path, key: Ed25519PrivateKey, accepted: list[rc.ConfigDoc] | None = None) -> rc.RemoteConfig:
    path = unit_config(tmp_path)
    cfg = config.load(path)
    cfg.unit.data_dir.mkdir(parents=True, exist_ok=True)
    return rc.RemoteConfig(path, cfg, [key.public_key()], accepted.append if accepted is not None else None)


def test_a_signed_document_is_stored_and_applied_at_the_next_load(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    accepted: list[rc.ConfigDoc] = []
    r = remote(tmp_path, key, accepted)
    assert r.topics() == ["alpr/test-unit/config", "alpr/fleet/pdx/config"]
    got = r.offer(rc.sign_doc(doc({"store": {"retention_days": 21}, "sync": {"bandwidth_kbps": 64}}), key),
                  "alpr/test-unit/config")  # fmt: skip
    assert got is not None and accepted == [got]
    assert r.status().pending_restart and r.status().versions == {"alpr/test-unit/config": 10}
    cfg, applied, problem = rc.load(tmp_path / "edge.toml")
    assert problem is None and [d.version for d in applied] == [10]
    assert cfg.store.retention_days == 21 and cfg.sync.bandwidth_kbps == 64
    assert cfg.store.key_file == tmp_path / "data" / "db.key"  # everything else as the local file says
    # the retained copy again after a reconnect: nothing new, nothing refused
    assert r.offer(rc.sign_doc(doc({"store": {"retention_days": 21}, "sync": {"bandwidth_kbps": 64}}), key),
                   "alpr/test-unit/config") is None  # fmt: skip
    assert r.status().problem is None


def test_the_units_own_settings_win_over_its_fleets(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    r = remote(tmp_path, key)
    assert r.offer(rc.sign_doc(doc({"store": {"retention_days": 21}}, 5), key), "alpr/test-unit/config")
    fleet = doc({"store": {"retention_days": 45}, "hotlist": {"stale_after_h": 12}}, 7, "agency", "pdx")
    assert r.offer(rc.sign_doc(fleet, key), "alpr/fleet/pdx/config")
    cfg, applied, _ = rc.load(tmp_path / "edge.toml")
    assert [d.scope for d in applied] == ["agency", "device"]
    assert cfg.store.retention_days == 21 and cfg.hotlist.stale_after_h == 12


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sync": {"host": "evil.example"}}, "settings.sync.host: may not be set by headquarters"),
        ({"store": {"key_file": "/tmp/k"}}, "settings.store.key_file: may not be set"),
        ({"camera": {"zones": 1}}, "settings.camera: not a section headquarters may set"),
        ({"unit": {"id": 1}}, "settings.unit: not a section"),
        ({"store": {"retention_days": "forever"}}, "settings.store.retention_days: expected a finite number"),
        ({"store": {"retention_days": True}}, "expected a finite number"),
        ({"store": {"retention_days": 0.5}}, "retention_days"),  # outside the local bounds: config.parse refuses
        ({"sync": {"warn_after_days": 28, "critical_after_days": 27}}, "critical_after_days"),
    ],
)
def test_unsafe_or_invalid_settings_are_refused_and_nothing_changes(
    tmp_path: Path, key: Ed25519PrivateKey, settings: dict[str, dict[str, object]], message: str
) -> None:
    r = remote(tmp_path, key)
    body = json.dumps(doc({"store": {"retention_days": 21}}).to_json() | {"settings": settings}, sort_keys=True,
                      separators=(",", ":")).encode()  # fmt: skip
    data = json.dumps({"doc": base64.b64encode(body).decode(),
                       "sig": base64.b64encode(key.sign(body)).decode()}).encode()  # fmt: skip
    assert r.offer(data, "alpr/test-unit/config") is None
    st = r.status()
    assert st.problem is not None and message in st.problem
    assert not st.pending_restart and not rc.overlay_path(tmp_path / "data").exists()


def test_forged_replayed_misaddressed_and_malformed_documents_are_refused(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    r = remote(tmp_path, key)
    good = rc.sign_doc(doc({"store": {"retention_days": 21}}, 10), key)
    cases = [
        (rc.sign_doc(doc({"store": {"retention_days": 21}}), Ed25519PrivateKey.generate()), "signature"),
        (good.replace(b'"sig": "', b'"sig": "AAAA'), "signature"),
        (b"not json", "not JSON"),
        (b'{"doc": "!!", "sig": ""}', "base64"),
        (b"x" * (rc.MAX_DOC_BYTES + 1), "over the"),
        (rc.sign_doc(doc({"store": {"retention_days": 21}}, target="other-unit"), key), "not for this unit"),
    ]
    for data, message in cases:
        assert r.offer(data, "alpr/test-unit/config") is None
        assert message in (r.status().problem or ""), (message, r.status().problem)
    assert r.offer(good, "alpr/other-unit/config") is None  # a topic that is not ours
    assert not rc.overlay_path(tmp_path / "data").exists()
    assert r.offer(good, "alpr/test-unit/config") is not None
    older = rc.sign_doc(doc({"store": {"retention_days": 60}}, 9), key)
    assert r.offer(older, "alpr/test-unit/config") is None
    assert "not newer" in (r.status().problem or "")
    assert rc.load(tmp_path / "edge.toml")[0].store.retention_days == 21


def test_a_stored_overlay_that_no_longer_validates_is_ignored_not_fatal(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    r = remote(tmp_path, key)
    assert r.offer(rc.sign_doc(doc({"sync": {"warn_after_days": 20}}), key), "alpr/test-unit/config")
    # the technician later sets a critical threshold below what headquarters set for the warning
    path = tmp_path / "edge.toml"
    path.write_text(path.read_text().replace('agency = "pdx"', 'agency = "pdx"\ncritical_after_days = 15'))
    cfg, applied, problem = rc.load(path)
    assert applied == [] and problem is not None and "critical_after_days" in problem
    assert cfg.sync.warn_after_days == 7 and cfg.sync.critical_after_days == 15
    rc.overlay_path(tmp_path / "data").write_text("{garbage")
    cfg, applied, problem = rc.load(path)
    assert applied == [] and problem is not None and "unreadable" in problem


@needs_mosquitto
def test_daemon_takes_settings_from_headquarters_over_tls_and_restarts_with_them(
    tmp_path: Path, pki: Pki, tls_broker: TlsBroker
) -> None:
    """End to end: `hq publish-config` through the production broker config and ACL; the running unit verifies,
    stores, restarts itself and runs on with the new value; a unit cannot publish settings for itself."""
    frames = tmp_path / "frames"
    write_passes(frames, ["7ABC123"])
    create_key_file(tmp_path / "data" / "db.key")
    hq_key, hq_pub = tmp_path / "hq.pem", tmp_path / "hq.pub.pem"
    hlb.write_keypair(hq_key, hq_pub)
    dev, hqc = pki.device("test-unit"), pki.hq("publisher")
    cfg = daemon_config(
        tmp_path,
        frames,
        loop=True,
        fps=5,
        extra=f'[hotlist]\npublic_keys = ["{hq_pub}"]\n[sync]\nenabled = true\nhost = "127.0.0.1"\n'
        f'port = {tls_broker.port}\nca_file = "{dev.ca}"\ncert_file = "{dev.cert}"\nkey_file = "{dev.key}"\n',
    )
    settings = tmp_path / "settings.toml"
    settings.write_text("[store]\nretention_days = 14\n")
    with mqtt_client(pki, "test-unit", tls_broker.port) as unit:  # the ACL: a unit may not set its own settings
        assert unit.publish("alpr/test-unit/config", b"{}", retain=True).is_failure
    out_file = (tmp_path / "out.txt").open("w")
    p = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg), "--forever"],
                         stdout=out_file, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        time.sleep(2)
        pub = subprocess.run(
            [sys.executable, "-m", "edge", "hq", "publish-config", str(settings), "--device", "test-unit",
             "--signing-key", str(hq_key), "--broker", "127.0.0.1", "--port", str(tls_broker.port),
             "--ca", str(hqc.ca), "--cert", str(hqc.cert), "--key", str(hqc.key), "--timeout", "10"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert pub.returncode == 0, pub.stderr
        assert "store.retention_days" in pub.stdout
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            text = (tmp_path / "out.txt").read_text()
            if "restarting with headquarters' new settings" in text and text.count("read(s) stored") >= 1:
                break
            time.sleep(0.3)
        assert "restarting with headquarters' new settings" in text, text
        time.sleep(2)  # the second run is up with the settings (and the retained copy is not "new" again)
        assert p.poll() is None, (tmp_path / "out.txt").read_text()
    finally:
        p.terminate()
        p.wait(timeout=60)
        out_file.close()
    text = (tmp_path / "out.txt").read_text()
    assert text.count("restarting with headquarters' new settings") == 1, text
    assert p.returncode == 0, text
    loaded, _, problem = rc.load(cfg)
    assert problem is None and loaded.store.retention_days == 14
    assert "7ABC123" not in text  # no plate text in the unit's output
