#!/usr/bin/env bash
# Certifies the project's fake Key Vault with the official Azure SDK for Python: builds
# `examples/fake_vault`, installs the pinned SDK into a venv (reused while
# requirements.txt is unchanged) and runs certify.py against the standalone fake.
# Exit status: 0 when every SDK operation behaved as against the real service.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${AZURE_SDK_VENV:-target/azure-sdk-venv}
req=tests/azure_sdk/requirements.txt
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/.requirements"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req"
    cp "$req" "$venv/.requirements"
fi
cargo build --locked --quiet --example fake_vault
exec "$venv/bin/python" tests/azure_sdk/certify.py target/debug/examples/fake_vault
