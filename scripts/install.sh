#!/usr/bin/env bash
# Install alpr-edge on a unit (Raspberry Pi OS / Debian 12 bookworm, Ubuntu on Jetson) from this checkout.
# Idempotent: run it again to upgrade or repair; existing settings and keys are never replaced.
#
# Usage: sudo scripts/install.sh [options]
#   --root DIR       install into DIR as if it were / (an image being built, or a test); DIR/etc/passwd must exist.
#                    Nothing outside DIR is touched; units are enabled offline (systemctl --root). The venv's
#                    scripts name DIR, so run the script again on the booted system for a venv that runs there.
#   --prefix DIR     where the software goes (default /opt/alpr-edge): venv, models, README
#   --no-apt         do not install Debian packages (say which would be needed)
#   --no-enable      install the units but do not enable them
#   --no-pip         create the venv but do not pip-install into it (tests); keys are then made with --python
#   --python PY      interpreter for the venv (default: the first python3.x >= 3.11 found)
#   --hq             also install headquarters' ingest unit (alpr-edge-hq.service) and the hq extra
#   --console TTY    enable the serial console on /dev/TTY (alpr-edge-console@TTY.service; its getty is masked)
#   --pi / --no-pi   force Raspberry Pi mode on or off (default: /proc/device-tree/model)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=""
PREFIX=/opt/alpr-edge
APT=1
ENABLE=1
PIP=1
PY=""
HQ=0
CONSOLE=""
PI=auto

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=${2:?--root needs a folder}; shift 2 ;;
    --prefix) PREFIX=${2:?--prefix needs a folder}; shift 2 ;;
    --no-apt) APT=0; shift ;;
    --no-enable) ENABLE=0; shift ;;
    --no-pip) PIP=0; shift ;;
    --python) PY=${2:?--python needs an interpreter}; shift 2 ;;
    --hq) HQ=1; shift ;;
    --console) CONSOLE=${2:?--console needs a port name, e.g. ttyGS0}; shift 2 ;;
    --pi) PI=1; shift ;;
    --no-pi) PI=0; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root (sudo): it creates a system user and root-only key files"
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path" ;; esac
if [ -n "$CONSOLE" ] && ! [[ "$CONSOLE" =~ ^tty[A-Za-z0-9]{1,16}$ ]]; then
  die "--console: expected a port name under /dev such as ttyGS0, ttyAMA0 or ttyUSB0, got '$CONSOLE'"
fi
if [ -n "$ROOT" ]; then
  ROOT=$(cd "$ROOT" 2>/dev/null && pwd) || die "--root: no such folder"
  [ "$ROOT" != / ] || ROOT=""
fi
if [ -n "$ROOT" ] && [ ! -f "$ROOT/etc/passwd" ]; then
  die "--root $ROOT: $ROOT/etc/passwd is missing; this is not a root file system"
fi

ETC=$ROOT/etc/alpr-edge
DATA=$ROOT/var/lib/alpr-edge
OPT=$ROOT$PREFIX
VENV=$OPT/venv
UNITDIR=$ROOT/etc/systemd/system
RULESDIR=$ROOT/etc/udev/rules.d
SYSTEMD_RUNNING=0
[ -z "$ROOT" ] && [ -d /run/systemd/system ] && SYSTEMD_RUNNING=1

# -- the machine ---------------------------------------------------------------------------------------------------
MODEL=""
[ -r /proc/device-tree/model ] && MODEL=$(tr -d '\0' </proc/device-tree/model)
if [ "$PI" = auto ]; then
  case "$MODEL" in *"Raspberry Pi"*) PI=1 ;; *) PI=0 ;; esac
fi
JETSON=0
case "$MODEL" in *Jetson*|*NVIDIA*) JETSON=1 ;; esac
[ -f /etc/nv_tegra_release ] && JETSON=1
say "machine: ${MODEL:-$(uname -m), no device-tree model} (Raspberry Pi: $([ "$PI" = 1 ] && echo yes || echo no), Jetson: $([ "$JETSON" = 1 ] && echo yes || echo no))"
[ "$SYSTEMD_RUNNING" = 1 ] || say "systemd is not running here (or --root): units are installed${ROOT:+ into $ROOT}, not started"

