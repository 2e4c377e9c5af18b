#!/usr/bin/env bash
# Prepare a development or demo machine: a virtual environment with the project and its
# test tools, and mosquitto from the system's packages when it is missing.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# --rabbitmq: also install Debian's rabbitmq-server (3.10, MQTT plugin) for the slow clustered-
# broker test (tests/node/test_rabbitmq_cluster.py). The package's own service is not used:
# the test starts its own three members on free loopback ports.
WITH_RABBITMQ=0
for arg in "$@"; do
    case "$arg" in
        --rabbitmq) WITH_RABBITMQ=1 ;;
        *) echo "dev-setup: unknown option $arg (known: --rabbitmq)" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "dev-setup: Python >= 3.11 is required ($("$PYTHON" --version 2>&1) found)" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    touch "$stamp"
fi

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "dev-setup: installing mosquitto from the system's packages" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto >/dev/null
    # The package enables a system broker on port 1883; the relay's tests and demo start
    # their own brokers on free ports and never use it.
fi

# A headless browser for the drill report's screenshot test (tests/drill/test_report_browser.py).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    echo "dev-setup: installing chromium from the system's packages" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium \
        >/dev/null || echo "dev-setup: chromium could not be installed; the browser test skips" >&2
fi

# The console's browser tests (tests/console/test_console_browser.py) drive that chromium with
# selenium through Debian's chromedriver: nothing is downloaded at test time.
if ! command -v chromedriver >/dev/null 2>&1; then
    echo "dev-setup: installing chromium-driver from the system's packages" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        chromium-driver >/dev/null \
        || echo "dev-setup: chromium-driver could not be installed; the console browser test skips" >&2
fi

if [ "$WITH_RABBITMQ" -eq 1 ] && [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo "dev-setup: installing rabbitmq-server from the system's packages" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rabbitmq-server >/dev/null
    # The package may start a system broker on 5672 (and epmd on 4369); the test uses its own
    # ports, node names, cookie and epmd port and never talks to it.
fi
