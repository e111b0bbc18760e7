#!/bin/sh
# Installs promtool (Debian's prometheus package) for the rule and config checks; does
# nothing when it is there. Needs root and the network to a Debian mirror (CI has both).
set -eu
if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup_promtool: promtool is missing and installing it needs root" >&2
    exit 3
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Only the binaries are needed: keep the service from starting inside containers.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.finsent
if [ ! -e /usr/sbin/policy-rc.d ]; then
    cp /usr/sbin/policy-rc.d.finsent /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
rm -f /usr/sbin/policy-rc.d.finsent
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null
