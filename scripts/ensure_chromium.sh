#!/usr/bin/env sh
# Make sure Debian's `chromium` and `chromium-driver` are installed for the explorer page's browser
# tests (tests/serving/test_ui.py) and benchmarks/ui.py. Idempotent; it never starts a browser: the
# tests start their own, headless. Selenium is given both paths, so nothing else is downloaded
# (Playwright's or Selenium Manager's own browser builds cannot be fetched here). Installing needs
# root (CI images, this project's machines); without root it says what to run instead and exits
# non-zero.
set -eu

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing; install it with: sudo apt-get install -y chromium chromium-driver" >&2
    exit 1
fi
echo "installing chromium and chromium-driver (apt-get) for the explorer page's browser tests" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]
