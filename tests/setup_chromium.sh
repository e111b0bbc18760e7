#!/bin/sh
# Installs Debian's chromium for the headless dashboard test; does nothing when it is there.
# Needs root and the network to a Debian mirror (CI has both); exits non-zero otherwise.
set -eu
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup_chromium: chromium is missing and installing it needs root" >&2
    exit 3
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
