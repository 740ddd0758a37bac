"""Model memory: RSS of a realm on a 1 TiB-PPS platform, delegate pairs with GPT + encryption, AES-XTS cost.

Baselines measured in the same run: the interpreter with the package imported
(RSS), a per-granule PAS dictionary doing the same transitions (what the model
kept before its GPT lived in memory), and a plain copy of a granule (AES-XTS).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

from _timing import rate

from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi import GRANULE_SIZE
from cca_hil.model.crypto import MemoryEncryption
from cca_hil.model.machine import Machine
from cca_hil.model.memory import REALM
from cca_hil.model.platform import PlatformConfig

DELEGATE = 0xC400_0151
UNDELEGATE = 0xC400_0152
POOL = 0x9000_0000

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a
# child would report the peak of whatever benchmark ran before it in the parent.
_RSS_SCRIPT = """
import json, sys
from cca_hil.profiles import build_target, load_profile
from cca_hil.rmi_client import GranuleAllocator, RealmBuilder, RmiClient
def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM in /proc/self/status")
baseline = hwm_kib()
if sys.argv[1] != "-":
    target = build_target(load_profile(sys.argv[1]))
    client = RmiClient(target)
    realm = RealmBuilder(client, GranuleAllocator.for_target(target), data_granules=64).build()
    pps = target.gpt_registers()[0] & 0b111
    stored = target.machine.store.granules_in_use
else:
    pps, stored = None, 0
peak = hwm_kib()
print(json.dumps({"baseline_kib": baseline, "peak_kib": peak, "pps": pps, "granules": stored}))
"""


def _rss(profile: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, profile], check=True, capture_output=True, text=True, timeout=300
    )
    result: dict[str, int] = json.loads(out.stdout)
    return result


def bench_rss() -> None:
    """Peak RSS of a fresh process holding the model and one realm with 64 data granules (goal < 100 MiB)."""
    bare = _rss("-")["peak_kib"] / 1024
    for profile in ("model", "model-mec"):
        figures = _rss(profile)
        peak = figures["peak_kib"] / 1024
        print(
            f"model_memory.rss[{profile}]: {peak:.1f} MiB peak with a 64-granule realm, PPS 1 TiB "
            f"(GPCCR.PPS={figures['pps']}), {figures['granules']} granules stored "
            f"(baseline: interpreter + package {bare:.1f} MiB; model adds {peak - bare:.1f} MiB; "
            f"goal < 100 MiB: {'met' if peak < 100 else 'NOT met'})"
        )


def _pairs(machine: Machine, n: int) -> None:
    smc = machine.smc
    for i in range(n):
        pa = POOL + ((i & 0xFFF) << 12)
        smc(DELEGATE, pa)
        smc(UNDELEGATE, pa)


def _dictionary_pairs(n: int) -> None:
    # The baseline: a PAS per granule in a dict, checked and flipped twice per pair.
    pas: dict[int, Pas] = {}
    for i in range(n):
        index = (POOL >> 12) + (i & 0xFFF)
        if pas.get(index, Pas.NONSECURE) is Pas.NONSECURE:
            pas[index] = Pas.REALM
        if pas.get(index) is Pas.REALM:
            pas.pop(index)


def bench_delegate_pairs() -> None:
    """Delegate+undelegate pairs/s: architectural GPT with and without encryption vs a per-granule dict."""
    # One machine per configuration, built outside the timed calls: only the pairs are measured.
    plain_machine = Machine()
    plain = rate(lambda n: _pairs(plain_machine, n))
    encrypted_machine = Machine(replace(PlatformConfig(), encryption=True, mec=True))
    encrypted = rate(lambda n: _pairs(encrypted_machine, n))
    baseline = rate(_dictionary_pairs)
    print(
        f"model_memory.delegate_pairs: {encrypted:,.0f} pairs/s with GPT + encryption + MEC, "
        f"{plain:,.0f} pairs/s with GPT, no encryption (baseline per-granule PAS dict {baseline:,.0f}/s; "
        f"GPT + encryption costs {baseline / encrypted:.0f}x the dict; "
        f"goal >= 50,000/s: {'met' if encrypted >= 50_000 else 'NOT met'})"
    )


def bench_xts() -> None:
    """AES-XTS of one granule (one data unit) vs a plain copy of it, MB/s."""
    engine = MemoryEncryption(0)
    granule = bytes(range(256)) * (GRANULE_SIZE // 256)
    engine.encrypt(REALM, POOL, granule)  # keys derived outside the measurement

    def encrypt(n: int) -> None:
        for i in range(n):
            engine.encrypt(REALM, POOL + (i << 12), granule)

    def copy(n: int) -> None:
        for _ in range(n):
            bytes(bytearray(granule))

    xts = rate(encrypt, unit_per_call=GRANULE_SIZE) / 1e6
    plain = rate(copy, unit_per_call=GRANULE_SIZE) / 1e6
    print(
        f"model_memory.aes_xts_granule: {xts:,.0f} MB/s ({xts * 1e6 / GRANULE_SIZE:,.0f} granules/s) "
        f"(baseline plain granule copy {plain:,.0f} MB/s; XTS costs {plain / xts:.1f}x a copy)"
    )


def main() -> None:
    """Print every model-memory figure."""
    bench_rss()
    bench_delegate_pairs()
    bench_xts()


if __name__ == "__main__":
    main()
