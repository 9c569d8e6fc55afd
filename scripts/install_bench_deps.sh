#!/bin/sh
# Installs what `flotilla bench --compare-etcd` needs beyond the Python
# dependencies: Debian's etcd-server (the `etcd` binary at /usr/bin/etcd).
# Guarded: does nothing when etcd is already there; needs root (or sudo) and apt-get.
set -eu
if [ -x /usr/bin/etcd ]; then
    echo "etcd already installed: $(/usr/bin/etcd --version 2>/dev/null | head -n 1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get here: install etcd 3.4+ yourself and pass --etcd-bin PATH" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else echo "need root or sudo for apt-get" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# --no-install-recommends: the package only needs its binary; the Debian
# postinst may try to start a service, which fails harmlessly without systemd.
$SUDO apt-get install -y --no-install-recommends etcd-server
# Debian starts a default member on 2379/2380 when it can: the benchmark runs its own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    $SUDO systemctl stop etcd || true
    $SUDO systemctl disable etcd || true
fi
/usr/bin/etcd --version | head -n 1