find_python() {
  local c
  for c in python3.13 python3.12 python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

# -- Debian packages -----------------------------------------------------------------------------------------------
# The Python wheels carry SQLCipher, OpenCV (headless) and LiteRT; the system gives Python, gpsd and, on a Pi, the
# camera stack (python3-picamera2 is not on PyPI in a working form, hence --system-site-packages there).
PKGS="python3 python3-venv ca-certificates gpsd"
[ "$PI" = 1 ] && PKGS="$PKGS python3-picamera2"
if [ -z "$PY" ] && ! find_python >/dev/null; then PKGS="$PKGS python3.11 python3.11-venv"; fi  # Ubuntu 22.04 (Jetson)
missing=$(for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done | xargs)
if [ -z "$missing" ]; then
  say "Debian packages: all present ($PKGS)"
elif [ "$APT" = 0 ] || [ -n "$ROOT" ]; then
  say "Debian packages: not installing (--no-apt or --root); needed on the unit: $missing"
else
  say "Debian packages: installing $missing"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
[ -n "$PY" ] || PY=$(find_python) || die "no Python 3.11 or newer found; install python3.11 (and python3.11-venv)"
case "$PY" in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY") ;; *) PY=$(command -v "$PY") ;; esac
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PY is older than Python 3.11"

# -- helpers -------------------------------------------------------------------------------------------------------
id_of() {  # id_of passwd|group NAME: the numeric id in the target's database
  awk -F: -v n="$2" '$1 == n { print $3; exit }' "$ROOT/etc/$1"
}
ensure_dir() {  # ensure_dir PATH MODE UID GID
  if [ ! -d "$1" ]; then mkdir -p "$1"; say "created ${1#"$ROOT"}"; fi
  chown "$3:$4" "$1"
  chmod "$2" "$1"
}
put_file() {  # put_file SRC DEST MODE UID GID: copy when different; owner and mode are always set
  local state=unchanged
  if [ ! -e "$2" ]; then state=installed; elif ! cmp -s "$1" "$2"; then state=updated; fi
  if [ "$state" != unchanged ]; then
    install -m "$3" -o "$4" -g "$5" "$1" "$2.new"
    mv -f "$2.new" "$2"
  fi
  chown "$4:$5" "$2"
  chmod "$3" "$2"
  [ "$state" = unchanged ] || say "$state ${2#"$ROOT"}"
}

# -- user and directories ------------------------------------------------------------------------------------------
PREFIX_ARGS=()
[ -n "$ROOT" ] && PREFIX_ARGS=(--prefix "$ROOT")
if [ -z "$(id_of passwd alpr-edge)" ]; then
  useradd "${PREFIX_ARGS[@]}" --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "alpr-edge reader" alpr-edge
  say "created system user alpr-edge (no login shell, no home)"
else
  say "system user alpr-edge: present"
fi
UID_A=$(id_of passwd alpr-edge)
GID_A=$(id_of group alpr-edge)
[ -n "$UID_A" ] && [ -n "$GID_A" ] || die "user or group alpr-edge missing after useradd"

ensure_dir "$ETC" 0750 0 "$GID_A"
if [ -d "$DATA" ] && [ -n "$(find "$DATA" \( ! -user "$UID_A" -o ! -group "$GID_A" \) -print -quit)" ]; then
  # a reinstall after uninstall (the user made again, perhaps with another id), or files made by root
  chown -R "$UID_A:$GID_A" "$DATA"
  say "gave the existing data in ${DATA#"$ROOT"} to the alpr-edge user"
fi
ensure_dir "$DATA" 0700 "$UID_A" "$GID_A"
ensure_dir "$DATA/hotlists" 0700 "$UID_A" "$GID_A"
ensure_dir "$OPT" 0755 0 0

# -- software ------------------------------------------------------------------------------------------------------
ensure_dir "$OPT/models" 0755 0 0
for f in plate_detector.tflite plate_ocr.tflite MODEL_CARD.md; do
  put_file "$SRC/models/$f" "$OPT/models/$f" 0644 0 0
done
put_file "$SRC/README.md" "$OPT/README.md" 0644 0 0

VENV_ARGS=()
[ "$PI" = 1 ] && VENV_ARGS+=(--system-site-packages)  # picamera2 and libcamera come from Debian
[ "$PIP" = 0 ] && VENV_ARGS+=(--without-pip)
want_site=false
[ "$PI" = 1 ] && want_site=true
if [ -f "$VENV/pyvenv.cfg" ] && ! grep -q "^include-system-site-packages = $want_site" "$VENV/pyvenv.cfg"; then
  rm -rf "$VENV"
  say "removed the venv: its system-site-packages setting was wrong for this machine"
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "${VENV_ARGS[@]}" "$VENV"
  say "created the venv ${VENV#"$ROOT"} with $("$PY" -V)$([ "$PI" = 1 ] && echo ', with system site packages (picamera2)')"
fi
EXTRAS=""
[ "$HQ" = 1 ] && EXTRAS="[hq]"
stamp=$(cd "$SRC" && find edge setup.cfg pyproject.toml -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
stamp="source $stamp extras $EXTRAS"
if [ "$PIP" = 0 ]; then
  say "--no-pip: the package is NOT installed into the venv"
  ALPR=("$PY" -m edge)  # run from / with the checkout on the path (the venv is empty)
  export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"
elif [ -f "$VENV/.alpr-edge-installed" ] && [ "$(cat "$VENV/.alpr-edge-installed")" = "$stamp" ]; then
  say "package: already installed from this source"
  ALPR=("$VENV/bin/python" -m edge)
else
  "$VENV/bin/pip" install -q --disable-pip-version-check "$SRC$EXTRAS"
  echo "$stamp" >"$VENV/.alpr-edge-installed"
  say "installed alpr-edge$EXTRAS into the venv"
  ALPR=("$VENV/bin/python" -m edge)
fi

# -- settings and keys ---------------------------------------------------------------------------------------------
if [ -e "$ETC/edge.toml" ]; then
  say "settings ${ETC#"$ROOT"}/edge.toml: kept"
else
  tmp=$(mktemp)
  # the models are installed beside the venv, not inside the package
  sed "s|^# dir = \"/opt/alpr-edge/models\".*|dir = \"$PREFIX/models\"   # installed by scripts/install.sh|" \
    "$SRC/firmware_config/edge.toml" >"$tmp"
  put_file "$tmp" "$ETC/edge.toml" 0640 0 "$GID_A"
  rm -f "$tmp"
fi
chown "0:$GID_A" "$ETC/edge.toml"
chmod 0640 "$ETC/edge.toml"
# the same check as `alpr-edge config validate`, without loading the whole command line
(cd / && "${ALPR[0]}" -c 'import sys; from pathlib import Path; from edge.config import ConfigError, load
try: load(Path(sys.argv[1]))
except ConfigError as e: sys.exit(f"install.sh: WARNING: {e}; fix it before starting the reader")' "$ETC/edge.toml") || true

if [ -e "$ETC/db.key" ]; then
  say "database key ${ETC#"$ROOT"}/db.key: kept"
else
  (cd / && "${ALPR[@]}" keys init --key-file "$ETC/db.key" >/dev/null)
  say "created the database key ${ETC#"$ROOT"}/db.key (0600 root)"
fi
if [ -e "$ETC/audit.key" ]; then
  say "access-record signing key ${ETC#"$ROOT"}/audit.key: kept"
else
  (cd / && "${ALPR[0]}" -c 'import sys; from pathlib import Path; from edge.access.audit import create_signing_key
create_signing_key(Path(sys.argv[1]))' "$ETC/audit.key")
  say "created the access-record signing key ${ETC#"$ROOT"}/audit.key (0600 root)"
fi
for k in db.key audit.key; do chown 0:0 "$ETC/$k"; chmod 0600 "$ETC/$k"; done
tmp=$(mktemp)
(cd / && "${ALPR[0]}" -c 'import sys; from pathlib import Path; from edge.access.audit import load_signing_key, public_pem
sys.stdout.write(public_pem(load_signing_key(Path(sys.argv[1]), {})))' "$ETC/audit.key") >"$tmp"
put_file "$tmp" "$ETC/audit.pub" 0644 0 0
rm -f "$tmp"

# -- systemd units and udev rules ----------------------------------------------------------------------------------
ensure_dir "$UNITDIR" 0755 0 0
UNITS="alpr-edge.service alpr-edge-console@.service"
[ "$HQ" = 1 ] && UNITS="$UNITS alpr-edge-hq.service"
for u in $UNITS; do
  tmp=$(mktemp)
  sed "s|/opt/alpr-edge/|$PREFIX/|g" "$SRC/systemd/$u" >"$tmp"
  put_file "$tmp" "$UNITDIR/$u" 0644 0 0
  rm -f "$tmp"
done
if [ "$HQ" = 1 ]; then
  ensure_dir "$ROOT/etc/alpr-edge-hq" 0755 0 0
  if [ ! -e "$ROOT/etc/alpr-edge-hq/hq.env" ]; then
    tmp=$(mktemp)
    printf '%s\n' "# alpr-edge-hq.service settings (secrets go in root-only files beside this one: db-url, hq.key)" \
      "ALPR_HQ_BROKER=mqtt.hq.example" "ALPR_HQ_PORT=8883" >"$tmp"
    put_file "$tmp" "$ROOT/etc/alpr-edge-hq/hq.env" 0644 0 0
    rm -f "$tmp"
  fi
  for f in db-url hq.key ca.pem hq.crt; do
    [ -e "$ROOT/etc/alpr-edge-hq/$f" ] || say "headquarters: put /etc/alpr-edge-hq/$f in place (db-url and hq.key mode 0600 root)"
  done
  # the key that signs headquarters' own access record (the service loads it by LoadCredential)
  [ -e "$ROOT/etc/alpr-edge-hq/signing.key" ] || say "headquarters: create /etc/alpr-edge-hq/signing.key (0600 root):" \
    "alpr-edge hotlist keygen --private /etc/alpr-edge-hq/signing.key --public /etc/alpr-edge-hq/signing.pub"
fi
ensure_dir "$ROOT/etc/udev" 0755 0 0
ensure_dir "$RULESDIR" 0755 0 0
put_file "$SRC/firmware_config/udev/99-alpr-edge.rules" "$RULESDIR/99-alpr-edge.rules" 0644 0 0
if [ -z "$ROOT" ] && [ -S /run/udev/control ]; then
  udevadm control --reload && udevadm trigger --subsystem-match=video4linux --subsystem-match=tty \
    --subsystem-match=media --subsystem-match=dma_heap
  say "udev: rules reloaded"
else
  say "udev is not running here (or --root): skipped reloading rules (hardware)"
fi
if [ -d "$ROOT/usr/share/polkit-1/rules.d" ] || [ -d "$ROOT/etc/polkit-1/rules.d" ]; then
  ensure_dir "$ROOT/etc/polkit-1/rules.d" 0755 0 0
  put_file "$SRC/systemd/50-alpr-edge.rules" "$ROOT/etc/polkit-1/rules.d/50-alpr-edge.rules" 0644 0 0
else
  say "polkit (JavaScript rules) is not installed: the console's restart command will be refused (apt install polkitd)"
fi
gpsd_defaults=$ROOT/etc/default/gpsd
if [ -f "$gpsd_defaults" ] && grep -q '^DEVICES=""' "$gpsd_defaults"; then
  sed -i 's|^DEVICES=""|DEVICES="/dev/alpr-gps"|' "$gpsd_defaults"
  say "gpsd: DEVICES=\"/dev/alpr-gps\" in /etc/default/gpsd (the udev name of a known GPS receiver)"
elif [ ! -f "$gpsd_defaults" ]; then
  say "gpsd is not installed here: skipped pointing it at /dev/alpr-gps (hardware)"
fi
if [ -n "$CONSOLE" ] && [ ! -e "$ROOT/dev/$CONSOLE" ]; then
  say "console port /dev/$CONSOLE does not exist here; the console starts when it appears (hardware)"
fi

SYSTEMCTL=(systemctl)
[ -n "$ROOT" ] && SYSTEMCTL=(systemctl "--root=$ROOT")
if ! command -v systemctl >/dev/null 2>&1; then
  say "systemctl not found: units not enabled"
elif [ "$ENABLE" = 0 ]; then
  say "--no-enable: units installed, not enabled"
else
  [ "$SYSTEMD_RUNNING" = 1 ] && systemctl daemon-reload
  "${SYSTEMCTL[@]}" enable -q alpr-edge.service
  say "enabled alpr-edge.service"
  if [ "$HQ" = 1 ]; then "${SYSTEMCTL[@]}" enable -q alpr-edge-hq.service; say "enabled alpr-edge-hq.service"; fi
  if [ -n "$CONSOLE" ]; then
    "${SYSTEMCTL[@]}" mask -q "serial-getty@$CONSOLE.service"
    "${SYSTEMCTL[@]}" enable -q "alpr-edge-console@$CONSOLE.service"
    say "enabled alpr-edge-console@$CONSOLE.service (serial-getty@$CONSOLE masked)"
  fi
  if [ "$SYSTEMD_RUNNING" = 1 ]; then
    systemctl try-restart alpr-edge.service  # an upgrade: the running reader picks up the new code
  fi
fi
[ "$SYSTEMD_RUNNING" = 1 ] || say "not started (systemd not running here)"
say "done. Next: edit /etc/alpr-edge/edge.toml (cameras, gps, sync), check with \`alpr-edge doctor\`"
say "then \`systemctl start alpr-edge\`; register /etc/alpr-edge/audit.pub at headquarters"
