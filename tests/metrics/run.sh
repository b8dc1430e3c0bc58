#!/usr/bin/env bash
# Checks /v1/metrics of the real binary with the official Prometheus text parser (pinned,
# from PyPI, in a venv reused while requirements.txt is unchanged) and kms-go's rules.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${METRICS_VENV:-target/metrics-venv}
req=tests/metrics/requirements.txt
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/.requirements"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req"
    cp "$req" "$venv/.requirements"
fi
cargo build --locked --quiet --bin kes
exec "$venv/bin/python" tests/metrics/check.py "$PWD/target/debug/kes"
