"""scripts/install.sh and scripts/uninstall.sh into a staged root (--root): nothing outside it is touched.

The staged root starts as a copy of this machine's user database (etc/passwd, group, shadow, gshadow), a gpsd
defaults file and a polkit rules folder; the venv is made without pip (--no-pip) except in the slow test, which
installs the package for real. Proved: the user, the layout with its owners and modes, the settings, working keys,
the units and udev rules (parsed by udevadm), units enabled offline; a second run changes nothing and keeps edited
settings and existing keys, and repairs modes; uninstall keeps data and keys unless --wipe-data."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge import config
from edge.access.audit import load_signing_key, public_pem
from edge.store.keys import load_key

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts/install.sh"
UNINSTALL = REPO / "scripts/uninstall.sh"
BASE = ["--no-apt", "--no-pip", "--python", sys.executable]


def sh(script: Path, root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        ["bash", str(script), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(name="root")
def root_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc/default").mkdir(parents=True)
    for f in ("passwd", "group", "shadow", "gshadow"):
        shutil.copy2(f"/etc/{f}", root / "etc" / f)
    (root / "etc/default/gpsd").write_text('START_DAEMON="true"\nDEVICES=""\nUSBAUTO="true"\n')
    (root / "etc/polkit-1/rules.d").mkdir(parents=True)
    return root


def ids(root: Path) -> tuple[int, int]:
    """(uid, gid) of alpr-edge in the staged root's user database."""

    def entry(db: str) -> int:
        lines = (root / "etc" / db).read_text().splitlines()
        return next(int(ln.split(":")[2]) for ln in lines if ln.startswith("alpr-edge:"))

    return entry("passwd"), entry("group")


def meta(p: Path) -> tuple[int, int, int]:
    st = p.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def manifest(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under root (the venv's insides aside): type, mode, owner, link target, content hash."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d == root / "opt/alpr-edge/venv":
            dirnames.clear()
        for name in dirnames + filenames:
            p = d / name
            st = p.lstat()
            h = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            link = os.readlink(p) if p.is_symlink() else None
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), meta(p), link, h)
    return out


def host_users() -> str:
    return Path("/etc/passwd").read_text() + Path("/etc/group").read_text()


def test_install_layout_permissions_keys_units(root: Path) -> None:
    before = host_users()
    r = sh(INSTALL, root, *BASE, "--no-enable")
    assert host_users() == before and "alpr-edge:" not in before  # the machine's own users are untouched
    assert "skipped reloading rules (hardware)" in r.stdout and "--no-enable: units installed, not enabled" in r.stdout
    uid, gid = ids(root)
    user = next(ln for ln in (root / "etc/passwd").read_text().splitlines() if ln.startswith("alpr-edge:"))
    assert user.endswith(":/nonexistent:/usr/sbin/nologin") and not (root / "nonexistent").exists()

    etc, data, opt = root / "etc/alpr-edge", root / "var/lib/alpr-edge", root / "opt/alpr-edge"
    assert meta(etc) == (0o750, 0, gid)
    assert meta(etc / "edge.toml") == (0o640, 0, gid)
    assert meta(etc / "db.key") == (0o600, 0, 0) and meta(etc / "audit.key") == (0o600, 0, 0)
    assert meta(etc / "audit.pub") == (0o644, 0, 0)
    assert meta(data) == (0o700, uid, gid) and meta(data / "hotlists") == (0o700, uid, gid)
    for f in ("plate_detector.tflite", "plate_ocr.tflite"):
        assert (opt / "models" / f).read_bytes() == (REPO / "models" / f).read_bytes()
        assert meta(opt / "models" / f) == (0o644, 0, 0)
    assert "include-system-site-packages = false" in (opt / "venv/pyvenv.cfg").read_text()

    # the settings: the shipped template, with the installed models folder
    cfg = config.load(etc / "edge.toml")
    assert cfg.models.dir == Path("/opt/alpr-edge/models") and cfg.store.key_file == Path("/etc/alpr-edge/db.key")
    # working keys: a 32-byte database key; the access record's key, its public half published beside it
    assert len(load_key(etc / "db.key", {})) == 32
    assert public_pem(load_signing_key(etc / "audit.key", {})) == (etc / "audit.pub").read_text()

    units = root / "etc/systemd/system"
    for u in ("alpr-edge.service", "alpr-edge-console@.service"):
        assert (units / u).read_text() == (REPO / "systemd" / u).read_text() and meta(units / u) == (0o644, 0, 0)
    assert not (units / "alpr-edge-hq.service").exists()  # only with --hq
    assert not (units / "multi-user.target.wants").exists()
    rules = root / "etc/udev/rules.d/99-alpr-edge.rules"
    assert rules.read_text() == (REPO / "firmware_config/udev/99-alpr-edge.rules").read_text()
    assert (root / "etc/polkit-1/rules.d/50-alpr-edge.rules").read_text() == (
        REPO / "systemd/50-alpr-edge.rules"
    ).read_text()
    assert 'DEVICES="/dev/alpr-gps"' in (root / "etc/default/gpsd").read_text()


