#!/usr/bin/env bash
# Idempotent machine setup for homegw on Debian 12, as root.
# Installs what is missing, says what it changed, and changes nothing on a second run.
set -euo pipefail
cd "$(dirname "$0")/.."

changed=0
say() { echo "setup: $*"; changed=1; }

[ "$(id -u)" = 0 ] || { echo "setup: must run as root (bpf, netns, apt)" >&2; exit 1; }

# Debian packages: bcc and kernel tools for the datapath, real peers for the tests.
PACKAGES=(
  python3-bpfcc python3-venv python3-pip iproute2 ethtool kmod bpftool
  nftables conntrack tcpdump iputils-ping traceroute curl iperf3 netcat-openbsd
  dnsmasq-base udhcpc isc-dhcp-client dhcpcd-base dnsutils dnsperf kea-admin
  kea-dhcp6-server radvd ndisc6   # the ISP's DHCPv6 (prefix delegation) and RAs; rdisc6 on LAN hosts
  systemd   # systemd-analyze verify of packaging/systemd/homegw.service
  mmdebstrap  # tests/package: a clean Debian 12 root to install the .deb into
  grub-common  # grub-editenv: the upgrade tests' real grubenv (homegw/upgrade/slots.py)
  # image/build.sh and tests/image: file systems without mounts, GRUB for UEFI and BIOS, qemu
  grub-pc-bin grub-efi-amd64-bin mtools dosfstools e2fsprogs fdisk qemu-system-x86 qemu-utils ovmf
  busybox xz-utils  # scripts/kernel-check.sh: its initramfs, Debian's compressed modules
  chromium  # the browser tests' browser (Playwright drives it: no browser download)
)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bcc compiles against /lib/modules/$(uname -r)/build: a kernel without its own
# headers package gets Debian's (the package's postinst runs the same script).
headers=$(bash scripts/kernel-headers.sh --install)
[ -z "$headers" ] || say "$headers"

if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf
  say "mounted bpffs on /sys/fs/bpf"
fi

# The venv sees Debian's bcc (python3-bpfcc) through --system-site-packages.
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
  say "created .venv from /usr/bin/python3 with system site packages"
fi
stamp=.venv/.homegw-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # (a pip.conf on some machines names local indexes that may be absent: quiet that)
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 2> >(grep -v "is ignored: it is neither" >&2)
  echo "$want" > "$stamp"
  say "installed homegw and its Python dependencies into .venv"
fi

# The web UI's vendored front-end libraries (webui/static/vendor/, git-ignored).
if ! bash scripts/vendor.sh --check; then
  bash scripts/vendor.sh
  say "vendored the web UI's front-end libraries into webui/static/vendor/"
fi

[ "$changed" = 1 ] || echo "setup: nothing to change"
