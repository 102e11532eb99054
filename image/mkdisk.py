"""Assemble the homegw disk image from its parts, without loop devices or mounts.

    python3 image/mkdisk.py --out disk.raw --esp esp.img --rootfs rootfs.img \
        --data data.img --core core.img --boot-img /usr/lib/grub/i386-pc/boot.img \
        --slot-mib 1536

The GPT layout (names are PARTLABELs, the contract with homegw.upgrade.slots):

    1 bios           1 MiB  BIOS boot partition: GRUB's i386-pc core.img
    2 homegw-esp    64 MiB  EFI System (FAT): BOOTX64.EFI, /homegw/grub.cfg, grubenv
    3 homegw-root-a  slot   ext4, read-only root of slot a (the rootfs written here)
    4 homegw-root-b  slot   ext4, slot b (empty until the first upgrade)
    5 homegw-data    rest   ext4, config and state

BIOS boot without grub-install: the MBR gets boot.img's code (its first 440
bytes, so the protective MBR's partition table stays) with the LBA of core.img
patched in, and core.img's first sector (diskboot) gets the block list of the
rest of core.img, the two things grub-bios-setup writes. UEFI needs nothing
patched: the firmware finds /EFI/BOOT/BOOTX64.EFI on the ESP.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
from pathlib import Path

SECTOR = 512
MIB = 1024 * 1024
FIRST_LBA = 2048  # partitions start at 1 MiB
ESP_MIB = 64
BIOS_MIB = 1
# offsets in GRUB 2.06's boot.img (include/grub/i386/pc/boot.h)
KERNEL_SECTOR_OFFSET = 0x5C  # u64: LBA of core.img's first sector
BOOT_DRIVE_CHECK_OFFSET = 0x66  # a 2-byte jump skipped on hard disks
MBR_CODE_BYTES = 440  # what may be written before the disk signature + table
# diskboot.img's block list: the last 12 bytes of core.img's first sector
BLOCKLIST_OFFSET = SECTOR - 12  # u64 start LBA, u16 sector count, u16 segment
BLOCKLIST_SEGMENT = 0x820

BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def mib(path: Path) -> int:
    """A part's size in whole MiB, rounded up."""
    return -(-path.stat().st_size // MIB)


def layout(slot_mib: int, data_mib: int) -> list[tuple[str, str, int]]:
    """(name, GPT type, size in MiB) of each partition, in order."""
    return [
        ("bios", BIOS_BOOT_TYPE, BIOS_MIB),
        ("homegw-esp", ESP_TYPE, ESP_MIB),
        ("homegw-root-a", LINUX_TYPE, slot_mib),
        ("homegw-root-b", LINUX_TYPE, slot_mib),
        ("homegw-data", LINUX_TYPE, data_mib),
    ]


def partition(disk: Path, parts: list[tuple[str, str, int]]) -> list[int]:
    """Write the GPT with sfdisk; returns each partition's first LBA."""
    script = ["label: gpt", f"first-lba: {FIRST_LBA}"]
    starts = []
    lba = FIRST_LBA
    for name, ptype, size in parts:
        sectors = size * MIB // SECTOR
        script.append(f"start={lba}, size={sectors}, type={ptype}, name={name}")
        starts.append(lba)
        lba += sectors
    subprocess.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)],
        input="\n".join(script) + "\n",
        text=True,
        check=True,
    )
    return starts


def write_at(disk: Path, lba: int, data: bytes) -> None:
    with disk.open("r+b") as out:
        out.seek(lba * SECTOR)
        out.write(data)


def copy_part(disk: Path, lba: int, part: Path) -> None:
    """Copy a file system image into the disk at `lba`, keeping holes sparse."""
    subprocess.run(
        [
            "dd",
            f"if={part}",
            f"of={disk}",
            "bs=1M",
            f"seek={lba * SECTOR}",
            "oflag=seek_bytes",
            "conv=notrunc,sparse",
            "status=none",
        ],
        check=True,
    )


def bios_boot_code(boot_img: bytes, core_lba: int) -> bytes:
    """boot.img's MBR code pointing at core.img, as grub-bios-setup patches it."""
    code = bytearray(boot_img[:MBR_CODE_BYTES])
    struct.pack_into("<Q", code, KERNEL_SECTOR_OFFSET, core_lba)
    code[BOOT_DRIVE_CHECK_OFFSET : BOOT_DRIVE_CHECK_OFFSET + 2] = b"\x90\x90"
    return bytes(code)


def placed_core(core_img: bytes, core_lba: int) -> bytes:
    """core.img with diskboot's block list naming the sectors after the first."""
    sectors = -(-len(core_img) // SECTOR)
    if sectors > BIOS_MIB * MIB // SECTOR:
        raise SystemExit(f"core.img is {sectors} sectors: larger than the bios partition")
    core = bytearray(core_img.ljust(sectors * SECTOR, b"\0"))
    struct.pack_into("<QHH", core, BLOCKLIST_OFFSET, core_lba + 1, sectors - 1, BLOCKLIST_SEGMENT)
    return bytes(core)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--esp", type=Path, required=True)
    ap.add_argument("--rootfs", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--core", type=Path, required=True)
    ap.add_argument("--boot-img", type=Path, required=True)
    ap.add_argument("--slot-mib", type=int, required=True)
    args = ap.parse_args()

    if mib(args.rootfs) > args.slot_mib:
        raise SystemExit(
            f"rootfs is {mib(args.rootfs)} MiB: larger than a {args.slot_mib} MiB slot"
        )
    if mib(args.esp) > ESP_MIB:
        raise SystemExit(f"the ESP image is larger than {ESP_MIB} MiB")
    parts = layout(args.slot_mib, mib(args.data))
    total = FIRST_LBA * SECTOR + sum(size for _, _, size in parts) * MIB + MIB  # + backup GPT
    args.out.unlink(missing_ok=True)
    with args.out.open("wb") as disk:
        disk.truncate(total)
    bios, esp, root_a, _root_b, data = partition(args.out, parts)
    copy_part(args.out, esp, args.esp)
    copy_part(args.out, root_a, args.rootfs)
    copy_part(args.out, data, args.data)
    write_at(args.out, bios, placed_core(args.core.read_bytes(), bios))
    write_at(args.out, 0, bios_boot_code(args.boot_img.read_bytes(), bios))
    os.sync()
    print(f"mkdisk: {args.out} ({total // MIB} MiB): slots of {args.slot_mib} MiB")


if __name__ == "__main__":
    main()
