"""The Iris debug server: framing, the client against the FVP stand-in's server (real processes and
sockets), scripted servers for the protocol's corner cases, and the fvp target's debug view."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cca_hil.agent.link import AgentLink
from cca_hil.arch.gpt import decode_tables
from cca_hil.arch.pas import Pas
from cca_hil.arch.rmi_1_0 import GRANULE_DELEGATE
from cca_hil.errors import CapabilityError, TransportError
from cca_hil.fvp import FVP_PARAMS, IRIS_PORT, FvpConfig, FvpLauncher, FvpProcess
from cca_hil.profiles import build_target, load_profile, validate
from cca_hil.targets.base import Capability
from cca_hil.targets.fvp import DebugServerDisabledError, FvpTarget, space_pas
from cca_hil.transport.iris import (
    IrisCallError,
    IrisClient,
    IrisCodec,
    IrisError,
    IrisProtocolError,
    IrisTimeoutError,
    encode_message,
    spans,
)

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tools" / "fvp-standin"
GRANULE = 0x9010_0000
"""A granule in the stand-in model's NS pool (past BL33)."""
PLAIN = bytes(range(256)) * 16
SPACE_NAMES = {
    "Physical Memory (Secure)",
    "Physical Memory (Non Secure)",
    "Physical Memory (Root)",
    "Physical Memory (Realm)",
}


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_leaked_processes(process_guard: str) -> str:
    """Every process a test here starts must be gone when it ends (tests/conftest.py)."""
    return process_guard


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Stand-in firmware images (the stand-in checks they exist)."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "bl1.bin").write_bytes(b"\0" * 20 * 1024)
    (folder / "fip.bin").write_bytes(b"\0" * 900 * 1024)
    return folder


@pytest.fixture
def launch(tmp_path: Path, images: Path) -> Iterator[Callable[..., FvpProcess]]:
    """Start the stand-in through the real launcher with ``fvp.iris`` on; closed at teardown."""
    started: list[FvpProcess] = []

    def start(params: dict[str, Any] | None = None, *, iris: bool = True) -> FvpProcess:
        section: dict[str, Any] = {
            "binary": str(STANDIN),
            "images_dir": str(images),
            "firmware": {"bl1": "bl1.bin", "fip": "fip.bin"},
            "iris": iris,
            "params": params or {},
            "timeouts": {"ports": 30.0, "shutdown": 5.0, "kill": 5.0, "version": 30.0},
        }
        config = FvpConfig.from_section(validate(section, FVP_PARAMS, where="test", path="fvp"), where="test")
        process = FvpLauncher(config, run_dir=tmp_path / f"run{len(started)}").start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def _cpu(client: IrisClient) -> int:
    return next(i.inst_id for i in client.instances() if i.name.endswith(".cluster0.cpu0"))


def _space(client: IrisClient, inst: int, pas: Pas) -> int:
    return next(s.space_id for s in client.memory_spaces(inst) if space_pas(s.name) is pas)


# -- framing ---------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 64), 1 << 64) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(st.lists(json_values, min_size=1, max_size=4))
def test_frames_round_trip_however_the_bytes_are_split(messages: list[Any]) -> None:
    wire = b"".join(encode_message(m) for m in messages)
    assert IrisCodec().feed(wire) == messages
    for cut in range(len(wire) + 1):
        codec = IrisCodec()
        assert codec.feed(wire[:cut]) + codec.feed(wire[cut:]) == messages
        assert codec.pending == 0
    codec = IrisCodec()
    one_by_one = [m for i in range(len(wire)) for m in codec.feed(wire[i : i + 1])]
    assert one_by_one == messages


def test_encoding_is_the_documented_shape() -> None:
    text = json.dumps({"a": "é"}, separators=(",", ":"), ensure_ascii=False).encode()
    assert encode_message({"a": "é"}) == b"IrisJson:%d:%s\n" % (len(text), text)
    assert len(text) == 10  # bytes, not characters


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"IrisU64Json:\x01\x00\x00\x00", "unknown prefix"),
        (b"HTTP/1.1 200 OK\r\n", "unknown prefix"),
        (b"IrisJson:02:{}\n", "leading zero"),
        (b"IrisJson:12345678901:", "longer than 10 digits"),
        (b"IrisJson:1x:", "not a decimal"),
        (b"IrisJson::{}", "empty length"),
        (b"IrisJson:2:{}X", "no line feed"),
        (b"IrisJson:2:{]\n", "does not parse"),
    ],
)
def test_bad_frames_are_refused_and_the_decoder_stays_broken(wire: bytes, message: str) -> None:
    codec = IrisCodec()
    with pytest.raises(IrisProtocolError, match=message):
        codec.feed(wire)
    with pytest.raises(IrisProtocolError, match=message):
        codec.feed(encode_message({}))


