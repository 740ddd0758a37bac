"""Replays the TF-RMM realm-execution ground truth (``tests/data/tfrmm-1.0-realm-directed``) on the model.

Each JSON file is a scenario recorded from TF-RMM with an emulated realm (see
the folder's README): RMI calls with their results, the actions the realm took
in each REC entry, the REC exit snapshots, and what the realm observed. The
replay drives the model exactly the same way — the realm's actions go to the
model's realm payload as steps — and reports every place where the model's
registers, exits or realm observations differ.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import cbor2

from cca_hil.arch.rmi import GRANULE_SIZE, MASK64, HashAlgorithm, Ripas, RttEntryState
from cca_hil.arch.rmi_1_0 import RMI_1_0
from cca_hil.arch.rsi_1_0 import (
    RSI_1_0,
    PsciStatus,
    RsiResponse,
    RsiStatus,
    psci_function,
    wide_to_registers,
)
from cca_hil.arch.structs import REC_RUN_EXIT_OFFSET, RealmParams, RecEnter, RecExit, RecParams
from cca_hil.arch.token import PlatformClaim, Sign1, decode, encode_platform_claims
from cca_hil.model.attestation import AttestationConfig, PlatformAttestation
from cca_hil.model.machine import Machine
from cca_hil.model.platform import PlatformConfig
from cca_hil.model.realm_exec import (
    SVE_HINT,
    Action,
    Hvc,
    InstructionFetch,
    Interrupt,
    IrqLine,
    MemoryAccess,
    RealmStep,
    SmcCall,
    SysregRead,
    SystemError,
    WaitFor,
)

DATA = Path(__file__).parent.parent / "data" / "tfrmm-1.0-realm-directed"
SLOTS = 0x9000_0000
SCRATCH = 0xA000_0000
_FLAG_BITS = {"emul_mmio": 1, "inject_sea": 2, "trap_wfi": 4, "trap_wfe": 8, "ripas_response": 16}
_EXIT_REASONS = {
    "RMI_EXIT_SYNC": 0,
    "RMI_EXIT_IRQ": 1,
    "RMI_EXIT_FIQ": 2,
    "RMI_EXIT_PSCI": 3,
    "RMI_EXIT_RIPAS_CHANGE": 4,
    "RMI_EXIT_HOST_CALL": 5,
    "RMI_EXIT_SERROR": 6,
}
_HEX = re.compile(r"0x[0-9a-f]+")


def scenario_files() -> list[Path]:
    """Every recorded scenario."""
    return sorted(DATA.glob("*.json"))


@dataclass
class Observer:
    """Records what the model's realm payload reports for one recorded realm event."""

    event: dict[str, Any]
    started: bool = False
    registers: tuple[int, ...] | None = None
    on_complete: Callable[[], None] | None = None

    def start(self) -> None:
        self.started = True

    def complete(self, registers: Iterable[int]) -> None:
        self.started = True
        self.registers = tuple(registers)
        if self.on_complete is not None:
            self.on_complete()


