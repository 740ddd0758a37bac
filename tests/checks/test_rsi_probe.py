"""The RSI version, asked from inside a probe realm that is removed again (``info``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cca_hil.arch.structs import RealmParams
from cca_hil.checks.rsi_probe import PROBE_VMID, probe_rsi_version
from cca_hil.profiles import build_target, load_profile
from cca_hil.rmi_client import GranuleAllocator, RmiClient


def test_the_model_answers_rsi_1_0_and_the_probe_leaves_nothing_behind() -> None:
    with build_target(load_profile("model")) as target:
        first = probe_rsi_version(target)
        assert (first.status, first.lower, first.higher, first.reason) == ("success", 0x10000, 0x10000, "")
        # Same VMID, same granules: only possible when the first probe tore its realm down completely.
        again = probe_rsi_version(target)
        assert again == first
        client = RmiClient(target)
        pool = GranuleAllocator.for_target(target)
        for _ in range(12):
            assert client.granule_delegate(pool.slot()).ok  # every probe granule is undelegated again


def test_a_probe_realm_that_cannot_be_built_says_where_it_failed() -> None:
    with build_target(load_profile("model")) as target:
        client = RmiClient(target)
        pool = GranuleAllocator.for_target(target)
        for _ in range(20):
            pool.slot()  # keep clear of the probe's granules
        rd, rtt0, params_pa = pool.slot(), pool.slot(), pool.slot()
        assert client.granule_delegate(rd).ok and client.granule_delegate(rtt0).ok
        client.write_struct(params_pa, RealmParams(s2sz=40, vmid=PROBE_VMID, rtt_base=rtt0, rtt_num_start=1))
        assert client.realm_create(rd, params_pa).ok  # the probe's VMID is taken
        version = probe_rsi_version(target)
    assert not version.answered
    assert version.reason.startswith("the probe realm failed at step realm_create")
    assert "RSI version: not asked (the probe realm failed at step realm_create" in version.describe()


def test_info_prints_the_negotiated_rsi_version(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    command = [sys.executable, "-m", "cca_hil", "info"]
    text = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300, env=env).stdout
    assert "RSI version 1.0 (lower 1.0; RSI_VERSION(1.0) said success, asked by a probe realm)" in text
    data = json.loads(
        subprocess.run(
            [*command, "--json"], check=True, capture_output=True, text=True, timeout=300, env=env
        ).stdout
    )
    assert data["rsi_version"] == {"status": "success", "lower": "1.0", "higher": "1.0"}
