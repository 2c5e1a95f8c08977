#!/usr/bin/env bash
# Chromium for the browser tests (`make browser`, also run by `make test`), the first way that works:
#   1. Debian's chromium is installed, or Playwright's own build is already downloaded: nothing to do;
#   2. as root or with password-less sudo on Debian/Ubuntu: apt-get install chromium (+ the fonts the
#      screenshots need), as CI does;
#   3. online: Playwright's own download (`python -m playwright install chromium`, ~170 MB in ~/.cache);
#   4. otherwise one line saying how, and the browser tests skip (they fail under LMLAB_REQUIRE_BROWSER=1).
# Usage: tests/chromium.sh [python]   (default .venv/bin/python)
set -u
PY="${1:-.venv/bin/python}"

debian_chromium() { [ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; }
emoji_font() { fc-list 2>/dev/null | grep -qi "noto color emoji"; }
playwright_chromium() {
    "$PY" - <<'PYEOF' 2>/dev/null
import os, sys
from playwright.sync_api import sync_playwright
with sync_playwright() as pw:
    sys.exit(0 if os.path.exists(pw.chromium.executable_path) else 1)
PYEOF
}

if debian_chromium && emoji_font; then exit 0; fi
SUDO=none
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
if [ "$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # The lock timeout waits for another apt-get (unattended upgrades, a parallel job) instead of failing.
    APT="$SUDO apt-get -o DPkg::Lock::Timeout=300"
    if $APT update -q && $APT install -y -q --no-install-recommends chromium fonts-dejavu-core fonts-noto-color-emoji; then
        exit 0
    fi
    echo "apt-get could not install chromium; trying the other ways" >&2
fi
if debian_chromium || playwright_chromium; then exit 0; fi
if [ "${LMLAB_OFFLINE:-}" != 1 ] && "$PY" -m playwright install chromium >/dev/null 2>&1; then
    echo "installed Playwright's Chromium (~/.cache/ms-playwright)"
    exit 0
fi
echo "No Chromium: the browser tests will skip. Install it with 'sudo apt-get install chromium' (Debian/Ubuntu) or '$PY -m playwright install chromium' (online)."
exit 0
