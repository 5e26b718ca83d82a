#!/usr/bin/env sh
# Make sure `redis-server` is installed for the Feast integration tests (tests/features/).
# Idempotent, and it never starts a server: the tests start their own, bound to 127.0.0.1 on a
# free port, and stop it afterwards. Installing needs root (CI images, this project's machines);
# without root it says what to run instead and exits non-zero.
set -eu

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "redis-server is missing; install it with: sudo apt-get install -y redis-server" >&2
    exit 1
fi
echo "installing redis-server (apt-get) for the Feast integration tests" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends redis-server >/dev/null
command -v redis-server >/dev/null
