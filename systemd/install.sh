#!/usr/bin/env bash
# Install edge-classifier as a systemd service on Raspberry Pi OS / Debian, 64-bit (run as root).
#
#   sudo systemd/install.sh [--extras pi] [--system-site-packages] [--wheels DIR]
#                           [--mqtt-host HOST] [--model MODEL] [--source SOURCE]
#                           [--coral [--coral-from DIR] [--coral-sha256 HEX]]
#                           [--no-start] [--dry-run]
#
# Steps (each skipped when already done, so running it again is safe and is how to upgrade):
#   1. groups video, plugdev, apex exist (the unit's SupplementaryGroups= needs all three)
#   2. system user edge-classifier (no login, home /var/lib/edge-classifier), in those groups
#   3. venv /opt/edge-classifier/venv; pip install of this repository (optionally [pi])
#   4. model store /var/lib/edge-classifier/models; the repository's models/*.tflite if empty
#   5. /etc/edge-classifier/config.toml written by `edge-classifier init` (it detects the
#      camera and the Edge TPU), only if absent
#   6. with --coral: libedgetpu (sha256-checked), udev rules for the USB and PCIe Coral
#   7. the unit in /etc/systemd/system; daemon-reload; enable; (re)start
#
# --extras pi           also install the Raspberry Pi camera extra (picamera2). Its libcamera
#                       bindings come from apt (python3-picamera2), so the venv then sees the
#                       system site-packages (implies --system-site-packages).
# --system-site-packages  the venv sees apt's Python packages; numpy is then pinned to apt's
#                       version, which picamera2 and simplejpeg are built against.
# --wheels DIR          install from the wheels in DIR only (pip --no-index): air-gapped devices
# --mqtt-host, --model, --source   passed to `edge-classifier init` for the new config
# --coral               install libedgetpu: the build pinned in systemd/libedgetpu.sha256,
#                       downloaded from its release, or from --coral-from DIR (a mirror folder)
# --coral-sha256 HEX    the expected sha256 of a build that is not pinned
# --no-start            enable the service but do not (re)start it
# --dry-run             print each command instead of running it; needs no root
#
# For tests, EDGE_CLASSIFIER_ROOT prefixes every installed path (default: empty, i.e. /), and
# EDGE_CLASSIFIER_MACHINE / EDGE_CLASSIFIER_DEB stand in for `uname -m` / "codename arch".
set -euo pipefail

NAME=edge-classifier
ROOT="${EDGE_CLASSIFIER_ROOT:-}"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/opt/$NAME"
VENV="$PREFIX/venv"
ETC="$ROOT/etc/$NAME"
STATE="$ROOT/var/lib/$NAME"
UNIT_DIR="$ROOT/etc/systemd/system"
UDEV_RULES="$ROOT/etc/udev/rules.d/65-$NAME-coral.rules"
GROUPS_NEEDED=(video plugdev apex)
# The community libedgetpu builds matched to current TensorFlow Lite / LiteRT (Google's own
# apt repository stops at a build for TF ~2.5 that crashes under newer runtimes).
LIBEDGETPU_VERSION="16.0tf2.19.1-1"
LIBEDGETPU_URL="https://github.com/feranick/libedgetpu/releases/download/16.0TF2.19.1-1"

EXTRAS=""
DRY_RUN=0
START=1
SYSTEM_SITE=0
WHEELS=""
CORAL=0
CORAL_FROM=""
CORAL_SHA256=""
init_args=()

usage() { sed -n '2,33s/^# \{0,1\}//p' "$0"; }

die() {
    echo "install.sh: $*" >&2
    exit 1
}

value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --extras) value "$@"; EXTRAS="$2"; shift 2 ;;
        --extras=*) EXTRAS="${1#--extras=}"; shift ;;
        --system-site-packages) SYSTEM_SITE=1; shift ;;
        --wheels) value "$@"; WHEELS="$2"; shift 2 ;;
        --mqtt-host | --model | --source) value "$@"; init_args+=("$1" "$2"); shift 2 ;;
        --coral) CORAL=1; shift ;;
        --coral-from) value "$@"; CORAL=1; CORAL_FROM="$2"; shift 2 ;;
        --coral-sha256) value "$@"; CORAL=1; CORAL_SHA256="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --no-start) START=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ -z "$EXTRAS" || "$EXTRAS" =~ ^[a-z0-9,_-]+$ ]] || die "--extras: invalid value: $EXTRAS"
[[ ",$EXTRAS," != *",pi,"* ]] || SYSTEM_SITE=1
[[ -z "$CORAL_SHA256" || "$CORAL_SHA256" =~ ^[0-9a-f]{64}$ ]] || die "--coral-sha256: not a sha256: $CORAL_SHA256"

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

