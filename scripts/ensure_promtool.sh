#!/usr/bin/env sh
# Make sure `promtool` (Prometheus' rule checker and unit tester) is installed for tests/k8s/test_alerts.py,
# which evaluates every alert with Prometheus' own engine. Debian ships it in the `prometheus` package
# (19 MB); installing it never starts a server here (no init system runs it), and the tests start none.
# Idempotent; without root it says what to run instead and exits non-zero.
set -eu

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "promtool is missing; install it with: sudo apt-get install -y prometheus" >&2
    exit 1
fi
echo "installing prometheus (apt-get) for promtool, which the alert tests run" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null
