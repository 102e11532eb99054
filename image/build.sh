#!/usr/bin/env bash
# Builds the homegw disk image for x86-64 PCs from Debian 12 packages, as root:
#
#   image/build.sh [--deb dist/homegw_X_amd64.deb] [--version V] [--out dist/image]
#
# Out (in --out, default dist/image/):
#   homegw-V.raw      the disk image: write it to a USB stick or a disk (dd)
#   homegw-V.qcow2    the same, compressed, for virtual machines
#   homegw-V.hgwup    the upgrade bundle of this image's root (web UI / API / CLI)
#   rootfs.img        the root file system alone (what the bundle carries)
#   vmlinuz           its kernel
#
# How: mmdebstrap makes the root file system from the machine's Debian
# sources with the homegw package (packaging/deb/build.sh, built first unless
# --deb names one) and image/rootfs/ laid over it; mkfs.ext4 -d and mkfs.vfat
# + mtools turn directories into file system images without mounting
# anything; GRUB images for UEFI and BIOS come from grub-mkimage;
# image/mkdisk.py puts the parts into a GPT disk. No loop device, no mount,
# no download outside the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

DEB=
VERSION=
OUT=dist/image
SUITE=bookworm
MIRROR=${HOMEGW_IMAGE_MIRROR:-http://deb.debian.org/debian}
SLOT_MIB=2048   # each root slot; the root is about 1.1 GiB
DATA_MIB=512    # the data partition as built; the first boot grows it to the end of the disk
while [ $# -gt 0 ]; do
  case "$1" in
    --deb) DEB=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: image/build.sh [--deb FILE] [--version V] [--out DIR]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "image: must run as root (mmdebstrap, file ownership)" >&2; exit 1; }
for tool in mmdebstrap mkfs.ext4 mkfs.vfat mcopy grub-mkimage grub-editenv sfdisk qemu-img; do
  command -v "$tool" >/dev/null || { echo "image: $tool is missing: run scripts/setup.sh" >&2; exit 1; }
done

if [ -z "$DEB" ]; then
  bash packaging/deb/build.sh --out dist >/dev/null
  DEB=$(ls -t dist/homegw_*_amd64.deb | head -n 1)
