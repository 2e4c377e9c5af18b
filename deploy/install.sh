#!/usr/bin/env bash
# Install a relay node from the wheel (docs/operations.md): a venv in /opt/crisis-relay with the
# run-time dependencies only (no test tools, no browser), the `relay` system user (in dialout for
# the serial radio), /etc/crisis-relay, /var/lib/crisis-relay and the systemd unit.
#
#   deploy/install.sh [--wheel FILE]            install or upgrade (idempotent)
#   deploy/install.sh --uninstall [--purge]     remove the program and the unit; --purge also
#                                               removes /etc/crisis-relay, the state and the user
#   --root DIR   install below DIR instead of / (a staging tree; no user, no systemctl)
#
# It never enables or starts the service: write relay.toml, run `relay doctor`, then
# `systemctl enable --now relay`.
set -euo pipefail

ROOT=""
WHEEL=""
ACTION=install
PURGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) WHEEL=$2; shift 2 ;;
        --root) ROOT=${2%/}; shift 2 ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

PREFIX=$ROOT/opt/crisis-relay
ETC=$ROOT/etc/crisis-relay
STATE=$ROOT/var/lib/crisis-relay
UNIT=$ROOT/etc/systemd/system/relay.service
PYTHON=${PYTHON:-python3}
SYSTEM=0
if [ -z "$ROOT" ]; then
    SYSTEM=1
    if [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: run as root (sudo), or use --root DIR for a staging tree" >&2
        exit 1
    fi
fi

say() { echo "install.sh: $*"; }

uninstall() {
    if [ "$SYSTEM" = 1 ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now relay.service 2>/dev/null || true
    fi
    rm -f "$UNIT"
    rm -rf "$PREFIX"
    if [ "$SYSTEM" = 1 ] && command -v systemctl >/dev/null 2>&1; then
        systemctl daemon-reload || true
    fi
    if [ "$PURGE" = 1 ]; then
        rm -rf "$ETC" "$STATE"
        if [ "$SYSTEM" = 1 ] && getent passwd relay >/dev/null; then
            userdel relay || true
        fi
        say "removed the program, the unit, $ETC, $STATE and the relay user"
    else
        say "removed the program and the unit; kept $ETC and $STATE (--purge removes them)"
    fi
}

check_platform() {
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "install.sh: Python >= 3.11 is required ($("$PYTHON" --version 2>&1) found)" >&2
        exit 1
    fi
    case "$(uname -m)" in
        aarch64|x86_64) ;;
        armv6l|armv7l)
            if [ "${RELAY_ALLOW_SOURCE_BUILD:-0}" != 1 ]; then
                echo "install.sh: 32-bit ARM ($(uname -m)) is not supported: the package index has" \
                    "no wheels of cffi and pyyaml for it. Install Raspberry Pi OS 64-bit (aarch64)," \
                    "or set RELAY_ALLOW_SOURCE_BUILD=1 after" \
                    "'apt-get install build-essential python3-dev libffi-dev libyaml-dev'" \
                    "(a source build takes long and is untested)." >&2
                exit 1
            fi ;;
        *) say "warning: $(uname -m) is not a tested platform" ;;
    esac
}

find_wheel() {
    if [ -z "$WHEEL" ]; then
        WHEEL=$(ls -t "$(dirname "$0")"/../dist/crisis_relay-*.whl 2>/dev/null | head -n1 || true)
    fi
    if [ -z "$WHEEL" ] || [ ! -f "$WHEEL" ]; then
        echo "install.sh: no wheel: pass --wheel FILE, or build one in the source tree with" \
            "'python3 -m pip wheel --no-deps -w dist .'" >&2
        exit 1
    fi
}

install() {
    check_platform
    find_wheel
    if [ "$SYSTEM" = 1 ]; then
        if ! getent passwd relay >/dev/null; then
            useradd --system --user-group --home-dir /var/lib/crisis-relay --no-create-home \
                --shell /usr/sbin/nologin relay
            say "created the system user relay"
        fi
        usermod -a -G dialout relay
    fi
    if [ ! -x "$PREFIX/bin/python" ]; then
        "$PYTHON" -m venv "$PREFIX"
    fi
    stamp="$PREFIX/.installed-wheel"
    sum=$(sha256sum "$WHEEL" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ] && [ -x "$PREFIX/bin/relay" ]; then
        say "this wheel is already installed in $PREFIX"
    else
        # Dependencies from the package index (wheels only: no compiler on a node), then the
        # wheel itself again so a rebuilt wheel of the same version replaces the old files.
        "$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check \
            --only-binary=:all: "$WHEEL"
        "$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
            --force-reinstall "$WHEEL"
        echo "$sum" > "$stamp"
    fi
    mkdir -p "$ETC" "$STATE" "$(dirname "$UNIT")"
    chmod 0750 "$ETC"
    chmod 0700 "$STATE"
    if [ "$SYSTEM" = 1 ]; then
        chown root:relay "$ETC"
        chown relay:relay "$STATE"
    fi
    "$PREFIX/bin/relay" files show systemd/relay.service > "$UNIT.tmp"
    mv "$UNIT.tmp" "$UNIT"
    chmod 0644 "$UNIT"
    if [ "$SYSTEM" = 1 ] && command -v systemctl >/dev/null 2>&1; then
        systemctl daemon-reload
    fi
    say "installed $("$PREFIX/bin/relay" --version) in $PREFIX; unit $UNIT"
    say "next: put relay.toml and the node's files in $ETC, run" \
        "'$PREFIX/bin/relay doctor --config $ETC/relay.toml', then 'systemctl enable --now relay'"
}

"$ACTION"