@settings(max_examples=200)
@given(st.integers(0, 1 << 40), st.integers(0, 5000), st.integers(1, 600))
def test_transfers_are_cut_into_aligned_words_and_bytes_within_the_cap(
    address: int, size: int, chunk: int
) -> None:
    pieces = spans(address, size, chunk)
    at = address
    for start, width, count in pieces:
        assert start == at and count > 0
        assert width in (1, 8)
        if width == 8:
            assert start % 8 == 0
        assert width * count <= max(8, chunk - chunk % 8)
        at += width * count
    assert at == address + size
    # Bytes only where words cannot go: an unaligned head or a tail shorter than a word.
    assert all(w == 8 or s % 8 or (address + size) - s < 8 or c < 8 for s, w, c in pieces)


# -- the stand-in's server through the launcher -----------------------------------------------------------


def test_launcher_starts_the_server_and_the_client_registers_and_lists(
    launch: Callable[..., FvpProcess],
) -> None:
    fvp = launch()
    at = fvp.argv.index("-I")
    assert fvp.argv[at : at + 4] == ["-I", "-p", "--iris-port", "0"]
    port = fvp.ports[IRIS_PORT]
    with IrisClient.connect(port) as client, IrisClient.connect(port) as other:
        inst = client.register("client.cca_hil_test")
        assert inst != 0 and client.inst_id == inst
        assert other.register("client.cca_hil_test") != inst
        assert other.inst_name == "client.cca_hil_test_1"  # uniquified
        names = {i.name: i.inst_id for i in client.instances()}
        assert names["client.cca_hil_test"] == inst
        assert "component.FVP_Base_RevC_2xAEMvA.cluster1.cpu3" in names
        spaces = client.memory_spaces(_cpu(client))
        assert {s.name for s in spaces} == SPACE_NAMES
        assert {space_pas(s.name) for s in spaces} == {Pas.SECURE, Pas.NONSECURE, Pas.ROOT, Pas.REALM}
    # Closing a connection unregisters its client.
    with IrisClient.connect(port) as client:
        assert not any(i.name.startswith("client.cca_hil_test") for i in client.instances())


def test_reads_match_what_the_agent_wrote_and_the_agent_reads_what_iris_wrote(
    launch: Callable[..., FvpProcess],
) -> None:
    fvp = launch()
    with AgentLink(fvp.agent_terminal) as link, IrisClient.connect(fvp.ports[IRIS_PORT]) as client:
        client.register()
        cpu = _cpu(client)
        ns = _space(client, cpu, Pas.NONSECURE)
        link.write(GRANULE, PLAIN)
        assert client.read(cpu, ns, GRANULE, len(PLAIN)) == PLAIN
        # Unaligned, in small requests: bytes for the head and tail, words between.
        assert client.read(cpu, ns, GRANULE + 3, 50, chunk=16) == PLAIN[3:53]
        client.write(cpu, ns, GRANULE + 0x1005, b"written through Iris", chunk=8)
        assert link.read(GRANULE + 0x1000, 32) == b"\0" * 5 + b"written through Iris" + b"\0" * 7


@pytest.mark.parametrize("mpe", [True, False])
def test_a_delegated_granule_read_through_the_ns_space(launch: Callable[..., FvpProcess], mpe: bool) -> None:
    fvp = launch({"bp.mpe.enable": mpe})
    with AgentLink(fvp.agent_terminal) as link, IrisClient.connect(fvp.ports[IRIS_PORT]) as client:
        client.register()
        cpu = _cpu(client)
        ns, realm = _space(client, cpu, Pas.NONSECURE), _space(client, cpu, Pas.REALM)
        link.write(GRANULE, PLAIN)
        assert client.read(cpu, ns, GRANULE, 4096) == PLAIN
        assert link.smc(GRANULE_DELEGATE.fid, GRANULE)[0] == 0
        seen_ns = client.read(cpu, ns, GRANULE, 4096)
        # The RMM scrubbed the granule through the Realm PAS: zeros there in either case.
        assert client.read(cpu, realm, GRANULE, 4096) == bytes(4096)
        if mpe:
            # Under the Realm key, read with the Non-secure one: neither the plaintext nor zeros.
            assert seen_ns != PLAIN and seen_ns != bytes(4096)
            assert len(set(seen_ns)) > 64
        else:
            assert seen_ns == bytes(4096)


