"""Offline Realm Initial Measurement: the RIM a sequence's realms will have, computed without running it.

RMM 1.0 A7.1 (rmm-abi.md §9): the RIM starts from the measured part of
RmiRealmParams and is extended, in order, by RTT_INIT_RIPAS (one descriptor
per RTT entry, so the RTT shape the sequence builds matters), DATA_CREATE and
the creation of runnable RECs, until REALM_ACTIVATE freezes it. This module
follows a compiled sequence step by step with the same functions the model's
RMM uses (:mod:`cca_hil.arch.measurement`) and tracks just enough of each
realm (its RTTs and assigned pages) to know which entries RTT_INIT_RIPAS
measures. Steps that expect a failure change nothing; steps that expect
success (or do not say) are taken to succeed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cca_hil.arch import measurement
from cca_hil.arch.rmi import GRANULE_SIZE, HashAlgorithm, to_signed64
from cca_hil.arch.structs import RealmParams, RecCreateFlags, RecParams
from cca_hil.errors import InputError
from cca_hil.seqformat import Expr, RmiStep, Sequence, StructSpec, Value

_PAGE_LEVEL = 3
_ENTRIES = 512


def _entry_size(level: int) -> int:
    return 1 << (12 + 9 * (3 - level))


@dataclass(frozen=True)
class RealmMeasurement:
    """The RIM one realm of a sequence will have (at REALM_ACTIVATE, or at the end of the sequence)."""

    rd: str
    """The sequence's expression for the realm's RD (``rd``, ``rd_s`` …)."""
    hash_algo: HashAlgorithm
    rim: bytes
    """64-byte storage form (a SHA-256 digest zero-padded), as RSI_MEASUREMENT_READ returns it."""
    activated: bool
    steps: tuple[str, ...]
    """Names of the steps that extended the RIM, in order."""

    @property
    def digest(self) -> bytes:
        """The RIM as the token's claim 44238 carries it (digest length only)."""
        return self.rim[: measurement.digest_size(self.hash_algo)]


@dataclass
class _Realm:
    rd: str
    algo: HashAlgorithm
    rim: bytes
    level_start: int
    tables: set[tuple[int, int]] = field(default_factory=set)
    """(level, base IPA) of every RTT below the starting level."""
    assigned: set[int] = field(default_factory=set)
    """IPAs of DATA pages."""
    activated: bool = False
    steps: list[str] = field(default_factory=list)

    def walk_level(self, ipa: int) -> int:
        """The level of the RTT entry a walk for ``ipa`` reaches."""
        level = self.level_start
        while level < _PAGE_LEVEL and (level + 1, ipa - ipa % _entry_size(level)) in self.tables:
            level += 1
        return level


def measure_sequence(sequence: Sequence, *, tf_rmm: bool = False) -> list[RealmMeasurement]:
    """The RIM of every realm ``sequence`` creates, in creation order (InputError if one cannot be known).

    ``tf_rmm`` selects TF-RMM's RTT_INIT_RIPAS scan (it stops at an ASSIGNED
    entry; rmm-abi.md §12 #8) over the specification's.
    """
    realms: dict[str, _Realm] = {}
    order: list[_Realm] = []
    for step in sequence.steps:
        if not isinstance(step, RmiStep) or step.expect.status not in (None, "success"):
            continue
        args = dict(step.args)
        name = step.rmi.name
        if name == "realm_create":
            realm = _create(step, args)
            realms[realm.rd] = realm
            order.append(realm)
            continue
        rd_arg = args.get("rd")
        if rd_arg is None or isinstance(rd_arg, StructSpec):
            continue
        realm_or_none = realms.get(str(rd_arg))
        if realm_or_none is None or realm_or_none.activated:
            continue
        realm = realm_or_none
        if name == "realm_activate":
            realm.activated = True
        elif name == "realm_destroy":
            del realms[realm.rd]
        elif name == "rtt_create":
            level = _number(step, args, "level", signed=True)
            ipa = _number(step, args, "ipa")
            realm.tables.add((level, ipa - ipa % _entry_size(level - 1)))
        elif name in ("rtt_destroy", "rtt_fold"):
            level = _number(step, args, "level", signed=True)
            ipa = _number(step, args, "ipa")
            realm.tables.discard((level, ipa - ipa % _entry_size(level - 1)))
        elif name == "rtt_init_ripas":
            _init_ripas(realm, step, _number(step, args, "base"), _number(step, args, "top"), tf_rmm=tf_rmm)
        elif name == "data_create":
            _data_create(realm, step, args)
        elif name == "data_create_unknown":
            realm.assigned.add(_number(step, args, "ipa"))
        elif name == "data_destroy":
            realm.assigned.discard(_number(step, args, "ipa"))
        elif name == "rec_create":
            _rec_create(realm, step, args)
    return [
        RealmMeasurement(rd=r.rd, hash_algo=r.algo, rim=r.rim, activated=r.activated, steps=tuple(r.steps))
        for r in order
    ]


