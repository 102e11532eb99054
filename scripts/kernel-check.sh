#!/usr/bin/env bash
# Runs datapath tests on one of Debian 12's kernels instead of this machine's:
# 6.1 (Debian 12's own: what a box with the .deb runs) or 6.12 (bookworm-
# backports': the image's). Their verifiers refuse things newer ones accept,
# so a module that loads here may not load there (README, "The kernel").
#
#   scripts/kernel-check.sh 6.1|6.12 [pytest args]
#
# Without pytest args: the first test of each tests/datapath file (every
# module compiled and loaded once; about 25 minutes under TCG).
#
# How: the kernel's packages come from Debian's mirror (cached under
# /var/cache/homegw-kernels/), a busybox initramfs mounts this machine's root
# over virtio-9p, and the guest chroots into it and runs .venv's pytest with
# the kernel's own headers where bcc looks for them. qemu uses TCG (the
# tests/image probe says why KVM may not run here). The guest writes only its
# tmpfs mounts and the log; its verdict is pytest's exit status.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
MIRROR=${HOMEGW_IMAGE_MIRROR:-http://deb.debian.org/debian}

case "${1:-}" in
  6.1) SUITE=bookworm; SERIES=6.1 ;;
  6.12) SUITE=bookworm-backports; SERIES=6.12 ;;
  *) echo "usage: scripts/kernel-check.sh 6.1|6.12 [pytest args]" >&2; exit 2 ;;
esac
shift
[ "$(id -u)" = 0 ] || { echo "kernel-check: must run as root (qemu's 9p export of /)" >&2; exit 1; }
for tool in qemu-system-x86_64 busybox depmod xz; do
  command -v "$tool" >/dev/null || { echo "kernel-check: $tool is missing: run scripts/setup.sh" >&2; exit 1; }
done

# -- the kernel's packages -------------------------------------------------------
APT=/var/cache/homegw-kernels/apt
mkdir -p "$APT/lists/partial"
# one check at a time: guests share this machine's root (and its repo)
exec 9> /var/cache/homegw-kernels/lock
flock -n 9 || { echo "kernel-check: another check is running" >&2; exit 1; }
echo "deb $MIRROR $SUITE main" > "$APT/sources.list"
[ "$SUITE" = bookworm ] && echo "deb ${MIRROR%/debian}/debian-security bookworm-security main" >> "$APT/sources.list"
apt_opts=(-q -o "Dir::Etc::sourcelist=$APT/sources.list" -o Dir::Etc::sourceparts=-
  -o "Dir::State::Lists=$APT/lists" -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update >/dev/null
# the newest flavour-less amd64 image of the series, e.g. linux-image-6.1.0-57-amd64-unsigned
image_pkg=$(apt-cache "${apt_opts[@]}" search --names-only \
  "^linux-image-${SERIES//./\\.}[.][0-9.+a-z]*(-[0-9]+)?-amd64-unsigned$" \
  | cut -d' ' -f1 | sort -V | tail -n 1)
[ -n "$image_pkg" ] || { echo "kernel-check: no $SERIES kernel in $SUITE" >&2; exit 1; }
RELEASE=${image_pkg#linux-image-}
RELEASE=${RELEASE%-unsigned}
ABI=${RELEASE%-amd64}
WORK=/var/cache/homegw-kernels/$RELEASE
ROOT=$WORK/root
if [ ! -e "$ROOT/boot/vmlinuz-$RELEASE" ]; then
  mkdir -p "$WORK/debs" && rm -rf "$ROOT"
  kbuild=$(apt-cache "${apt_opts[@]}" depends "linux-headers-$RELEASE" | sed -n 's/.*Depends: \(linux-kbuild-[^ ]*\).*/\1/p' | head -n 1)
  (cd "$WORK/debs" && apt-get "${apt_opts[@]}" download "$image_pkg" "linux-headers-$RELEASE" \
    "linux-headers-$ABI-common" "$kbuild" >/dev/null)
  for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
  depmod -b "$ROOT" "$RELEASE"
fi

# -- the initramfs: 9p and its dependencies, then chroot into this machine's root -
modules=$(modprobe -d "$ROOT" -S "$RELEASE" --show-depends -a 9p 9pnet_virtio virtio_pci 2>/dev/null \
  | sed -n 's/^insmod \([^ ]*\).*/\1/p' | awk '!seen[$0]++')
INITRD=$WORK/initrd
rm -rf "$INITRD" && mkdir -p "$INITRD"/{bin,mods,proc,sys,dev,host,lib64,lib/x86_64-linux-gnu}
cp /bin/busybox "$INITRD/bin/"
for lib in $(ldd /bin/busybox | grep -o '/lib[^ ]*'); do cp "$lib" "$INITRD$lib"; done
order=()
for path in $modules; do
  name=$(basename "$path"); name=${name%.xz}
  case "$path" in *.xz) xz -dc "$path" > "$INITRD/mods/$name" ;; *) cp "$path" "$INITRD/mods/$name" ;; esac
  order+=("$name")
