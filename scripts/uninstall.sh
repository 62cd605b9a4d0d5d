#!/usr/bin/env bash
# Remove alpr-edge from a unit: units, udev rules, the software in /opt/alpr-edge and the alpr-edge user.
# The data (/var/lib/alpr-edge: reads, access record) and the settings and keys (/etc/alpr-edge) are KEPT, so that a
# reinstall opens the same database, unless --wipe-data is given.
#
# Usage: sudo scripts/uninstall.sh [--wipe-data [--yes]] [--root DIR] [--prefix DIR]
#   --wipe-data   also destroy the data, the settings and the keys (asks first on a terminal; --yes skips that).
#                 Reads not yet at headquarters and the unit's access record (P13: kept permanently; headquarters
#                 holds what was synced) are gone for good: without the key the database cannot be read either.
#   --root DIR    remove from a root file system in DIR (as install.sh --root)
#   --prefix DIR  where the software was installed (default /opt/alpr-edge)
set -euo pipefail

ROOT=""
PREFIX=/opt/alpr-edge
WIPE=0
YES=0
die() { echo "uninstall.sh: $*" >&2; exit 2; }
say() { echo "uninstall.sh: $*"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --wipe-data) WIPE=1; shift ;;
    --yes) YES=1; shift ;;
    --root) ROOT=${2:?--root needs a folder}; shift 2 ;;
    --prefix) PREFIX=${2:?--prefix needs a folder}; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root (sudo)"
case "$PREFIX" in /?*) ;; *) die "--prefix must be an absolute path below /" ;; esac
if [ -n "$ROOT" ]; then
  ROOT=$(cd "$ROOT" 2>/dev/null && pwd) || die "--root: no such folder"
  [ "$ROOT" != / ] || ROOT=""
fi
ETC=$ROOT/etc/alpr-edge
DATA=$ROOT/var/lib/alpr-edge
OPT=$ROOT$PREFIX
UNITDIR=$ROOT/etc/systemd/system
SYSTEMD_RUNNING=0
[ -z "$ROOT" ] && [ -d /run/systemd/system ] && SYSTEMD_RUNNING=1

if [ "$WIPE" = 1 ] && [ "$YES" = 0 ]; then
  [ -t 0 ] || die "--wipe-data destroys the reads, the access record and the keys; add --yes to confirm"
  read -r -p "Destroy ${DATA#"$ROOT"} and ${ETC#"$ROOT"} (reads, access record, keys) for good? Type WIPE: " answer
  [ "$answer" = WIPE ] || die "not confirmed; nothing removed"
fi

# -- units ---------------------------------------------------------------------------------------------------------
SYSTEMCTL=(systemctl)
[ -n "$ROOT" ] && SYSTEMCTL=(systemctl "--root=$ROOT")
units=$(cd "$UNITDIR" 2>/dev/null && ls alpr-edge.service alpr-edge-hq.service alpr-edge-console@.service 2>/dev/null || true)
consoles=$(cd "$UNITDIR" 2>/dev/null && find . -path './*.wants/alpr-edge-console@*.service' -printf '%f\n' | sort -u || true)
if command -v systemctl >/dev/null 2>&1; then
  for c in $consoles; do
    port=${c#alpr-edge-console@}; port=${port%.service}
    [ "$SYSTEMD_RUNNING" = 1 ] && systemctl stop "$c" || true
    "${SYSTEMCTL[@]}" disable -q "$c" || true
    "${SYSTEMCTL[@]}" unmask -q "serial-getty@$port.service" || true
    say "disabled $c (serial-getty@$port unmasked)"
  done
  for u in $units; do
    case "$u" in *@.service) continue ;; esac
    [ "$SYSTEMD_RUNNING" = 1 ] && systemctl stop "$u" || true
    "${SYSTEMCTL[@]}" disable -q "$u" || true
  done
fi
for u in $units; do
  rm -f "$UNITDIR/$u"
  say "removed ${UNITDIR#"$ROOT"}/$u"
done
[ "$SYSTEMD_RUNNING" = 1 ] && systemctl daemon-reload
if [ -f "$ROOT/etc/udev/rules.d/99-alpr-edge.rules" ]; then
  rm -f "$ROOT/etc/udev/rules.d/99-alpr-edge.rules"
  say "removed /etc/udev/rules.d/99-alpr-edge.rules"
  [ -z "$ROOT" ] && [ -S /run/udev/control ] && udevadm control --reload
fi

if [ -f "$ROOT/etc/polkit-1/rules.d/50-alpr-edge.rules" ]; then
  rm -f "$ROOT/etc/polkit-1/rules.d/50-alpr-edge.rules"
  say "removed /etc/polkit-1/rules.d/50-alpr-edge.rules"
fi

# -- software and user ---------------------------------------------------------------------------------------------
if [ -d "$OPT" ]; then
  rm -rf "$OPT"
  say "removed $PREFIX (venv, models)"
fi
PREFIX_ARGS=()
[ -n "$ROOT" ] && PREFIX_ARGS=(--prefix "$ROOT")
if awk -F: '$1 == "alpr-edge" { found = 1 } END { exit !found }' "$ROOT/etc/passwd"; then
  userdel "${PREFIX_ARGS[@]}" alpr-edge
  say "removed the system user alpr-edge"
fi
if awk -F: '$1 == "alpr-edge" { found = 1 } END { exit !found }' "$ROOT/etc/group"; then
  groupdel "${PREFIX_ARGS[@]}" alpr-edge
fi

# -- data ----------------------------------------------------------------------------------------------------------
if [ "$WIPE" = 0 ]; then
  [ -d "$DATA" ] && say "kept ${DATA#"$ROOT"} (reads, access record); --wipe-data removes it"
  [ -d "$ETC" ] && say "kept ${ETC#"$ROOT"} (settings, keys); --wipe-data removes it"
  exit 0
fi
for d in "$DATA" "$ETC" "$ROOT/etc/alpr-edge-hq"; do
  [ -d "$d" ] || continue
  while IFS= read -r f; do
    say "destroyed ${f#"$ROOT"} ($(stat -c %s "$f") bytes)"
  done < <(find "$d" -type f | sort)
  rm -rf "$d"
  say "destroyed ${d#"$ROOT"}"
done
