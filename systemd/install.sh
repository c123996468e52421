#!/usr/bin/env bash
# Install edge-classifier as a systemd service on Raspberry Pi OS / Debian (run as root).
#
#   sudo systemd/install.sh [--extras pi] [--no-start] [--dry-run]
#
# Steps (each skipped when already done, so running it again is safe and is how to upgrade):
#   1. groups video, plugdev, apex exist (the unit's SupplementaryGroups= needs all three)
#   2. system user edge-classifier (no login, home /var/lib/edge-classifier), in those groups
#   3. venv /opt/edge-classifier/venv; pip install of this repository (optionally [pi])
#   4. /etc/edge-classifier/config.toml from the repository's config.toml, only if absent
#   5. model store /var/lib/edge-classifier/models; the repository's models/*.tflite if empty
#   6. the unit in /etc/systemd/system; daemon-reload; enable; (re)start
#
# --extras pi   also install the Raspberry Pi camera extra (picamera2). Its libcamera
#               bindings come from apt (python3-picamera2), so the venv then sees the
#               system site-packages.
# --no-start    enable the service but do not (re)start it
# --dry-run     print each command instead of running it; needs no root
#
# For tests, EDGE_CLASSIFIER_ROOT prefixes every installed path (default: empty, i.e. /).
set -euo pipefail

NAME=edge-classifier
ROOT="${EDGE_CLASSIFIER_ROOT:-}"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/opt/$NAME"
VENV="$PREFIX/venv"
ETC="$ROOT/etc/$NAME"
STATE="$ROOT/var/lib/$NAME"
UNIT_DIR="$ROOT/etc/systemd/system"
GROUPS_NEEDED=(video plugdev apex)

EXTRAS=""
DRY_RUN=0
START=1

usage() { sed -n '2,20s/^# \{0,1\}//p' "$0"; }

die() {
    echo "install.sh: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --extras)
            [[ $# -ge 2 ]] || die "--extras needs a value (e.g. --extras pi)"
            EXTRAS="$2"
            shift 2
            ;;
        --extras=*) EXTRAS="${1#--extras=}"; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --no-start) START=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ -z "$EXTRAS" || "$EXTRAS" =~ ^[a-z0-9,_-]+$ ]] || die "--extras: invalid value: $EXTRAS"

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
[[ -f "$SRC/pyproject.toml" ]] || die "no pyproject.toml in $SRC: run the script from the repository"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 >= 3.11 is required (Raspberry Pi OS Bookworm or later)"
# Checked before anything changes, so a failed install leaves no half-done system behind.
[[ -e "$ETC/config.toml" || -f "$SRC/config.toml" ]] || die "no config.toml in $SRC to install"
[[ -f "$SRC/systemd/$NAME.service" ]] || die "no systemd/$NAME.service in $SRC"

note "1. groups: ${GROUPS_NEEDED[*]}"
for group in "${GROUPS_NEEDED[@]}"; do
    # video and plugdev come with Debian; apex only after the Coral PCIe driver set-up.
    # A missing group would fail the unit with 216/GROUP, so create it (empty, harmless).
    if ! getent group "$group" >/dev/null; then
        run groupadd --system "$group"
    fi
done

note "2. user: $NAME"
if ! getent passwd "$NAME" >/dev/null; then
    run useradd --system --user-group --home-dir "/var/lib/$NAME" --no-create-home \
        --shell /usr/sbin/nologin --comment "edge-classifier daemon" "$NAME"
fi
missing_groups=()
current_groups=" $(id -nG "$NAME" 2>/dev/null || true) "
for group in "${GROUPS_NEEDED[@]}"; do
    [[ "$current_groups" == *" $group "* ]] || missing_groups+=("$group")
done
if [[ ${#missing_groups[@]} -gt 0 ]]; then
    run usermod --append --groups "$(IFS=,; echo "${missing_groups[*]}")" "$NAME"
fi

note "3. venv: $VENV"
venv_args=()
if [[ ",$EXTRAS," == *",pi,"* ]]; then
    # libcamera's Python bindings exist only as the apt package python3-libcamera.
    venv_args+=(--system-site-packages)
    if ! python3 -c 'import libcamera' 2>/dev/null; then
        echo "warning: python3-libcamera not found: sudo apt install python3-picamera2" >&2
    fi
fi
# Running venv on an existing venv only refreshes it, so this is always safe.
run install -d -m 0755 "$PREFIX"
run python3 -m venv "${venv_args[@]}" "$VENV"
requirement="$SRC"
[[ -z "$EXTRAS" ]] || requirement="$SRC[$EXTRAS]"
run "$VENV/bin/pip" install --disable-pip-version-check --upgrade "$requirement"
if [[ -f "$SRC/docs/raspberry-pi.md" ]]; then
    run install -D -m 0644 "$SRC/docs/raspberry-pi.md" "$PREFIX/docs/raspberry-pi.md"
fi

note "4. config: $ETC/config.toml"
run install -d -m 0755 "$ETC"
if [[ -e "$ETC/config.toml" ]]; then
    echo "keeping the existing $ETC/config.toml"
else
    # Readable by the service's group only: it may name hosts and users.
    run install -m 0640 -o root -g "$NAME" "$SRC/config.toml" "$ETC/config.toml"
    # Relative paths resolve from the config file's folder; point the model store at the
    # state directory, the one place the service may write.
    run sed -i "s|^dir = \"models\"|dir = \"/var/lib/$NAME/models\"|" "$ETC/config.toml"
fi
if [[ ! -e "$ETC/mqtt-password" ]]; then
    echo "no $ETC/mqtt-password: the broker is used without a password (see docs/raspberry-pi.md)"
fi

note "5. models: $STATE/models"
run install -d -m 0750 -o "$NAME" -g "$NAME" "$STATE" "$STATE/models"
shopt -s nullglob
existing=("$STATE"/models/*.tflite)
shipped=("$SRC"/models/*.tflite)
shopt -u nullglob
if [[ ${#existing[@]} -gt 0 ]]; then
    echo "keeping the ${#existing[@]} model(s) in $STATE/models"
elif [[ ${#shipped[@]} -gt 0 ]]; then
    run install -m 0640 -o "$NAME" -g "$NAME" "${shipped[@]}" "$STATE/models/"
    for labels in "$SRC"/models/*.txt; do
        if [[ -f "$labels" ]]; then
            run install -m 0640 -o "$NAME" -g "$NAME" "$labels" "$STATE/models/"
        fi
    done
else
    echo "warning: no models in $SRC/models; add one with: edge-classifier models pull NAME" >&2
fi

note "6. unit: $UNIT_DIR/$NAME.service"
if ! cmp -s "$SRC/systemd/$NAME.service" "$UNIT_DIR/$NAME.service"; then
    run install -D -m 0644 "$SRC/systemd/$NAME.service" "$UNIT_DIR/$NAME.service"
fi
run systemctl daemon-reload
run systemctl enable "$NAME.service"
if [[ $START -eq 1 ]]; then
    # restart, not start: after an upgrade the running daemon must pick up the new code.
    run systemctl restart "$NAME.service"
fi
note "done: systemctl status $NAME; journalctl -u $NAME -f"
