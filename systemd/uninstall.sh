#!/usr/bin/env bash
# Remove the edge-classifier service (run as root).
#
#   sudo systemd/uninstall.sh [--purge] [--dry-run]
#
# Stops and disables the service, removes the unit, /opt/edge-classifier (the venv) and the
# Coral udev rules install.sh --coral wrote (libedgetpu itself is an apt package:
# `apt remove libedgetpu1-std`).
# Keeps /etc/edge-classifier (config, mqtt-password) and /var/lib/edge-classifier (models)
# unless --purge, which also removes them and the edge-classifier user. The groups video,
# plugdev and apex stay: other software may use them.
#
# --dry-run   print each command instead of running it; needs no root
#
# For tests, EDGE_CLASSIFIER_ROOT prefixes every path (default: empty, i.e. /).
set -euo pipefail

NAME=edge-classifier
ROOT="${EDGE_CLASSIFIER_ROOT:-}"
PREFIX="$ROOT/opt/$NAME"
ETC="$ROOT/etc/$NAME"
STATE="$ROOT/var/lib/$NAME"
UNIT="$ROOT/etc/systemd/system/$NAME.service"
UDEV_RULES="$ROOT/etc/udev/rules.d/65-$NAME-coral.rules"

PURGE=0
DRY_RUN=0

die() {
    echo "uninstall.sh: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --purge) PURGE=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) sed -n '2,16s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

# run CMD...: the one place that changes the system; --dry-run prints it instead.
run() {
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

note() { echo "== $*"; }

if [[ $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
    die "must run as root (or try --dry-run)"
fi

note "1. service"
if [[ -e "$UNIT" ]]; then
    # `disable --now` also stops it; errors (already stopped/disabled) do not matter.
    run systemctl disable --now "$NAME.service" || true
    run rm -f "$UNIT"
    run systemctl daemon-reload
    run systemctl reset-failed "$NAME.service" || true
fi

note "2. program: $PREFIX"
if [[ -e "$PREFIX" ]]; then
    run rm -rf "$PREFIX"
fi

if [[ -e "$UDEV_RULES" ]]; then
    run rm -f "$UDEV_RULES"
    run udevadm control --reload-rules || true
fi

if [[ $PURGE -eq 1 ]]; then
    note "3. purge: $ETC $STATE and the user $NAME"
    [[ ! -e "$ETC" ]] || run rm -rf "$ETC"
    [[ ! -e "$STATE" ]] || run rm -rf "$STATE"
    if getent passwd "$NAME" >/dev/null; then
        run userdel "$NAME"
    fi
else
    note "3. kept $ETC and $STATE (use --purge to remove them)"
fi