def test_second_run_changes_nothing_and_keeps_settings_and_keys(root: Path) -> None:
    sh(INSTALL, root, *BASE, "--no-enable")
    first = manifest(root)
    r = sh(INSTALL, root, *BASE, "--no-enable")
    assert manifest(root) == first
    for what in ("settings /etc/alpr-edge/edge.toml: kept", "database key /etc/alpr-edge/db.key: kept"):
        assert what in r.stdout
    assert "installed /" not in r.stdout and "created" not in r.stdout

    etc = root / "etc/alpr-edge"
    edited = (etc / "edge.toml").read_text().replace('id = "alpr-unit"', 'id = "car-0042"')
    (etc / "edge.toml").write_text(edited)
    keys = {k: (etc / k).read_bytes() for k in ("db.key", "audit.key")}
    (etc / "db.key").chmod(0o644)  # someone loosened it: the next run repairs it
    sh(INSTALL, root, *BASE, "--no-enable")
    assert (etc / "edge.toml").read_text() == edited
    assert {k: (etc / k).read_bytes() for k in keys} == keys
    assert meta(etc / "db.key")[0] == 0o600 and meta(etc / "edge.toml")[0] == 0o640


def test_enable_offline_with_console_and_hq(root: Path) -> None:
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl not installed")
    r = sh(INSTALL, root, *BASE, "--console", "ttyGS0", "--hq")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert os.readlink(wants / "alpr-edge.service") == "/etc/systemd/system/alpr-edge.service"
    assert os.readlink(wants / "alpr-edge-console@ttyGS0.service") == "/etc/systemd/system/alpr-edge-console@.service"
    assert os.readlink(wants / "alpr-edge-hq.service") == "/etc/systemd/system/alpr-edge-hq.service"
    assert os.readlink(root / "etc/systemd/system/serial-getty@ttyGS0.service") == "/dev/null"
    assert "ALPR_HQ_BROKER=" in (root / "etc/alpr-edge-hq/hq.env").read_text()
    assert "console port /dev/ttyGS0 does not exist here" in r.stdout
    r = sh(UNINSTALL, root)
    assert not wants.exists() or not any(wants.iterdir())
    assert not (root / "etc/systemd/system/serial-getty@ttyGS0.service").exists()  # the getty is given back


def test_bad_arguments_are_refused(root: Path, tmp_path: Path) -> None:
    r = sh(INSTALL, tmp_path / "nowhere", *BASE, check=False)
    assert r.returncode == 2 and "--root: no such folder" in r.stderr
    (tmp_path / "empty").mkdir()
    r = sh(INSTALL, tmp_path / "empty", *BASE, check=False)
    assert r.returncode == 2 and "this is not a root file system" in r.stderr
    r = sh(INSTALL, root, *BASE, "--console", "../../etc/x", check=False)
    assert r.returncode == 2 and "--console: expected a port name" in r.stderr
    assert not (root / "etc/alpr-edge").exists()