def test_function_errors_carry_code_and_message(launch: Callable[..., FvpProcess]) -> None:
    fvp = launch()
    with IrisClient.connect(fvp.ports[IRIS_PORT]) as client:
        client.register()
        cpu = _cpu(client)
        with pytest.raises(IrisCallError, match="E_unknown_memory_space_id") as error:
            client.read(cpu, 99, 0x8000_0000, 8)
        assert error.value.method == "memory_read" and error.value.code != 0
        with pytest.raises(IrisCallError, match="E_function_not_supported") as error:
            client.call("simulationTime_run", instId=1)
        assert error.value.code == -32601
        with pytest.raises(IrisCallError, match="outside the physical address space"):
            client.read(cpu, _space(client, cpu, Pas.ROOT), (1 << 48) - 4, 8)
        assert client.read_registers(cpu, [0])[0] != 0  # the connection is still good


def test_a_bad_frame_makes_the_server_close_the_connection(launch: Callable[..., FvpProcess]) -> None:
    fvp = launch()
    with socket.create_connection(("127.0.0.1", fvp.ports[IRIS_PORT]), timeout=10) as sock:
        sock.sendall(b"CONNECT / IrisRpc/1.0\r\nSupported-Formats: IrisJson\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(4096)
        assert reply.startswith(b"IrisRpc/1.0 200 OK\r\n")
        # A request split into single bytes is still one request.
        for byte in encode_message(
            {"jsonrpc": "2.0", "method": "instanceRegistry_getList", "params": {}, "id": 7}
        ):
            sock.sendall(bytes([byte]))
        codec = IrisCodec()
        answers: list[Any] = []
        while not answers:
            answers = codec.feed(sock.recv(65536))
        assert answers[0]["id"] == 7 and isinstance(answers[0]["result"], list)
        sock.sendall(b"IrisJsn:2:{}\n")
        assert sock.recv(4096) == b""


def test_without_iris_the_model_prints_no_iris_port(launch: Callable[..., FvpProcess]) -> None:
    fvp = launch(iris=False)
    assert IRIS_PORT not in fvp.ports and "-I" not in fvp.argv


# -- scripted servers: the client's side of the protocol ----------------------------------------------


class ScriptedServer:
    """A TCP server on 127.0.0.1 that runs ``script(conn)`` for its one connection, in a thread."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.script = script
        self.received: list[Any] = []
        self.done = threading.Event()
        self.finished = threading.Event()
        """Set once the script has returned (or failed)."""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.listener.settimeout(30)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(30)
            try:
                self.script(conn)
            except OSError:
                pass
            finally:
                self.finished.set()
            self.done.wait(30)

    def close(self) -> None:
        self.done.set()
        self.listener.close()
        self.thread.join(35)


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[socket.socket], None]], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(script: Callable[[socket.socket], None]) -> ScriptedServer:
        server = ScriptedServer(script)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def _handshake(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    assert data.startswith(b"CONNECT / IrisRpc/1.0\r\n")
    conn.sendall(b"IrisRpc/1.0 200 OK\r\nSupported-Formats: IrisJson\r\n\r\n")


def _requests(conn: socket.socket, codec: IrisCodec, n: int) -> list[Any]:
    got: list[Any] = []
    while len(got) < n:
        got += codec.feed(conn.recv(65536))
    return got


def test_split_frames_server_requests_and_stale_answers_are_handled(
    scripted: Callable[..., ScriptedServer],
) -> None:
    def script(conn: socket.socket) -> None:
        _handshake(conn)
        codec = IrisCodec()
        (register,) = _requests(conn, codec, 1)
        server.received.append(register)
        wire = encode_message(
            {"jsonrpc": "2.0", "id": register["id"], "result": {"instId": 5, "instName": "c"}}
        )
        conn.sendall(wire[:3])
        conn.sendall(wire[3:])
        (listing,) = _requests(conn, codec, 1)
        server.received.append(listing)
        wire = (
            encode_message({"jsonrpc": "2.0", "id": 12345, "result": "stale"})
            + encode_message({"jsonrpc": "2.0", "method": "ec_IRIS_INSTANCE_REGISTRY_CHANGED", "id": 99})
            + encode_message(
                {"jsonrpc": "2.0", "id": listing["id"], "result": [{"instId": 1, "instName": "x"}]}
            )
        )
        for i in range(len(wire)):
            conn.sendall(wire[i : i + 1])
        server.received += _requests(conn, codec, 1)

    server = scripted(script)
    with IrisClient.connect(server.port, timeout=20) as client:
        assert client.register() == 5
        assert [i.name for i in client.instances()] == ["x"]
        assert client.server_requests[0]["method"] == "ec_IRIS_INSTANCE_REGISTRY_CHANGED"
        assert server.finished.wait(30)
    register, listing, refusal = server.received
    assert register["params"] == {"instName": "client.cca_hil", "uniquify": True}
    assert register["id"] >> 32 == 0  # before registering
    assert listing["id"] >> 32 == 5 and listing["params"] == {}
    assert refusal["id"] == 99 and refusal["error"]["code"] == -32601


def test_a_server_that_never_answers_times_out(scripted: Callable[..., ScriptedServer]) -> None:
    def silent_after_handshake(conn: socket.socket) -> None:
        _handshake(conn)

    server = scripted(silent_after_handshake)
    with (
        IrisClient.connect(server.port) as client,
        pytest.raises(IrisTimeoutError, match="no answer to instanceRegistry_getList in time"),
    ):
        client.call("instanceRegistry_getList", timeout=0.3)

    mute = scripted(lambda conn: None)
    with pytest.raises(IrisTimeoutError, match="handshake"):
        IrisClient.connect(mute.port, connect_timeout=0.3)


def test_garbled_answers_are_protocol_errors(scripted: Callable[..., ScriptedServer]) -> None:
    def garbled(conn: socket.socket) -> None:
        _handshake(conn)
        _requests(conn, IrisCodec(), 1)
        conn.sendall(b'IrisJson:5:{"a"}\n')

    server = scripted(garbled)
    with IrisClient.connect(server.port, timeout=20) as client:
        with pytest.raises(IrisProtocolError, match="JSON text does not parse"):
            client.register()
        assert client.closed

    def not_iris(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    server = scripted(not_iris)
    with pytest.raises(IrisProtocolError, match=r"not an IrisRpc/1\.0 server"):
        IrisClient.connect(server.port, connect_timeout=20)


def test_refused_connection_is_a_clear_transport_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = int(sock.getsockname()[1])
    with pytest.raises(
        IrisError, match=rf"127\.0\.0\.1:{port}: connection refused \(is the model running"
    ) as error:
        IrisClient.connect(port)
    assert isinstance(error.value, TransportError)


# -- the fvp target -----------------------------------------------------------------------------------


def _target(images: Path, run_dir: Path, *extra: str) -> FvpTarget:
    overrides = [
        f"fvp.binary={STANDIN}",
        f"fvp.images_dir={images}",
        "fvp.timeouts={version: 30, ports: 30, connect: 5, shutdown: 5, kill: 5}",
        *extra,
    ]
    target = build_target(load_profile("fvp-base-rme", overrides), run_dir=run_dir)
    assert isinstance(target, FvpTarget)
    return target


def test_fvp_target_reads_the_gpt_and_memory_through_iris(images: Path, tmp_path: Path) -> None:
    with _target(images, tmp_path, "fvp.iris=true", "fvp.params.bp.mpe.enable=1") as target:
        assert {Capability.GPT_READ, Capability.ENCRYPTION} <= target.capabilities
        assert "Physical Memory (Realm)" in target.info().facts["Iris memory spaces"]
        target.write(GRANULE, PLAIN)
        assert target.read_physical(GRANULE, len(PLAIN), Pas.NONSECURE) == PLAIN
        assert target.gpt_pas(GRANULE) is Pas.NONSECURE
        assert target.smc(GRANULE_DELEGATE.fid, GRANULE)[0] == 0
        assert target.gpt_pas(GRANULE) is Pas.REALM
        pas_map = decode_tables(*target.gpt_registers(), target.gpt_tables())
        assert pas_map.pas_at(GRANULE) == "realm" and pas_map.pas_at(GRANULE + 4096) == "nonsecure"
        assert target.read_physical(GRANULE, 64, Pas.NONSECURE) != PLAIN[:64]
        with pytest.raises(CapabilityError, match="MECID 3"):
            target.read_physical(GRANULE, 64, Pas.REALM, 3)


def test_fvp_target_without_iris_names_the_profile_key(images: Path, tmp_path: Path) -> None:
    with _target(images, tmp_path) as target:
        assert Capability.GPT_READ not in target.capabilities
        assert "not enabled" in target.info().facts["Iris"]
        for attempt in (
            lambda: target.read_physical(GRANULE, 8, Pas.REALM),
            target.gpt_registers,
            target.gpt_tables,
        ):
            with pytest.raises(
                DebugServerDisabledError, match=r"Iris debug server is not enabled \(set fvp\.iris"
            ):
                attempt()


# -- the commands that use the debug view -------------------------------------------------------------


def _cli(images: Path, run_dir: Path, profile: str, *args: str) -> Any:
    from typer.testing import CliRunner

    from cca_hil.cli import app

    sets = [f"fvp.binary={STANDIN}", f"fvp.images_dir={images}", "fvp.iris=true"]
    argv = ["--profile", profile, "--run-dir", str(run_dir)]
    for item in sets:
        argv += ["--set", item]
    return CliRunner().invoke(app, [*argv, *args])


def test_gpt_show_on_an_fvp_reads_registers_and_tables_through_iris(images: Path, tmp_path: Path) -> None:
    result = _cli(images, tmp_path / "run", "fvp-base-rme", "gpt", "show", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    # The stand-in's model programs TF-A's FVP GPT: 1 TB PPS, 4 KB granules, L0 at 0x405e000.
    assert document["gpccr"] == 0x13502 and document["gptbr"] == 0x405E
    regions = document["regions"]
    assert {"start": 0xFFC0_0000, "end": 0x1_0000_0000, "pas": "root"} in regions
    assert {"start": 0x8000_0000, "end": 0xFC00_0000, "pas": "nonsecure"} in regions


def test_check_mec_on_an_fvp_observes_ciphertext_through_iris(images: Path, tmp_path: Path) -> None:
    result = _cli(
        images, tmp_path / "run", "fvp-base-rme-mec", "check", "mec", "--json", str(tmp_path / "mec.json")
    )
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "mec.json").read_text())
    encryption = next(s for s in document["sequences"] if s["name"] == "mec-encryption")
    outcomes = [step["outcome"] for step in encryption["steps"]]
    assert outcomes.count("passed") >= 5, outcomes


def test_standin_iris_options_print_the_port_and_keep_to_loopback() -> None:
    import subprocess

    done = subprocess.run(
        [
            sys.executable,
            str(STANDIN),
            "-I",
            "-A",
            "-p",
            "--iris-port",
            "0",
            "--cyclelimit",
            "1",
            "--timelimit",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert (
        len(
            [
                line
                for line in done.stdout.splitlines()
                if line.startswith("Iris server started listening to port ")
            ]
        )
        == 1
    )
    assert "command line option --cyclelimit ignored because --iris-server option specified" in done.stderr
    assert "--iris-allow-remote: this stand-in serves Iris on 127.0.0.1 only" in done.stderr
    assert "time limit reached" in done.stdout  # the cycle limit was not the one that ended the run


def test_a_late_answer_to_a_timed_out_call_is_not_taken_for_the_next(
    scripted: Callable[..., ScriptedServer],
) -> None:
    def late(conn: socket.socket) -> None:
        _handshake(conn)
        codec = IrisCodec()
        first, second = _requests(conn, codec, 2)  # the second only comes once the first timed out
        conn.sendall(
            encode_message({"jsonrpc": "2.0", "id": first["id"], "result": "first"})
            + encode_message({"jsonrpc": "2.0", "id": second["id"], "result": "second"})
        )

    server = scripted(late)
    with IrisClient.connect(server.port, timeout=20) as client:
        with pytest.raises(IrisTimeoutError):
            client.call("first", timeout=0.2)
        assert client.call("second") == "second"
