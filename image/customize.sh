#!/bin/sh
# Runs inside the image's root file system (mmdebstrap's customize hook), after
# the packages and image/rootfs/ are in: `sh -s VERSION`.
set -eu
VERSION=$1

# the kernel and initrd at fixed names: grub.cfg boots (hdX,gptN)/boot/vmlinuz
kernel=$(ls /boot/vmlinuz-* | sort -V | tail -n 1)
release=${kernel#/boot/vmlinuz-}

# a gateway has no sound, cameras, GPUs (the console uses the firmware's frame
# buffer), radios or InfiniBand: their modules go (about 200 MB)
mods=/lib/modules/$release/kernel
rm -rf "$mods/sound" "$mods/drivers/media" "$mods/drivers/infiniband" \
  "$mods/drivers/staging" "$mods/drivers/net/wireless" "$mods/net/wireless" \
  "$mods/net/mac80211" "$mods/net/bluetooth" "$mods/drivers/bluetooth" \
  "$mods/drivers/isdn" "$mods/drivers/gpu/drm/amd" "$mods/drivers/gpu/drm/nouveau" \
  "$mods/drivers/gpu/drm/i915" "$mods/drivers/gpu/drm/radeon"
# only the image's kernel: the package's postinst links headers for the kernel
# it sees running, which in this chroot is the build machine's
for dir in /lib/modules/*; do
  [ "$dir" = "/lib/modules/$release" ] || rm -rf "$dir"
done
depmod "$release"
# bcc compiles against /lib/modules/$release/build: the kernel's own headers
# (image/build.sh installs them); the build fails here if they are missing
test -e "/lib/modules/$release/build/Makefile"
update-initramfs -u -k "$release" >/dev/null
ln -sfn "vmlinuz-$release" /boot/vmlinuz
ln -sfn "initrd.img-$release" /boot/initrd.img

# what this root is (homegw.upgrade reads it; the upgrade bundle names it too)
cat > /usr/lib/homegw/image-release <<EOF
VERSION=$VERSION
BUILD=$(date -u +%Y-%m-%dT%H:%M:%SZ)
COMPATIBLE=homegw-x86_64
KERNEL=$release
EOF

# read-only root: mount points, a machine id made at boot, no shipped host keys
mkdir -p /data /boot/efi /etc/homegw /var/lib/homegw
: > /etc/machine-id
rm -f /etc/ssh/ssh_host_*
systemctl enable homegw.service homegw-firstboot.service homegw-confirm.service homegw-grow.service >/dev/null
systemctl mask systemd-random-seed.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer >/dev/null 2>&1 || true

# the local console (tty and serial) logs in as root without a password, like
# OpenWrt's: it is physical access; SSH refuses empty passwords and is off
passwd -d root >/dev/null