def test_pi_venv_sees_system_packages(root: Path) -> None:
    sh(INSTALL, root, *BASE, "--no-enable", "--pi")
    cfg = (root / "opt/alpr-edge/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    r = sh(INSTALL, root, *BASE, "--no-enable", "--no-pi")
    assert "system-site-packages setting was wrong" in r.stdout
    assert "include-system-site-packages = false" in (root / "opt/alpr-edge/venv/pyvenv.cfg").read_text()


def test_uninstall_keeps_data_then_wipes_on_request(root: Path) -> None:
    sh(INSTALL, root, *BASE)
    etc, data = root / "etc/alpr-edge", root / "var/lib/alpr-edge"
    (data / "reads.db").write_bytes(b"encrypted reads")
    keys = {k: (etc / k).read_bytes() for k in ("db.key", "audit.key", "edge.toml")}
    r = sh(UNINSTALL, root)
    assert "kept /var/lib/alpr-edge" in r.stdout and "kept /etc/alpr-edge" in r.stdout
    gone_paths = (
        "opt/alpr-edge",
        "etc/systemd/system/alpr-edge.service",
        "etc/systemd/system/multi-user.target.wants/alpr-edge.service",
        "etc/udev/rules.d/99-alpr-edge.rules",
        "etc/polkit-1/rules.d/50-alpr-edge.rules",
    )
    for gone in gone_paths:
        assert not (root / gone).exists() and not (root / gone).is_symlink(), gone
    for f in ("passwd", "group", "shadow", "gshadow"):
        assert "alpr-edge:" not in (root / "etc" / f).read_text()
    assert {k: (etc / k).read_bytes() for k in keys} == keys and (data / "reads.db").exists()

    # a reinstall opens the same data: keys kept, the data given to the new user
    sh(INSTALL, root, *BASE)
    assert {k: (etc / k).read_bytes() for k in keys} == keys
    assert (data / "reads.db").stat().st_uid == ids(root)[0]

    r = sh(UNINSTALL, root, "--wipe-data", check=False)  # no terminal, no --yes: refused, nothing removed
    assert r.returncode == 2 and "add --yes" in r.stderr and (root / "opt/alpr-edge").exists()
    r = sh(UNINSTALL, root, "--wipe-data", "--yes")
    assert not etc.exists() and not data.exists()
    for f in ("var/lib/alpr-edge/reads.db", "etc/alpr-edge/db.key", "etc/alpr-edge/audit.key"):
        assert f"destroyed /{f} (" in r.stdout


def udev_problems(rules: str, tmp_path: Path) -> list[str]:
    """udevadm's complaints about a rules file, read as udevd would (in a private mount namespace where the rules
    folder and a group database that knows alpr-edge are bind-mounted over the machine's)."""
    rules_dir = tmp_path / "rules.d"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "99-alpr-edge.rules").write_text(rules)
    group = tmp_path / "group"
    group.write_text(Path("/etc/group").read_text() + "alpr-edge:x:64999:\n")
    script = (
        f"mount --bind {rules_dir} /etc/udev/rules.d && mount --bind {group} /etc/group && "
        "udevadm test /sys/class/tty/console 2>&1"
    )
    r = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert "Reading rules file: /etc/udev/rules.d/99-alpr-edge.rules" in r.stdout, r.stdout[-2000:] + r.stderr
    return [ln for ln in r.stdout.splitlines() if "99-alpr-edge.rules:" in ln]


@pytest.mark.skipif(shutil.which("udevadm") is None or shutil.which("unshare") is None, reason="needs udev")
def test_udev_rules_parse_cleanly(tmp_path: Path) -> None:
    rules = (REPO / "firmware_config/udev/99-alpr-edge.rules").read_text()
    assert udev_problems(rules, tmp_path) == []
    bad = udev_problems(rules + 'SUBSYSTEM=="tty", GROUP="no-such-group-x", SYMLNK+="x"\n', tmp_path)
    assert bad and all("99-alpr-edge.rules:" in b for b in bad)


@pytest.mark.slow
def test_real_install_with_pip(root: Path) -> None:
    """The venv made and the package installed for real (about 20 s and 350 MB); doctor runs from it."""
    r = sh(INSTALL, root, "--no-apt", "--no-enable", "--python", shutil.which("python3") or sys.executable)
    assert "installed alpr-edge into the venv" in r.stdout
    exe = root / "opt/alpr-edge/venv/bin/alpr-edge"
    d = subprocess.run([str(exe), "doctor", "--help"], capture_output=True, text=True, timeout=60, cwd="/")
    assert d.returncode == 0 and "--skip CHECK" in d.stdout
    h = subprocess.run([str(exe), "hq", "migrate"], capture_output=True, text=True, timeout=60, cwd="/")
    assert h.returncode == 2 and "install with the hq extra" in h.stderr  # no psycopg on a unit
    r = sh(INSTALL, root, "--no-apt", "--no-enable", "--python", shutil.which("python3") or sys.executable)
    assert "package: already installed from this source" in r.stdout