@dataclass
class Replay:
    """One scenario on a fresh model; ``problems`` lists every difference from the recording."""

    path: Path
    machine: Machine = field(init=False)
    names: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    observers: list[Observer] = field(default_factory=list)
    compared: int = 0
    _scratch: int = SCRATCH
    _last_run: int = 0
    _final_continue: dict[str, Any] | None = None
    _token: bytes = b""
    _pending_loads: dict[int, list[tuple[dict[str, Any], int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        base = PlatformConfig()
        # TF-RMM's host platform has a single GIC list register (README, finding (e)).
        config = replace(base, rmm=replace(base.rmm, quirks="tf-rmm", gicv3_num_lrs=0))
        self.machine = Machine(config)
        # The recording's EL3 handed TF-RMM FVP's sample RAK (README "How the realm was emulated").
        attestation = PlatformAttestation.build(
            seed=0,
            config=AttestationConfig(keys="fvp-sample"),
            platform_config=config.rmm.feature_register_0().to_bytes(8, "little"),
        )
        self.names = {f"platform.{k}": v for k, v in config.platform_names().items()}
        self.data = json.loads(self.path.read_text())
        captured = self.data.get("captured_token")
        if captured is not None:
            # The recording used FVP's 1,518-byte sample platform token, which cca-hil does not ship.
            # A platform token of the same size keeps TF-RMM's recorded chunk lengths and statuses
            # valid for the model; the Realm token itself is compared with the capture (check_token).
            attestation.platform_token_override = sized_platform_token(
                attestation, captured["platform_token_len"]
            )
        self.machine.rmm.attestation = attestation
        if captured is not None:
            continues = [
                e
                for e in self.data["events"]
                if e.get("rsi") == "RSI_ATTESTATION_TOKEN_CONTINUE"
                and (e.get("result") or {}).get("x0") == "RSI_SUCCESS"
            ]
            self._final_continue = continues[-1]
        for i, name in enumerate(self.data["granules"]):
            self.names[name] = SLOTS + i * 0x10000

    # -- values --------------------------------------------------------------------

    def value(self, raw: Any) -> int:
        if isinstance(raw, int):
            return raw & MASK64
        text = str(raw).strip()
        if _HEX.fullmatch(text):
            return int(text, 16)
        if text in Ripas.__members__:
            return int(Ripas[text])
        if text in RsiResponse.__members__:
            return int(RsiResponse[text])
        total = 0
        for term in text.split("+"):
            term = term.strip()
            total += int(term, 16) if _HEX.fullmatch(term) else self.names[term]
        return total & MASK64

    def fresh_ns(self) -> int:
        pa = self._scratch
        self._scratch += GRANULE_SIZE
        return pa

    def smc(self, fid: int, *args: int) -> tuple[int, ...]:
        return self.machine.monitor.smc(fid, args)

    # -- the scenario --------------------------------------------------------------

    def run(self) -> Replay:
        events = self.data["events"]
        i = 0
        while i < len(events):
            event = events[i]
            i += 1
            if event["type"] == "rmi":
                entry: list[dict[str, Any]] = []
                if event["command"] == "RMI_REC_ENTER":
                    while i < len(events) and events[i]["type"] in ("realm", "platform"):
                        entry.append(events[i])
                        i += 1
                self.rmi(event, entry)
            elif event["type"] == "rec_exit":
                self.rec_exit(event)
            elif event["type"] == "platform":
                self.machine.rmm.realm_exec.irq_pending = "becomes pending" in event["event"]
        self.observations()
        if "captured_token" in self.data:
            self.check_token(self.data["captured_token"])
        return self

    def snapshot_token(self, rec: int, ipa: int) -> None:
        """The token the realm holds right after its last TOKEN_CONTINUE (a later call may reuse the page)."""
        realm = self.machine.rmm.recs[rec // GRANULE_SIZE].owner
        pa = self.machine.rmm.realm_ram_pa(realm, ipa)
        assert pa is not None
        total = self.data["captured_token"]["total_len"]
        self._token = self.machine.rmm.memory.read(pa, min(total, GRANULE_SIZE))

    def check_token(self, captured: dict[str, Any]) -> None:
        """The last token the realm received against the decoded capture (all but signatures)."""
        raw = self._token
        if len(raw) != captured["total_len"]:
            self.problems.append(f"captured token: {len(raw)} bytes, TF-RMM {captured['total_len']}")
            return
        token = decode(raw)
        self.compared += 1
        checks = {
            "prefix": (raw[:10].hex(), captured["prefix_hex"]),
            "realm token length": (len(token.realm_token), captured["realm_token_len"]),
            "realm token head": (token.realm_token[:12].hex(), captured["realm_token_head_hex"]),
            "payload length": (len(token.realm.payload), captured["realm_payload_len"]),
            "signature length": (len(token.realm.signature), captured["realm_signature_len"]),
            "protected header": (token.realm.protected.hex(), captured["realm_protected_header_hex"]),
        }
        claims = cbor2.loads(token.realm.payload)
        got_claims = [[k, v.hex() if isinstance(v, bytes) else v] for k, v in claims.items()]
        for item in got_claims:
            if isinstance(item[1], list):
                item[1] = [r.hex() for r in item[1]]
        checks["claims"] = (got_claims, captured["realm_claims_in_order"])
        for name, (got, want) in checks.items():
            if got != want:
                self.problems.append(f"captured token {name}: {got}, TF-RMM {want}")

    def rmi(self, event: dict[str, Any], entry: list[dict[str, Any]]) -> None:
        name = event["command"][4:].lower()
        command = RMI_1_0.by_name[name]
        args = dict(event["args"])
        if name == "realm_create":
            args["params_ptr"] = self.realm_params(event["params"])
        elif name == "rec_create":
            args["params_ptr"] = self.rec_params(event["params"])
        values = {k: self.value(v) for k, v in args.items()}
        loads: list[tuple[dict[str, Any], int]] = []
        if name == "rec_enter":
            loads = self.enter(values["rec"], values["run_ptr"], event.get("enter"), entry)
        regs = self.smc(command.fid, *(values.get(p.name, 0) for p in command.inputs))
        self.compared += 1
        result = event["result"]
        where = f"{event['command']} {event['args']}"
        if regs[0] != self.value(result["x0"]):
            self.problems.append(f"{where}: x0 {regs[0]:#x}, TF-RMM {result['x0']}")
            return
        for output in command.outputs:
            if output.name in result:
                want = self.output_value(output.name, result[output.name])
                if regs[output.reg] != want:
                    self.problems.append(f"{where}: {output.name} {regs[output.reg]:#x}, TF-RMM {want:#x}")
        if name == "rec_enter" and regs[0] == 0:
            rec = values["rec"]
            # Loads the Host emulated: the realm sees the value once it runs again.
            for recorded, register in self._pending_loads.pop(rec, []):
                self.check_load(recorded, register, rec)
            self._pending_loads[rec] = loads
            self._last_run = values["run_ptr"]

    def output_value(self, name: str, raw: Any) -> int:
        if name == "state" and isinstance(raw, str) and not _HEX.fullmatch(raw):
            return int(RttEntryState[raw])
        if name == "ripas" and isinstance(raw, str) and not _HEX.fullmatch(raw):
            return int(Ripas[raw])
        return self.value(raw)

    def realm_params(self, params: dict[str, Any]) -> int:
        fields: dict[str, Any] = {}
        for key, raw in params.items():
            if key == "hash_algo":
                fields[key] = int(HashAlgorithm.SHA512 if raw == "sha512" else HashAlgorithm.SHA256)
            elif key == "rpv":
                fields[key] = bytes.fromhex(raw)
            else:
                fields[key] = self.value(raw)
        pa = self.fresh_ns()
        self.machine.ns_write(pa, RealmParams(**fields).pack())
        return pa

    def rec_params(self, params: dict[str, Any]) -> int:
        flags = params.get("flags", 0)
        aux = []
        for _ in range(16):
            pa = self.fresh_ns()
            self.smc(RMI_1_0.by_name["granule_delegate"].fid, pa)
            aux.append(pa)
        rec = RecParams(
            flags=1 if flags == "runnable" else self.value(flags),
            mpidr=self.value(params.get("mpidr", 0)),
            pc=self.value(params.get("pc", 0)),
            num_aux=16,
            aux=tuple(aux),
        )
        pa = self.fresh_ns()
        self.machine.ns_write(pa, rec.pack())
        return pa

    # -- REC entry -----------------------------------------------------------------

    def enter(
        self, rec: int, run: int, enter: dict[str, Any] | None, entry: list[dict[str, Any]]
    ) -> list[tuple[dict[str, Any], int]]:
        if enter is not None:
            flags = 0
            for key, raw in (enter.get("flags") or {}).items():
                flags |= self.value(raw) if key == "raw_bits" else _FLAG_BITS[key] * int(raw)
            gprs = [0] * 31
            for index, raw in (enter.get("gprs") or {}).items():
                gprs[int(index)] = self.value(raw)
            lrs = [0] * 16
            for index, raw in (enter.get("gicv3_lrs") or {}).items():
                lrs[int(index)] = self.value(raw)
            structure = RecEnter(
                flags=flags,
                gprs=tuple(gprs),
                gicv3_hcr=self.value(enter.get("gicv3_hcr", 0)),
                gicv3_lrs=tuple(lrs),
            )
            self.machine.ns_write(run, bytes(GRANULE_SIZE))
            self.machine.ns_write(run, structure.pack())
        model_rec = self.machine.rmm.recs.get(rec // GRANULE_SIZE)
        actions: list[Action] = []
        loads: list[tuple[dict[str, Any], int]] = []
        for event in entry:
            if event["type"] == "platform":
                actions.append(Action(IrqLine("becomes pending" in event["event"])))
                continue
            if event.get("event") == "start":
                self.check_start(event, model_rec)
                continue
            step = self.step(event)
            observer = Observer(event)
            if event is self._final_continue:
                observer.on_complete = partial(self.snapshot_token, rec, self.value(event["args"]["addr"]))
            elif "injected_exception" in (event.get("result") or {}):
                observer.on_complete = partial(self.check_injection, event, rec)
            self.observers.append(observer)
            actions.append(Action(step, observer))
            if isinstance(step, MemoryAccess) and not step.write and step.register != 31:
                result = event.get("result") or {}
                if result.get("pc_advanced") and "rt_value" in result:
                    loads.append((event, step.register))
        self.machine.rmm.realm_exec.stage(rec, actions)
        return loads

    def check_injection(self, event: dict[str, Any], rec_pa: int) -> None:
        """An exception the RMM injected instead of exiting (HVC, SEA): the vector and ESR_EL1 seen."""
        want = event["result"]["injected_exception"]
        injected = self.machine.rmm.recs[rec_pa // GRANULE_SIZE].injected
        self.compared += 1
        got = None if injected is None else (injected.vector, injected.esr_el1)
        if got != (self.value(want["vector_offset"]), self.value(want["esr_el1"])):
            self.problems.append(f"{describe(event)}: injected {got}, TF-RMM {want}")

    def check_start(self, event: dict[str, Any], rec: Any) -> None:
        observed = event["observed"]
        if rec is None:
            self.problems.append("realm start on a REC the model does not have")
            return
        if rec.pc != self.value(observed["pc"]):
            self.problems.append(f"start: pc {rec.pc:#x}, TF-RMM {observed['pc']}")
        for i in range(4):
            if rec.gprs[i] != self.value(observed[f"x{i}"]):
                self.problems.append(f"start: x{i} {rec.gprs[i]:#x}, TF-RMM {observed[f'x{i}']}")
        self.compared += 1

    def check_load(self, event: dict[str, Any], register: int, rec_pa: int) -> None:
        rec = self.machine.rmm.recs[rec_pa // GRANULE_SIZE]
        want = self.value(event["result"]["rt_value"])
        self.compared += 1
        if rec.gprs[register] != want:
            self.problems.append(
                f"{event['ipa']} load: x{register} {rec.gprs[register]:#x}, TF-RMM {want:#x}"
            )

    def step(self, event: dict[str, Any]) -> RealmStep:
        kind = event.get("event")
        if "rsi" in event:
            command = RSI_1_0.by_fid[int(event["fid"], 16) & ~SVE_HINT]
            registers: dict[int, int] = {}
            for param in command.inputs:
                raw = event["args"].get(param.name, 0)
                if param.count > 1:
                    for j, reg in enumerate(wide_to_registers(bytes.fromhex(raw), param.count)):
                        registers[param.reg + j] = reg
                else:
                    registers[param.reg] = self.value(raw)
            writes: tuple[tuple[int, bytes], ...] = ()
            memory = event.get("realm_memory_before")
            if memory is not None and command.name == "host_call":
                gprs = [self.value(g) for g in memory["RsiHostCall.gprs"]]
                gprs += [0] * (31 - len(gprs))
                structure = struct.pack("<Q31Q", self.value(memory["RsiHostCall.imm"]), *gprs)
                writes = ((registers[1], structure),)
            top = max(registers)
            return SmcCall(
                int(event["fid"], 16), tuple(registers.get(j, 0) for j in range(1, top + 1)), writes
            )
        if "psci" in event:
            fid = int(event["fid"], 16)
            function = psci_function(fid)
            names = function.inputs if function is not None else tuple(event["args"])
            return SmcCall(fid, tuple(self.value(event["args"].get(n, 0)) for n in names))
        if "smc_fid" in event:
            args = event.get("args") or {}
            count = len(args)
            return SmcCall(
                int(event["smc_fid"], 16),
                tuple(self.value(args.get(f"x{j}", 0)) for j in range(1, count + 1)),
            )
        if kind == "data_abort":
            esr = self.value(event["esr_el2"])
            return MemoryAccess(
                ipa=self.value(event["ipa"]),
                write=event["access"] == "store",
                size=int(event["size"]),
                register=int(event["rt"]),
                value=self.value(event.get("store_value", 0)),
                sign_extend=bool(event.get("sign_extend", 0)),
                sixty_four=bool(esr & (1 << 15)),
                isv=bool(event.get("isv", 1)),
                far=self.value(event["far_el2"]),
                dfsc=esr & 0x3F,
                set_bits=(esr >> 11) & 0b11,
            )
        if kind == "instruction_abort":
            return InstructionFetch(self.value(event["ipa"]))
        if kind == "hvc":
            return Hvc()
        if kind in ("wfi", "wfe"):
            # The recording's harness made WFx trap whatever the enter flags said (README "Limits").
            return WaitFor(event=kind == "wfe", trapped=True)
        if kind == "sysreg_read":
            return SysregRead(event["sysreg"], int(event["rt"]))
        if kind == "interrupt":
            return Interrupt(fiq=event["interrupt"] == "FIQ")
        if kind == "serror":
            return SystemError(self.value(event["esr"]))
        raise AssertionError(f"unknown realm event {event}")

    # -- exits and observations ------------------------------------------------------

    def rec_exit(self, event: dict[str, Any]) -> None:
        raw = self.machine.memory.read(self._last_run + REC_RUN_EXIT_OFFSET, 0x800)
        got = RecExit.unpack(raw)
        imm = struct.unpack_from("<Q", raw, 0x600)[0]
        where = f"exit {event['exit_reason']} (event {self.data['events'].index(event)})"
        self.compared += 1
        want_reason = _EXIT_REASONS[event["exit_reason"]]
        if got.exit_reason != want_reason:
            self.problems.append(f"{where}: exit_reason {got.exit_reason}, TF-RMM {want_reason}")
            return
        for name in ("esr", "far", "hpfar", "ripas_base", "ripas_top", "ripas_value"):
            if name in event and getattr(got, name) != self.value(event[name]):
                self.problems.append(f"{where}: {name} {getattr(got, name):#x}, TF-RMM {event[name]}")
        if "imm" in event and imm != self.value(event["imm"]):
            self.problems.append(f"{where}: imm {imm:#x}, TF-RMM {event['imm']}")
        gprs = event.get("gprs", {})
        listed = dict(enumerate(gprs)) if isinstance(gprs, list) else {int(k): v for k, v in gprs.items()}
        for index in range(31):
            want = self.value(listed.get(index, 0))
            if isinstance(gprs, dict) and index not in listed and event["exit_reason"] == "RMI_EXIT_PSCI":
                continue
            if got.gprs[index] != want:
                self.problems.append(f"{where}: gprs[{index}] {got.gprs[index]:#x}, TF-RMM {want:#x}")

    def observations(self) -> None:
        for observer in self.observers:
            for problem in self.observation(observer):
                self.problems.append(f"{describe(observer.event)}: {problem}")

    def observation(self, observer: Observer) -> Iterator[str]:
        event = observer.event
        result = event.get("result")
        if "rsi" not in event and "psci" not in event and "smc_fid" not in event:
            return
        self.compared += 1
        x0 = None if result is None else result.get("x0")
        if result is None or "realm_pc_after" in result:
            # The call never returned to the realm (PC not advanced, or the REC was reset by CPU_ON).
            if observer.registers is not None:
                yield f"the realm saw a result {observer.registers[:4]}, TF-RMM: none"
            return
        if observer.registers is None:
            yield "the realm saw no result"
            return
        regs = observer.registers
        assert isinstance(x0, str)
        want = status_value(x0)
        if regs[0] != want:
            yield f"x0 {regs[0]:#x}, TF-RMM {x0}"
            return
        for key, reg in (("lower", 1), ("higher", 2), ("max_token_size", 1), ("len", 1), ("new_base", 1),
                         ("response", 2), ("top", 1), ("ripas", 2)):  # fmt: skip
            if key in result and regs[reg] != self.value(result[key]):
                yield f"{key} {regs[reg]:#x}, TF-RMM {result[key]}"
        if "value" in result and _HEX.fullmatch(result["value"]):
            if regs[1] != self.value(result["value"]):
                yield f"value {regs[1]:#x}, TF-RMM {result['value']}"
        elif "value" in result:
            got = b"".join(r.to_bytes(8, "little") for r in regs[1:9])
            want_value = bytes.fromhex(result["value"]).ljust(64, b"\0")
            if got != want_value:
                yield f"value {got.hex()}, TF-RMM {result['value']}"
        for name, raw in (result.get("gprs_changed") or {}).items():
            index = int(name[1:])
            if index < len(regs) and regs[index] != self.value(raw):
                yield f"{name} {regs[index]:#x}, TF-RMM {raw}"
        if "RsiHostCall.gprs" in result:
            wanted = [self.value(g) for g in result["RsiHostCall.gprs"]]
            if list(regs[1 : 1 + len(wanted)]) != wanted:
                yield f"RsiHostCall.gprs {regs[1:4]}…, TF-RMM {result['RsiHostCall.gprs'][:3]}…"


def sized_platform_token(attestation: PlatformAttestation, size: int) -> bytes:
    """A platform token signed by the model's IAK, padded (verification service claim) to ``size`` bytes."""
    claims = attestation.platform_claims()
    pad = 0
    for _ in range(8):
        claims[PlatformClaim.VERIFICATION_SERVICE] = "https://verifier.example/" + "v" * pad
        token = Sign1.sign(encode_platform_claims(claims), attestation.iak_private).encode()
        if len(token) == size:
            return token
        pad += size - len(token)
    raise AssertionError(f"no platform token of {size} bytes")


def status_value(raw: str) -> int:
    """X0 for a decoded status as the recording writes it (``RSI_SUCCESS``, ``PSCI_OFF(1)``, ``ON(0)``)."""
    match = re.fullmatch(r"[A-Z_]*\((\d+)\)", raw)
    if match:
        return int(match.group(1))
    if raw.startswith("RSI_"):
        return int(RsiStatus[raw[4:]])
    if raw.startswith("PSCI_"):
        return PsciStatus[raw[5:]].x0
    return int(raw, 16)


def describe(event: dict[str, Any]) -> str:
    """A short name for a realm event in a problem report."""
    name = event.get("rsi") or event.get("psci") or event.get("smc_fid") or event.get("event")
    return f"{event.get('rec')} {name} {event.get('args', '')}"
