"""Safe YAML loading that remembers where every mapping, key and list item came from.

Profiles and sequences are validated where they enter, and every error names
``file:line``. PyYAML's SafeLoader never executes code; this loader only adds
line numbers (1-based) to the mappings and sequences it builds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from cca_hil.errors import InputError


class LineDict(dict[str, Any]):
    """A mapping from YAML with the line of the mapping and of each key."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        """Line of ``key`` (or of the mapping when the key is absent)."""
        return self.key_lines.get(key, self.line)


class LineList(list[Any]):
    """A sequence from YAML with its own line and the line of each item."""

    line: int = 0
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        """Line of item ``index``."""
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


# libyaml's parser where PyYAML has it: the same nodes and marks, six times faster on long sequences.
if TYPE_CHECKING:
    _SafeBase = yaml.SafeLoader
else:
    _SafeBase = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


class _LineLoader(_SafeBase):
    """SafeLoader whose mappings and sequences carry line numbers; duplicate keys are errors."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> LineDict:  # type: ignore[override]
        result = LineDict()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be scalars", key_node.start_mark
                )
            text_key = str(key) if not isinstance(key, str) else key
            if text_key in result:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {text_key!r}", key_node.start_mark
                )
            result[text_key] = self.construct_object(value_node, deep=True)
            result.key_lines[text_key] = key_node.start_mark.line + 1
        return result

    def construct_sequence(self, node: SequenceNode, deep: bool = False) -> LineList:
        result = LineList(self.construct_object(child, deep=True) for child in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


def _construct_map(loader: _LineLoader, node: Node) -> LineDict:
    assert isinstance(node, MappingNode)
    return loader.construct_mapping(node)


def _construct_seq(loader: _LineLoader, node: Node) -> LineList:
    assert isinstance(node, SequenceNode)
    return loader.construct_sequence(node)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def load_text(text: str, *, source: str) -> Any:
    """Parse YAML text; syntax errors become InputError naming ``source:line``."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # _LineLoader derives from SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise InputError(f"YAML syntax error: {problem}", where=f"{source}:{line}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"YAML error: {exc}", where=source) from exc


def load_file(path: Path) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is an InputError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("no such file", where=str(path)) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a YAML file", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", where=str(path)) from exc
    return load_text(text, source=str(path))