fi
DEB=$(realpath "$DEB")
PACKAGE_VERSION=$(dpkg-deb --field "$DEB" Version)
VERSION=${VERSION:-$PACKAGE_VERSION}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
WORK=$(mktemp -d /var/tmp/homegw-image.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
started=$(date +%s)
echo "image: homegw $VERSION (package $PACKAGE_VERSION) in $OUT"

# -- the root file system --------------------------------------------------------
PACKAGES=(
  systemd systemd-sysv udev dbus kmod iproute2 procps less ca-certificates
  # the kernel: bookworm-backports' (6.12), the newest Debian 12 has (README,
  # "The kernel"), with its own headers: bcc compiles the datapath against them
  # (they satisfy the package's linux-headers-amd64, dropped from $deps below)
  linux-image-amd64/bookworm-backports linux-headers-amd64/bookworm-backports initramfs-tools
  grub-common     # grub-editenv: the A/B boot state
  e2fsprogs dosfstools zstd fdisk   # fdisk: sfdisk grows the data partition
  openssh-server  # off until /data/ssh/enabled exists
)
# The package's dependencies come from the mirror with the rest; the package
# itself goes in by dpkg in a hook (apt cannot hand a local .deb to a dpkg
# running in the chroot). Depends and Recommends, versions and alternatives
# after the first dropped (dpkg -i checks the versions).
deps=$(dpkg-deb --field "$DEB" Depends Recommends | sed -e 's/^[A-Za-z-]*: //' -e 's/([^)]*)//g' \
  | tr ',' '\n' | sed -e 's/|.*//' -e 's/ //g' | grep -v -e '^$' -e '^linux-headers-amd64$' \
  | sort -u | paste -sd, -)
mmdebstrap --variant=minbase --mode=root --quiet \
  --include="$(IFS=,; echo "${PACKAGES[*]}"),$deps" \
  --customize-hook="copy-in $DEB /tmp" \
  --customize-hook="chroot \"\$1\" dpkg -i /tmp/$(basename "$DEB")" \
  --customize-hook="rm \"\$1/tmp/$(basename "$DEB")\"" \
  --customize-hook="sync-in $REPO/image/rootfs /" \
  --customize-hook="chroot \"\$1\" /bin/sh -s $VERSION < $REPO/image/customize.sh" \
  "$SUITE" "$WORK/root" "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
  "deb $MIRROR $SUITE-backports main" "deb ${MIRROR%/debian}/debian-security $SUITE-security main"
cp "$WORK/root/boot/vmlinuz" "$OUT/vmlinuz"  # the kernel alone (the tests' KVM probe boots it)

# -- file system images -------------------------------------------------------------
# GRUB 2.06 cannot read ext4's metadata_csum_seed and orphan_file features
EXT4=(-q -F -t ext4 -O ^metadata_csum_seed,^orphan_file -E lazy_itable_init=0)
root_mib=$(( $(du -sm "$WORK/root" | cut -f1) * 115 / 100 + 64 ))
[ "$root_mib" -le "$SLOT_MIB" ] || { echo "image: the root needs $root_mib MiB: more than a slot" >&2; exit 1; }
mkfs.ext4 "${EXT4[@]}" -L homegw-root -d "$WORK/root" "$OUT/rootfs.img" "${root_mib}M"

mkdir "$WORK/data"  # empty: homegw-data.service lays it out at each boot
mkfs.ext4 "${EXT4[@]}" -L homegw-data -d "$WORK/data" "$WORK/data.img" "${DATA_MIB}M"

# -- GRUB: one grub.cfg on the ESP, read by a UEFI and a BIOS image ---------------------
GRUB_MODULES=(part_gpt fat ext2 normal linux search regexp loadenv test echo
  configfile serial terminal gzio boot sleep)
grub-mkimage -O x86_64-efi -d /usr/lib/grub/x86_64-efi -p /homegw \
  -o "$WORK/BOOTX64.EFI" "${GRUB_MODULES[@]}" efi_gop efi_uga all_video
grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc -p '(,gpt2)/homegw' \
  -o "$WORK/core.img" biosdisk "${GRUB_MODULES[@]}" vga
grub-editenv "$WORK/grubenv" create
grub-editenv "$WORK/grubenv" set homegw_active=a homegw_tried=0 "homegw_version_a=$VERSION"
mkfs.vfat -n HOMEGW-ESP -C "$WORK/esp.img" $((64 * 1024 - 64)) >/dev/null
mmd -i "$WORK/esp.img" ::/EFI ::/EFI/BOOT ::/homegw
mcopy -i "$WORK/esp.img" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$WORK/esp.img" image/grub/grub.cfg "$WORK/grubenv" ::/homegw/

# -- the disk, its qcow2, the upgrade bundle ----------------------------------------
RAW="$OUT/homegw-$VERSION.raw"
python3 image/mkdisk.py --out "$RAW" --esp "$WORK/esp.img" --rootfs "$OUT/rootfs.img" \
  --data "$WORK/data.img" --core "$WORK/core.img" \
  --boot-img /usr/lib/grub/i386-pc/boot.img --slot-mib "$SLOT_MIB"
qemu-img convert -c -O qcow2 "$RAW" "$OUT/homegw-$VERSION.qcow2"
PYTHON=${PYTHON:-.venv/bin/python}
PYTHONPATH=$REPO "$PYTHON" -m homegw.upgrade.bundle make --rootfs "$OUT/rootfs.img" \
  --version "$VERSION" --out "$OUT/homegw-$VERSION.hgwup" ${HOMEGW_SIGNING_KEY:+--key "$HOMEGW_SIGNING_KEY"}

echo "image: done in $(( $(date +%s) - started )) s"
du -h --apparent-size "$RAW" | sed 's/^/image: raw (apparent) /'
du -h "$RAW" "$OUT/homegw-$VERSION.qcow2" "$OUT/homegw-$VERSION.hgwup" | sed 's/^/image: /'