done
cat > "$INITRD/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in ${order[*]}; do insmod /mods/\$m || echo "kernel-check: insmod \$m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576,cache=loose host /host
umount /proc /sys /dev
mount -t proc proc /host/proc; mount -t sysfs sys /host/sys; mount -t devtmpfs dev /host/dev
mount -t tmpfs tmp /host/tmp; mount -t tmpfs run /host/run
exec chroot /host /bin/bash $WORK/guest.sh
EOF
chmod +x "$INITRD/init"
(cd "$INITRD" && find . | busybox cpio -o -H newc 2>/dev/null | gzip > "$WORK/initrd.img")

# -- what the guest runs -----------------------------------------------------------
if [ $# -eq 0 ]; then
  set -- $(.venv/bin/python -m pytest --collect-only -q -p no:cacheprovider tests/datapath 2>/dev/null \
    | grep '::' | awk -F'::' '!seen[$1]++')
fi
printf '%q ' "$@" > "$WORK/pytest-args"
cat > "$WORK/guest.sh" <<EOF
#!/bin/bash
mkdir -p /dev/shm /dev/pts; mount -t tmpfs shm /dev/shm; mount -t devpts pts /dev/pts
mount -t bpf bpf /sys/fs/bpf; mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
# the kernel's modules and headers where bcc and modprobe look
mount -t tmpfs mods /lib/modules && ln -s $ROOT/lib/modules/$RELEASE /lib/modules/
mount -t tmpfs src /usr/src && for d in $ROOT/usr/src/*; do ln -s "\$d" /usr/src/; done
ip link set lo up
cd $REPO
export PYTHONDONTWRITEBYTECODE=1 HOME=/tmp TMPDIR=/tmp PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOMEGW_BUILD_TIMEOUT_S=1200  # a module's compile under TCG takes minutes
eval "set -- \$(cat $WORK/pytest-args)"
.venv/bin/python -m pytest -p no:cacheprovider -v -o addopts= --timeout 1800 "\$@" > $WORK/pytest.log 2>&1
echo \$? > $WORK/rc
sync
echo o > /proc/sysrq-trigger
EOF
rm -f "$WORK/rc" "$WORK/pytest.log"
echo "kernel-check: $RELEASE under TCG, $# test(s); the guest's log: $WORK/pytest.log"
qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -m 6144 -smp 2 -display none \
  -monitor none -no-reboot -serial "file:$WORK/console.log" \
  -kernel "$ROOT/boot/vmlinuz-$RELEASE" -initrd "$WORK/initrd.img" \
  -append "console=ttyS0 panic=-1 rdinit=/init" \
  -virtfs "local,path=/,mount_tag=host,security_model=passthrough,id=host,multidevs=remap"
cat "$WORK/pytest.log" 2>/dev/null || tail -n 40 "$WORK/console.log"
[ -f "$WORK/rc" ] || { echo "kernel-check: the guest stopped before pytest ended ($WORK/console.log)" >&2; exit 1; }
exit "$(cat "$WORK/rc")"
