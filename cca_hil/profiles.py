"""Target profiles: YAML files naming a target kind and its parameters, validated where they enter.

Search order for a profile name: ``./profiles``, each directory of
``$CCA_HIL_PROFILES`` (os.pathsep-separated), then the profiles bundled with the
package. A path (anything ending in ``.yaml``/``.yml`` or containing a path
separator) is loaded as it is. Parameters can be overridden with
``--set section.key=value`` and with ``CCA_HIL_SET`` (``;``-separated
assignments); the FVP binary also with ``CCA_HIL_FVP``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cca_hil.errors import ProfileError
from cca_hil.yamlio import LineDict, load_file

if TYPE_CHECKING:
    from cca_hil.targets.base import Target

DEFAULT_PROFILE = "model"

# kind -> "module:Class"; imported only when a target of that kind is built.
TARGET_KINDS: dict[str, str] = {
    "model": "cca_hil.targets.model:ModelTarget",
    "serial": "cca_hil.targets.serial:SerialTarget",
    "fvp": "cca_hil.targets.fvp:FvpTarget",
    "qemu": "cca_hil.targets.qemu:QemuTarget",
    "labgrid": "cca_hil.targets.labgrid:LabgridTarget",
}

Schema = Mapping[str, Any]
"""A parameter schema: key -> type (int, str, bool, float, list) or a nested Schema."""

TOP_LEVEL_KEYS = ("name", "kind", "description", "lease")


@dataclass(frozen=True)
class Profile:
    """A validated target profile."""

    name: str
    kind: str
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    """The kind's own section (``model:``, ``fvp:`` …) after overrides."""
    source: str = "<built-in>"
    shadow: Mapping[str, Any] = field(default_factory=dict)
    """A non-model profile's ``model:`` section: how its shadow model answers (``cca_hil.shadow``)."""
    lease: Mapping[str, Any] = field(default_factory=dict)
    """The ``lease:`` section: ``timeout`` (s to wait for a busy target), ``key`` (``cca_hil.lease``)."""

    def param(self, dotted: str, default: Any = None) -> Any:
        """A parameter by dotted path inside the kind's section."""
        node: Any = self.params
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node


def target_class(kind: str) -> type[Target]:
    """The Target subclass for ``kind`` (imported lazily)."""
    try:
        spec = TARGET_KINDS[kind]
    except KeyError:
        raise ProfileError(f"unknown target kind {kind!r}", valid=sorted(TARGET_KINDS)) from None
    module_name, _, class_name = spec.partition(":")
    cls: type[Target] = getattr(importlib.import_module(module_name), class_name)
    return cls


def bundled_dir() -> Path:
    """Directory of the profiles shipped with the package."""
    return Path(str(resources.files("cca_hil") / "data" / "profiles"))


def search_dirs() -> list[Path]:
    """Directories searched for a profile name, first match wins."""
    dirs = [Path.cwd() / "profiles"]
    extra = os.environ.get("CCA_HIL_PROFILES", "")
    dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    dirs.append(bundled_dir())
    return dirs


def _candidates(directory: Path) -> Iterator[Path]:
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if path.suffix in (".yaml", ".yml") and path.is_file():
                yield path


def available_profiles() -> dict[str, Path]:
    """Every profile name that resolves, mapped to the file that wins."""
    found: dict[str, Path] = {}
    for directory in search_dirs():
        for path in _candidates(directory):
            found.setdefault(path.stem, path)
    return found


def _looks_like_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text


def resolve(name_or_path: str) -> Path:
    """The file of a profile given by name or path."""
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise ProfileError("no such profile file", where=name_or_path)
        return path
    for directory in search_dirs():
        for suffix in (".yaml", ".yml"):
            path = directory / f"{name_or_path}{suffix}"
            if path.is_file():
                return path
    raise ProfileError(f"unknown profile {name_or_path!r}", valid=sorted(available_profiles()))


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], value parsed as a YAML scalar)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ProfileError(f"bad override {text!r}: expected KEY=VALUE such as model.seed=7")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            pass
    return [p for p in key.strip().split(".") if p], value