# write_file PATH MODE TEXT: the same, for a small generated file.
write_file() {
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '+ write %q %s: %q\n' "$1" "$2" "$3"
    else
        install -D -m "$2" /dev/null "$1"
        printf '%s\n' "$3" > "$1"
    fi
}

note() { echo "== $*"; }

# 32-bit is refused before anything changes: LiteRT has no 32-bit wheel. `uname -m` alone
# is not enough: 32-bit Raspberry Pi OS runs a 64-bit kernel on a Pi 4/5 (aarch64 with an
# armhf userland), so python3's own pointer size decides too.
machine="${EDGE_CLASSIFIER_MACHINE:-$(uname -m)}"
bits="$(python3 -c 'import struct; print(struct.calcsize("P") * 8)' 2>/dev/null || echo 64)"
[[ -z "${EDGE_CLASSIFIER_MACHINE:-}" ]] || bits=64
what="$machine"
[[ $bits -eq 64 ]] || what="$machine kernel, 32-bit userland"
case "$machine" in
    armv6l | armv7l | armv8l | armhf | i386 | i486 | i586 | i686) bits=32 ;;
esac
if [[ $bits -ne 64 ]]; then
    die "32-bit systems are not supported ($what): LiteRT has no 32-bit build; install Raspberry Pi OS (64-bit), Bookworm or Trixie, and run this again"
