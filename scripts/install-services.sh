#!/usr/bin/env bash
# Install the real services the test suite talks to (PostgreSQL, InfluxDB 1.x,
# Mosquitto with dynamic security, Chromium with CJK fonts for the dashboard
# screenshots, libcoap3 tools, wrk for `marketfleet bench api`) from Debian.
#
# Idempotent: packages already installed (dpkg -s) are skipped. The system
# daemons are NOT started: tests run private instances on free ports
# (tests/services.py), so nothing may squat on the standard ports. A
# policy-rc.d that exits 101 keeps invoke-rc.d from starting anything during
# the install, and any daemon that started anyway is stopped afterwards.
set -euo pipefail

PACKAGES=(postgresql influxdb mosquitto mosquitto-clients chromium fonts-noto-cjk libcoap3-bin)
# Installed when we can, never required: `marketfleet bench api` falls back to Python clients without it.
OPTIONAL=(wrk)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done

for pkg in "${OPTIONAL[@]}"; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        if [ "$(id -u)" -eq 0 ] && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null 2>&1 \
                || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" \
                     >/dev/null 2>&1; }; }; then
            echo "install-services: installed optional $pkg"
        else
            echo "install-services: optional $pkg not installed (apt-get install -y $pkg)" >&2
        fi
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-services: all service packages present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-services: missing Debian packages: ${missing[*]}" >&2
    echo "install-services: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Keep package maintainer scripts from starting daemons (exit 101 = "action
# forbidden" for invoke-rc.d). Only remove the file afterwards if we made it.
POLICY=/usr/sbin/policy-rc.d
policy_created=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    policy_created=1
fi
cleanup() {
    if [ "$policy_created" -eq 1 ]; then
        rm -f "$POLICY"
    fi
}
trap cleanup EXIT

apt_install() {
    apt-get install -y -q "$@"
}

echo "install-services: installing ${missing[*]}"
# Package lists may be empty on a fresh machine; only update when needed.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || ! apt_install "${missing[@]}"; then
    apt-get update -q
    apt_install "${missing[@]}"
fi

# Belt and braces: if some postinst started a daemon regardless, stop it.
for svc in postgresql influxdb mosquitto; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
        "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
done

echo "install-services: done"