def _unknown(step: RmiStep, what: str) -> InputError:
    return InputError(f"cannot measure offline: {what}", where=f"step {step.name!r} (line {step.line})")


def _number(step: RmiStep, args: Mapping[str, Any], key: str, *, signed: bool = False) -> int:
    """A static integer argument (an IPA, a level); a run-time value cannot be measured offline."""
    value = args.get(key, 0)
    if isinstance(value, Expr) or not isinstance(value, int):
        raise _unknown(step, f"{key} {value} is only known when the sequence runs")
    return to_signed64(value) if signed else value


def _fields(step: RmiStep, args: Mapping[str, Any], key: str, kind: str) -> Mapping[str, Any]:
    spec = args.get(key)
    if not isinstance(spec, StructSpec) or spec.kind != kind:
        raise _unknown(step, f"{key} is given as an address, so its contents are not in the sequence")
    return spec.fields


def _static(step: RmiStep, name: str, value: Value) -> int:
    if isinstance(value, Expr):
        raise _unknown(step, f"{name} {value} is only known when the sequence runs")
    return value


def _create(step: RmiStep, args: Mapping[str, Any]) -> _Realm:
    """RMI_REALM_CREATE: RIM = H(measured RmiRealmParams) (RMM 1.0 A7.1.1)."""
    fields = _fields(step, args, "params_ptr", "realm_params")
    defaults = RealmParams()
    values = {
        name: _static(step, name, fields[name]) if name in fields else getattr(defaults, name)
        for name in RealmParams.MEASURED_FIELDS
    }
    level_start = to_signed64(_static(step, "rtt_level_start", fields.get("rtt_level_start", 0)))
    algo = HashAlgorithm(values["hash_algo"])
    image = measurement.realm_params_image(**values)
    realm = _Realm(
        rd=str(args["rd"]), algo=algo, rim=measurement.rim_init(algo, image), level_start=level_start
    )
    realm.steps.append(step.name)
    return realm


def _init_ripas(realm: _Realm, step: RmiStep, base: int, top: int, *, tf_rmm: bool) -> None:
    """RMI_RTT_INIT_RIPAS: one RIPAS descriptor per entry of the RTT at ``base`` below ``top`` (A7.1)."""
    level = realm.walk_level(base)
    size = _entry_size(level)
    table_end = base - base % (_ENTRIES * size) + _ENTRIES * size
    ipa = base
    while ipa + size <= min(top, table_end):
        if level < _PAGE_LEVEL and (level + 1, ipa) in realm.tables:
            break
        if tf_rmm and level == _PAGE_LEVEL and ipa in realm.assigned:
            break
        realm.rim = measurement.rim_extend_ripas(realm.algo, realm.rim, base=ipa, top=ipa + size)
        ipa += size
    if ipa != base:
        realm.steps.append(step.name)


def _data_create(realm: _Realm, step: RmiStep, args: Mapping[str, Any]) -> None:
    """RMI_DATA_CREATE: a DATA descriptor with the page's hash when its content is measured (A7.1)."""
    ipa = _number(step, args, "ipa")
    flags = _number(step, args, "flags")
    content: bytes | None = None
    if flags & 1:
        src = _fields(step, args, "src", "src")
        data = src.get("bytes", b"")
        content = data.ljust(GRANULE_SIZE, bytes([src.get("fill", 0)]))
    realm.rim = measurement.rim_extend_data(realm.algo, realm.rim, ipa=ipa, flags=flags, data=content)
    realm.assigned.add(ipa)
    realm.steps.append(step.name)


def _rec_create(realm: _Realm, step: RmiStep, args: Mapping[str, Any]) -> None:
    """RMI_REC_CREATE of a runnable REC: a REC descriptor over its measured RmiRecParams (A7.1.3)."""
    fields = _fields(step, args, "params_ptr", "rec_params")
    flags = _static(step, "flags", fields.get("flags", RecCreateFlags.RUNNABLE))
    if not flags & RecCreateFlags.RUNNABLE:
        return
    gprs_raw = fields.get("gprs", {})
    gprs = tuple(_static(step, f"gprs[{i}]", gprs_raw.get(i, 0)) for i in range(8))
    params = RecParams(flags=flags, pc=_static(step, "pc", fields.get("pc", 0)), gprs=gprs)
    realm.rim = measurement.rim_extend_rec(realm.algo, realm.rim, rec_image=params.measured_image())
    realm.steps.append(step.name)


__all__ = ["RealmMeasurement", "measure_sequence"]
