"""The host-built C agent: the same protocol core as on the target, held to the model's answers.

Its SMCs, memory accesses and realm entries run on the model behind the shim
(cca_hil/tools/agent_shim.py), which also counts every request the agent executes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import serial
from agent_c_support import build_host_agent

from cca_hil.agent.emulator import AgentEmulator
from cca_hil.agent.link import AgentLink, LinkTimeouts
from cca_hil.agent.noise import NoisyStream
from cca_hil.agent.protocol import (
    AccessStep,
    ErrorCode,
    FillStep,
    Frame,
    FrameDecoder,
    Hello,
    InfoReply,
    MsgType,
    ReadStep,
    SmcStep,
    WriteStep,
    encode_batch,
    encode_request,
)
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.model.machine import Machine
from cca_hil.tools.agent_shim import BINARY_ENV, HostAgent

DELEGATE = RMI_1_0["granule_delegate"].fid
UNDELEGATE = RMI_1_0["granule_undelegate"].fid
POOL = 0x9000_0000
REALM_GRANULE = 0xFDC0_0000
NOISE = "ber=1e-4,drop=1e-3,dup=1e-3"
NOISY_TIMEOUTS = LinkTimeouts(boot=30.0, handshake=0.5, request=0.5, bulk=2.0, gap=0.02)
COMPARED = ("outcome", "registers", "status", "index", "outputs", "predicted", "matched")


@pytest.fixture(scope="module")
def binary() -> Path:
    return build_host_agent()


def _conformance(profile: str, out: Path, binary: Path) -> dict[str, Any]:
    env = dict(os.environ, **{BINARY_ENV: str(binary)})
    result = subprocess.run(
        [sys.executable, "-m", "cca_hil", "--profile", profile, "conformance", "--json", str(out)],
        cwd=out.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document: dict[str, Any] = json.loads(out.read_text())
    return document


def _steps(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(seq["name"], step["name"]): step for seq in document["sequences"] for step in seq["steps"]}


def test_conformance_suite_through_the_c_agent_gives_the_models_results(
    process_guard: str, binary: Path, tmp_path: Path
) -> None:
    agent = _conformance("agent-host", tmp_path / "agent-host.json", binary)
    model = _conformance("model", tmp_path / "model.json", binary)
    agent_steps, model_steps = _steps(agent), _steps(model)
    assert agent_steps.keys() == model_steps.keys()
    assert agent["counts"]["diverged"] == 0
    assert agent["counts"]["failed"] == agent["counts"]["error"] == 0
    skipped = []
    for key, step in agent_steps.items():
        if step["outcome"] == "skipped":
            # A serial target without a debug probe cannot read the GPT: `check: pas` skips, as on a board.
            assert step["op"] == "check" and "gpt_read" in step["message"], (key, step["message"])
            skipped.append(key)
            continue
        expected = model_steps[key]
        differing = {name: (step.get(name), expected.get(name)) for name in COMPARED[:5]}
        assert all(a == b for a, b in differing.values()), (key, differing)
    assert agent["counts"]["passed"] == model["counts"]["passed"] - len(skipped) > 5000
    assert len(skipped) < 20


def _open(agent: HostAgent) -> serial.SerialBase:
    return serial.serial_for_url(agent.path, timeout=0.05)


def test_ten_thousand_calls_through_noise_run_exactly_once_on_the_c_agent(
    process_guard: str, binary: Path
) -> None:
    granules = [POOL + i * 0x1000 for i in range(16)]
    wrong = []
    with HostAgent(Machine(), binary=binary) as agent:
        port = _open(agent)
        try:
            noisy = NoisyStream(port, NOISE, seed=2024)
            with AgentLink(noisy, timeouts=NOISY_TIMEOUTS, retries=24) as link:
                for call in range(10_000):
                    # Delegate then undelegate each granule: a call run twice fails the second time, and
                    # a lost call makes the next one fail, so every wrong count shows up as a wrong result.
                    granule = granules[(call // 2) % len(granules)]
                    fid = DELEGATE if call % 2 == 0 else UNDELEGATE
                    if link.smc(fid, granule)[0] != 0:
                        wrong.append(call)
                resends = link.stats.resends
                naks = link.stats.naks
        finally:
            port.close()
    shim = agent.shim
    assert wrong == []
    assert shim.duplicates() == {}
    assert shim.executed == 10_000
    assert shim.smcs == 10_000
    # The line really was noisy: frames were resent (and answered from the agent's replay cache).
    assert resends > 100 and naks > 0
    assert noisy.tx.flipped and noisy.tx.dropped and noisy.tx.duplicated


def _answers(port: serial.SerialBase, decoder: FrameDecoder, count: int) -> list[Frame]:
    frames: list[Frame] = []
    for _ in range(400):
        frames += [e for e in decoder.feed(port.read(4096)) if isinstance(e, Frame)]
        if len(frames) >= count:
            break
    return frames


def _fill(pa: int, size: int) -> bytes:
    return encode_request(FillStep(pa, size, b"\x01"))[1]


REQUESTS: list[tuple[str, int, bytes]] = [
    ("before HELLO", MsgType.SMC, encode_request(SmcStep(0x8400_0000))[1]),
    ("HELLO", MsgType.HELLO, Hello(max_frame=65536).encode()),
    ("unknown type", 0x42, b""),
    ("SMC with no results", MsgType.SMC, bytes.fromhex("000000840000")),
    ("SMC trailing bytes", MsgType.SMC, encode_request(SmcStep(0x8400_0000))[1] + b"\x00"),
    ("READ larger than a frame", MsgType.READ, encode_request(ReadStep(POOL, 5000))[1]),
    ("READ of a realm granule", MsgType.READ, encode_request(ReadStep(REALM_GRANULE, 16))[1]),
    ("FILL of 65 MiB", MsgType.FILL, _fill(POOL, 65 << 20)),
    ("ACCESS reserved mode bits", MsgType.ACCESS, bytes((0x40,)) + encode_request(AccessStep(POOL))[1][1:]),
    ("ACCESS store too wide", MsgType.ACCESS, bytes((0x80,)) + b"\x80\x80\x80\x80\x12" + b"\x80\x02"),
    ("ACCESS of a realm granule", MsgType.ACCESS, encode_request(AccessStep(REALM_GRANULE, size=4))[1]),
    ("BATCH reserved header bit", MsgType.BATCH, b"\x01\x82" + encode_request(ReadStep(POOL, 4))[1]),
    ("BATCH unknown shape", MsgType.BATCH, b"\x01\x31"),
    ("BATCH faulting step", MsgType.BATCH, encode_batch([ReadStep(POOL, 4), ReadStep(REALM_GRANULE, 4)])),
    ("REALM_RUN of no REC", MsgType.REALM_RUN, b"\x80\x80\x80\x80\x09\x80\x80\x80\x80\x09\x00"),
    ("REALM_RUN malformed action", MsgType.REALM_RUN, b"\x00\x00\x01\x63"),
    ("INFO", MsgType.INFO, b""),
    (
        "SMC with 17 arguments and 18 results",
        MsgType.SMC,
        encode_request(SmcStep(0xC400_0150, tuple(range(1, 18)), 18))[1],
    ),
    ("WRITE to a realm granule", MsgType.WRITE, encode_request(WriteStep(REALM_GRANULE + 8, b"abc"))[1]),
    ("FILL of a realm granule", MsgType.FILL, encode_request(FillStep(REALM_GRANULE, 64, b"\x5a\xa5"))[1]),
    ("store to a realm granule", MsgType.ACCESS, encode_request(AccessStep(REALM_GRANULE, True, 2, 7))[1]),
    ("WRITE then READ", MsgType.BATCH, encode_batch([WriteStep(POOL + 3, b"xyz"), ReadStep(POOL, 8)])),
    ("HELLO with the smallest frame", MsgType.HELLO, Hello(max_frame=16).encode()),
    ("READ just too large for 256", MsgType.READ, encode_request(ReadStep(POOL, 250))[1]),
    ("READ that just fits 256", MsgType.READ, encode_request(ReadStep(POOL, 249))[1]),
    ("BATCH that fills the frame", MsgType.BATCH, encode_batch([ReadStep(POOL, 100)] * 3)),
    ("HELLO of major 2", MsgType.HELLO, Hello(major=2).encode()),
]


def _same(what: str, answer: Frame, want: Frame) -> None:
    """The C agent's answer says what the emulator's does (names and free facts aside)."""
    assert (answer.type, answer.seq) == (want.type, want.seq), (what, answer, want)
    if answer.type == MsgType.ERROR:
        assert answer.payload[0] == want.payload[0], (what, ErrorCode(answer.payload[0]), answer.payload)
    elif answer.type == MsgType.HELLO_REPLY:
        assert answer.payload[:4] == want.payload[:4], what  # version, max_frame, replay depth
    elif answer.type == MsgType.INFO_REPLY:
        mine, theirs = InfoReply.decode(answer.payload), InfoReply.decode(want.payload)
        assert (mine.pa_bits, mine.regions, mine.granule_pool, mine.platform) == (
            theirs.pa_bits,
            theirs.regions,
            theirs.granule_pool,
            theirs.platform,
        )
    elif answer.type != MsgType.LOG:
        assert answer.payload == want.payload, what


@pytest.mark.parametrize("replay", [False, True], ids=["fresh", "replayed"])
def test_every_answer_of_the_c_agent_is_the_emulators(process_guard: str, binary: Path, replay: bool) -> None:
    emulator = AgentEmulator(Machine())
    decoder = FrameDecoder(65536)
    with HostAgent(Machine(), binary=binary) as agent:
        port = _open(agent)
        try:
            for seq, (what, msg, payload) in enumerate(REQUESTS, 1):
                request = Frame(msg, seq, payload)
                # Sent twice, a request must be answered twice the same way (replayed, not run again).
                sends = 2 if replay else 1
                expected = [
                    event
                    for _ in range(sends)
                    for event in FrameDecoder(65536).feed(emulator.respond(request))
                    if isinstance(event, Frame)
                ]
                for _ in range(sends):
                    port.write(request.encode())
                got = _answers(port, decoder, len(expected))
                assert len(got) == len(expected), (what, got, expected)
                for answer, want in zip(got, expected, strict=True):
                    _same(what, answer, want)
        finally:
            port.close()
    # Only the requests that ran were counted, once each, however often they were sent.
    executed = agent.shim.executions
    assert all(count == 1 for count in executed.values())
    assert sorted(seq for _, seq in executed) == sorted(seq for _, seq in emulator.executions)


def test_cli_run_through_a_noisy_link_to_the_c_agent_passes_and_runs_each_request_once(
    process_guard: str, binary: Path, tmp_path: Path
) -> None:
    env = dict(os.environ, **{BINARY_ENV: str(binary)})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cca_hil",
            "--profile",
            "agent-host",
            "--inject-noise",
            NOISE,
            "--set",
            "link.retries=24",
            "--set",
            "serial.launch_timeout=60",
            "--set",
            "link.timeouts.request=5",
            "run",
            "realm-lifecycle",
            "--json",
            str(tmp_path / "out.json"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "out.json").read_text())["outcome"] == "passed"
    # The shim reports its count into the board log of the run folder when the run closes it.
    logs = list(tmp_path.glob("cca-hil-runs/*/board.log"))
    assert len(logs) == 1
    summary = [line for line in logs[0].read_text().splitlines() if "requests executed" in line]
    assert len(summary) == 1
    assert ", 0 executed more than once," in summary[0]
    assert int(summary[0].split("agent-shim: ")[1].split()[0]) > 100