def _env_overrides() -> list[str]:
    out = [a for a in os.environ.get("CCA_HIL_SET", "").split(";") if a.strip()]
    fvp = os.environ.get("CCA_HIL_FVP")
    if fvp:
        out.append(f"fvp.binary={fvp}")
    return out


def validate(data: Any, schema: Schema, *, where: str, path: str = "") -> dict[str, Any]:
    """Check ``data`` against ``schema``: unknown keys and wrong types are ProfileErrors naming file:line."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{path or 'profile section'} must be a mapping", where=where)
    out: dict[str, Any] = {}
    for key, value in data.items():
        line = data.line_of(key) if isinstance(data, LineDict) else None
        here = f"{where}:{line}" if line else where
        dotted = f"{path}.{key}" if path else key
        if key not in schema:
            raise ProfileError(f"unknown key {dotted!r}", where=here, valid=sorted(schema))
        expected = schema[key]
        if isinstance(expected, Mapping):
            out[key] = validate(value, expected, where=where, path=dotted)
            continue
        if expected is int and isinstance(value, bool):
            raise ProfileError(f"{dotted} must be an integer, got {value!r}", where=here)
        if expected is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, expected):
            raise ProfileError(
                f"{dotted} must be {expected.__name__}, got {type(value).__name__} {value!r}",
                where=here,
            )
        out[key] = value
    return out


def _apply(params: dict[str, Any], keys: list[str], value: Any) -> None:
    node = params
    for part in keys[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[keys[-1]] = value


def load_profile(name_or_path: str = DEFAULT_PROFILE, overrides: Iterable[str] = ()) -> Profile:
    """Load, override and validate a profile."""
    path = resolve(name_or_path)
    data = load_file(path)
    where = str(path)
    if not isinstance(data, Mapping):
        raise ProfileError("a profile must be a YAML mapping", where=where)
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise ProfileError("missing 'kind'", where=where, valid=sorted(TARGET_KINDS))
    cls = target_class(kind)
    from cca_hil.lease import LEASE_PARAMS, check_lease_section
    from cca_hil.shadow import SHADOW_PARAMS

    allowed = (*TOP_LEVEL_KEYS, kind) if kind == "model" else (*TOP_LEVEL_KEYS, kind, "model")
    for key in data:
        if key not in allowed:
            line = data.line_of(key) if isinstance(data, LineDict) else 0
            raise ProfileError(f"unknown key {key!r}", where=f"{where}:{line}", valid=allowed)
    schema = cls.PARAMS  # type: ignore[attr-defined]
    params = validate(data.get(kind) or {}, schema, where=where, path=kind)
    shadow: dict[str, Any] = {}
    if kind != "model":
        shadow = validate(data.get("model") or {}, SHADOW_PARAMS, where=where, path="model")
    lease = validate(data.get("lease") or {}, LEASE_PARAMS, where=where, path="lease")
    for assignment in [*_env_overrides(), *overrides]:
        keys, value = parse_assignment(assignment)
        target_params = params
        if keys and keys[0] == kind:
            keys = keys[1:]
        elif keys and keys[0] == "model" and kind != "model":
            # A non-model profile's shadow model: --set model.compat=tf-rmm-1.0
            keys, target_params = keys[1:], shadow
        elif keys and keys[0] == "lease":
            keys, target_params = keys[1:], lease
        if not keys:
            raise ProfileError(f"bad override {assignment!r}")
        _apply(target_params, keys, value)
    params = validate(params, schema, where=f"{where} (after --set)", path=kind)
    if kind != "model":
        shadow = validate(shadow, SHADOW_PARAMS, where=f"{where} (after --set)", path="model")
    lease = validate(lease, LEASE_PARAMS, where=f"{where} (after --set)", path="lease")
    check_lease_section(lease, where=where)
    return Profile(
        name=str(data.get("name", path.stem)),
        kind=kind,
        description=str(data.get("description", "")),
        params=params,
        source=where,
        shadow=shadow,
        lease=lease,
    )


def build_target(profile: Profile, *, run_dir: Path | None = None) -> Target:
    """Instantiate the target a profile describes (not yet opened)."""
    return target_class(profile.kind)(profile=profile, run_dir=run_dir)
