"""Chains: the module order of one hook, held in a pinned BPF_PROG_ARRAY.

Each (NIC, hook) has two generations of slots. A new order is written into
the inactive generation, then chain_generation[nic, hook] is flipped: the
switch is one map write, so a packet runs either the old chain or the new
one, never a mix, and modules that stay are not touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging

from homegw.dataplane.abi import MAX_MODULES, Hook, Nic, chain_slot, generation_key

log = logging.getLogger(__name__)


class ChainError(ValueError):
    pass


class Chain:
    def __init__(self, hook: Hook, prog_array, generations) -> None:  # tables
        self.hook = hook
        self._progs = prog_array
        self._generations = generations

    def active_generation(self, nic: Nic) -> int:
        return int(self._generations[ctypes.c_uint32(generation_key(nic, self.hook))].value) & 1

    def install(self, nic: Nic, program_fds: list[int]) -> None:
        """Make program_fds (in order) the chain of nic, atomically."""
        if len(program_fds) > MAX_MODULES:
            raise ChainError(f"at most {MAX_MODULES} modules per chain, got {len(program_fds)}")
        target = 1 - self.active_generation(nic)
        for position in range(MAX_MODULES):
            slot = ctypes.c_uint32(chain_slot(nic, target, position))
            if position < len(program_fds):
                self._progs[slot] = ctypes.c_int(program_fds[position])
            else:
                self._clear(slot)
        key = ctypes.c_uint32(generation_key(nic, self.hook))
        self._generations[key] = ctypes.c_uint32(target)
        log.debug(
            "%s chain on %s: %d modules, generation %d",
            self.hook.name,
            nic.name,
            len(program_fds),
            target,
        )

    def clear(self, nic: Nic) -> None:
        """Empty both generations: packets go straight to the kernel."""
        self.install(nic, [])
        self.install(nic, [])

    def clear_inactive(self, nic: Nic) -> None:
        """Empty the generation no packet starts in (after a switch, once the
        packets that were in the old one are long gone): its programs are
        then referenced by nothing of ours."""
        target = 1 - self.active_generation(nic)
        for position in range(MAX_MODULES):
            self._clear(ctypes.c_uint32(chain_slot(nic, target, position)))

    def _clear(self, slot: ctypes.c_uint32) -> None:
        with contextlib.suppress(KeyError):
            del self._progs[slot]
