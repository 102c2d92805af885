#!/usr/bin/env bash
# The headless browser that tests/test_web_demo.py drives through selenium: Debian's chromium and
# chromium-driver packages (no browser is downloaded). Idempotent: does nothing when chromium and chromedriver
# are on PATH; otherwise installs them with apt-get as root or with passwordless sudo; where neither works it
# says what to install and exits 0 (the browser test then fails with the same advice).
set -u
have() { command -v "$1" >/dev/null 2>&1; }
ready() { (have chromium || have chromium-browser) && have chromedriver; }
ready && exit 0
PACKAGES="chromium chromium-driver"
if have apt-get; then
    SUDO=none
    if [ "$(id -u)" = 0 ]; then
        SUDO=
    elif have sudo && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    fi
    if [ "$SUDO" != none ]; then
        echo "install_browser.sh: apt-get install $PACKAGES" >&2
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
            && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
    fi
fi
ready && exit 0
echo "install_browser.sh: the web demo's browser test needs chromium and chromedriver on PATH; install them" \
     "(Debian/Ubuntu: apt-get install $PACKAGES) and run the tests again" >&2
exit 0
