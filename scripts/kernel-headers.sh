#!/usr/bin/env bash
# Points /lib/modules/<release>/build (and source) at Debian's kernel headers
# when the kernel has no headers of its own: bcc compiles the datapath against
# /lib/modules/$(uname -r)/build (DESIGN.md §4). Used by scripts/setup.sh and,
# installed as /usr/lib/homegw/kernel-headers.sh, by the package's postinst.
#
#   kernel-headers.sh [--install] [RELEASE]
#
# RELEASE defaults to `uname -r`. With --install, linux-headers-amd64 is
# installed when no Debian headers are there (setup.sh; never from a
# maintainer script: dpkg holds the lock, and the package depends on it).
# Prints one line per change and nothing when there is nothing to do;
# exits non-zero only when there are no headers to point at.
set -euo pipefail

install=0
if [ "${1:-}" = "--install" ]; then
  install=1
  shift
fi
release="${1:-$(uname -r)}"
kdir="/lib/modules/$release"

[ -e "$kdir/build/Makefile" ] && exit 0

if ! ls -d /usr/src/linux-headers-*-amd64 >/dev/null 2>&1; then
  if [ "$install" = 0 ]; then
    echo "kernel-headers: no /usr/src/linux-headers-*-amd64 to point $kdir/build at" >&2
    exit 1
  fi
  echo "installing linux-headers-amd64 (no headers for kernel $release)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-headers-amd64 >/dev/null
fi
hdr=$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -n 1)
common="${hdr%-amd64}-common"
mkdir -p "$kdir"
ln -sfn "$hdr" "$kdir/build"
ln -sfn "$common" "$kdir/source"
echo "pointed $kdir/build at $hdr and $kdir/source at $common"