fi
if [[ $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
    die "must run as root (or try --dry-run)"
fi
[[ -f "$SRC/pyproject.toml" ]] || die "no pyproject.toml in $SRC: run the script from the repository"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 >= 3.11 is required (Raspberry Pi OS Bookworm or later)"
# Checked before anything changes, so a failed install leaves no half-done system behind.
[[ -f "$SRC/systemd/$NAME.service" ]] || die "no systemd/$NAME.service in $SRC"
[[ -z "$WHEELS" || -d "$WHEELS" ]] || die "--wheels: $WHEELS: no such folder"
[[ -z "$CORAL_FROM" || -d "$CORAL_FROM" ]] || die "--coral-from: $CORAL_FROM: no such folder"

# --- Coral: which build, and is it the one pinned (before anything changes) --------------
coral_deb=""
coral_file=""
if [[ $CORAL -eq 1 ]]; then
    read -r codename deb_arch <<<"${EDGE_CLASSIFIER_DEB:-$(. /etc/os-release && echo "$VERSION_CODENAME") $(dpkg --print-architecture)}"
    coral_deb="libedgetpu1-std_${LIBEDGETPU_VERSION}.${codename}_${deb_arch}.deb"
    pinned="$(awk -v f="$coral_deb" '$2 == f && length($1) == 64 && $1 !~ /[^0-9a-f]/ { print $1 }' "$SRC/systemd/libedgetpu.sha256" 2>/dev/null || true)"
    expected="${CORAL_SHA256:-$pinned}"
    if [[ -n "$CORAL_FROM" ]]; then
        coral_file="$CORAL_FROM/$coral_deb"
        [[ -f "$coral_file" ]] || die "--coral-from: no $coral_deb in $CORAL_FROM (the build for $codename $deb_arch)"
    fi
    [[ -n "$expected" ]] \
        || die "libedgetpu: no sha256 pinned for $coral_deb in systemd/libedgetpu.sha256; check the file yourself and pass --coral-sha256 HEX"
    if [[ -n "$coral_file" ]]; then
        actual="$(sha256sum "$coral_file" | cut -d' ' -f1)"
        [[ "$actual" == "$expected" ]] \
            || die "libedgetpu: $coral_file: sha256 $actual is not the expected $expected; not installing it"
    fi
fi

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
pip_args=(--disable-pip-version-check)
[[ -z "$WHEELS" ]] || pip_args+=(--no-index --find-links "$WHEELS")
if [[ $SYSTEM_SITE -eq 1 ]]; then
    venv_args+=(--system-site-packages)
    if [[ ",$EXTRAS," == *",pi,"* ]] && ! python3 -c 'import libcamera' 2>/dev/null; then
        # libcamera's Python bindings exist only as the apt package python3-libcamera.
        echo "warning: python3-libcamera not found: sudo apt install python3-picamera2" >&2
    fi
fi
# Running venv on an existing venv only refreshes it, so this is always safe.
run install -d -m 0755 "$PREFIX"
run python3 -m venv "${venv_args[@]}" "$VENV"
if [[ $SYSTEM_SITE -eq 1 ]]; then
    # apt's picamera2 and simplejpeg are compiled against apt's numpy; a newer numpy from
    # pip (opencv-python-headless 5 wants numpy 2) shadows it and breaks their import. So
    # pin numpy where apt has it: pip then picks an OpenCV build that works with it.
    numpy_version="$(python3 -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)"
    if [[ -n "$numpy_version" ]]; then
        write_file "$PREFIX/constraints.txt" 0644 "numpy==$numpy_version"
        pip_args+=(--constraint "$PREFIX/constraints.txt")
        echo "keeping apt's numpy $numpy_version (constraint in $PREFIX/constraints.txt)"
    else
        echo "warning: no numpy from apt (python3-numpy): pip installs its own, which apt's picamera2 may not import with" >&2
    fi
fi
requirement="$SRC"
[[ -z "$WHEELS" ]] || requirement="$NAME"
[[ -z "$EXTRAS" ]] || requirement="$requirement[$EXTRAS]"
run "$VENV/bin/pip" install "${pip_args[@]}" --upgrade "$requirement"
for doc in docs/raspberry-pi.md config.toml; do
    if [[ -f "$SRC/$doc" ]]; then
        run install -D -m 0644 "$SRC/$doc" "$PREFIX/docs/$(basename "$doc")"
    fi
done

note "4. models: $STATE/models"
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

note "5. config: $ETC/config.toml"
run install -d -m 0755 "$ETC"
if [[ -e "$ETC/config.toml" ]]; then
    echo "keeping the existing $ETC/config.toml"
    [[ ${#init_args[@]} -eq 0 ]] || echo "warning: ${init_args[*]} not applied: the config exists (edit it, or remove it and run this again)" >&2
else
    # init detects the camera and the Edge TPU, writes absolute paths and checks the file
    # with the daemon's own loader; readable by the service's group only (it may name hosts).
    run "$VENV/bin/edge-classifier" init --output "$ETC/config.toml" --models-dir "$STATE/models" "${init_args[@]}"
    run chgrp "$NAME" "$ETC/config.toml"
fi
if [[ ! -e "$ETC/mqtt-password" ]]; then
    echo "no $ETC/mqtt-password: the broker is used without a password (see docs/raspberry-pi.md)"
fi

if [[ $CORAL -eq 1 ]]; then
    note "6. coral: $coral_deb"
    if [[ -z "$coral_file" ]]; then
        coral_file="$PREFIX/cache/$coral_deb"
        run install -d -m 0755 "$PREFIX/cache"
        run python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
            "$LIBEDGETPU_URL/$coral_deb" "$coral_file"
        if [[ $DRY_RUN -eq 0 ]]; then
            actual="$(sha256sum "$coral_file" | cut -d' ' -f1)"
            [[ "$actual" == "$expected" ]] || { rm -f "$coral_file"; die "libedgetpu: downloaded $coral_deb has sha256 $actual, not the pinned $expected; not installing it"; }
        fi
    fi
    # apt resolves the package's dependency (libusb-1.0-0) and records it for `apt remove`.
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$coral_file"
    # USB Coral: both of its ids (before and after the firmware upload) to plugdev; the
    # PCIe/M.2 Coral's /dev/apex_N to apex. The deb ships the USB rule too; ours also covers
    # a library installed by other means.
    write_file "$UDEV_RULES" 0644 "# Written by edge-classifier's install.sh --coral; removed by uninstall.sh.
SUBSYSTEM==\"usb\", ATTRS{idVendor}==\"1a6e\", ATTRS{idProduct}==\"089a\", MODE=\"0660\", GROUP=\"plugdev\"
SUBSYSTEM==\"usb\", ATTRS{idVendor}==\"18d1\", ATTRS{idProduct}==\"9302\", MODE=\"0660\", GROUP=\"plugdev\"
SUBSYSTEM==\"apex\", MODE=\"0660\", GROUP=\"apex\""
    run udevadm control --reload-rules
    run udevadm trigger --subsystem-match=usb --subsystem-match=apex
fi

note "7. unit: $UNIT_DIR/$NAME.service"
if ! cmp -s "$SRC/systemd/$NAME.service" "$UNIT_DIR/$NAME.service"; then
    run install -D -m 0644 "$SRC/systemd/$NAME.service" "$UNIT_DIR/$NAME.service"
fi
run systemctl daemon-reload
run systemctl enable "$NAME.service"
if [[ $START -eq 1 ]]; then
    # restart, not start: after an upgrade the running daemon must pick up the new code.
    # Type=notify: this returns once the daemon sent READY (model loaded, MQTT set up).
    run systemctl restart "$NAME.service"
fi
note "done: systemctl status $NAME; journalctl -u $NAME -f"
