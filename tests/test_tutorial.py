"""docs/tutorial.md runs: every command of every ``console`` block, in order, in one fresh folder.

A block line ``$ COMMAND`` is a command; the lines under it, up to the next
command, are an excerpt of what it prints: each must appear in its output
(spaces collapsed). ``# exit N`` after a command is the exit code it must
end with (0 otherwise). ``export``/``unset`` change the environment of the
commands that follow. ``cca-hil … console`` is interactive: it runs on a
real pty, the excerpt is awaited there, and Ctrl-] ends it.

Substitutions (the tutorial names a real FVP and firmware folder; the test
has neither): :data:`SUBSTITUTIONS`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pty_harness import CTRL_D, ESCAPE, PtyProcess, strip_ansi

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
STANDIN = ROOT / "tools" / "fvp-standin"
REAL_FVP = "/opt/arm/FVP_Base_RevC-2xAEMvA/models/Linux64_GCC-9.3/FVP_Base_RevC-2xAEMvA"
FIRMWARE = "/opt/arm/cca-firmware"
TIMEOUT = 600.0
SHELL_PROMPT = "cca-hil model> "
_BLOCK = re.compile(r"^```console\n(.*?)^```", re.MULTILINE | re.DOTALL)
_EXIT = re.compile(r"#\s*exit\s+(\d+)\s*$")


@dataclass
class Command:
    """One ``$`` line of the tutorial and the excerpt of its output printed under it."""

    line: str
    number: int
    excerpt: list[str] = field(default_factory=list)

    @property
    def expected_exit(self) -> int:
        """The ``# exit N`` annotation, else 0."""
        match = _EXIT.search(self.line)
        return int(match.group(1)) if match else 0

    @property
    def words(self) -> list[str]:
        """The command's words, without its comment."""
        return shlex.split(self.line, comments=True)


def tutorial_commands(text: str) -> list[Command]:
    """Every command of every console block, in order."""
    commands: list[Command] = []
    for block in _BLOCK.finditer(text):
        line_number = text[: block.start()].count("\n") + 2
        for offset, line in enumerate(block.group(1).splitlines()):
            if line.startswith("$ "):
                commands.append(Command(line[2:], line_number + offset))
            elif line.strip():
                assert commands, f"tutorial.md:{line_number + offset}: output before any command"
                commands[-1].excerpt.append(line)
    return commands


def _flat(text: str) -> str:
    return " ".join(text.split())


def _substituted(word: str, firmware: Path) -> str:
    return word.replace(REAL_FVP, str(STANDIN)).replace(FIRMWARE, str(firmware))


def _check_excerpt(command: Command, output: str) -> None:
    lines = {_flat(line) for line in output.splitlines()}
    flat = _flat(output)
    for wanted in command.excerpt:
        assert _flat(wanted) in lines or _flat(wanted) in flat, (
            f"tutorial.md:{command.number}: `{command.line}` did not print {wanted.strip()!r}; it printed:\n"
            + output
        )


def _console(command: Command, argv: list[str], env: dict[str, str], cwd: Path) -> None:
    """``cca-hil console``: await the excerpt, then Ctrl-] quits."""
    with PtyProcess.spawn(argv, env=env, cwd=cwd) as term:
        for wanted in command.excerpt:
            term.expect(wanted.strip(), timeout=TIMEOUT)
        term.send(ESCAPE)
        code = term.wait(TIMEOUT)
    assert code == command.expected_exit, strip_ansi(term.output).decode("utf-8", "replace")


def _answer(lines: list[str]) -> re.Pattern[bytes]:
    """The lines in order (spaces as in the excerpt), then the next prompt."""
    parts = [re.escape(line.strip().encode()) for line in lines]
    return re.compile(rb"[\s\S]*".join([*parts, re.escape(SHELL_PROMPT.rstrip().encode())]))


def _shell(command: Command, argv: list[str], env: dict[str, str], cwd: Path) -> None:
    """``cca-hil shell``: type each prompt line once the prompt is back, await the lines under it; Ctrl-D."""
    inputs: list[tuple[str, list[str]]] = []
    for line in command.excerpt:
        if line.startswith(SHELL_PROMPT):
            inputs.append((line[len(SHELL_PROMPT) :], []))
        else:
            assert inputs, f"tutorial.md:{command.number}: shell output before the first prompt line"
            inputs[-1][1].append(line)
    # Each typed line shows what it prints: the prompt is awaited after that, so no key is typed early.
    assert all(answer for _, answer in inputs), f"tutorial.md:{command.number}: a shell line shows no answer"
    with PtyProcess.spawn(argv, env=env, cwd=cwd) as term:
        term.expect(SHELL_PROMPT.rstrip(), timeout=TIMEOUT)
        for typed, answer in inputs:
            mark = term.mark()
            term.sendline(typed)
            term.expect(_answer(answer), since=mark, timeout=TIMEOUT)
        term.send(CTRL_D)
        code = term.wait(TIMEOUT)
    assert code == command.expected_exit, strip_ansi(term.output).decode("utf-8", "replace")


INTERACTIVE: dict[str, Callable[[Command, list[str], dict[str, str], Path], None]] = {
    "console": _console,
    "shell": _shell,
}
"""Commands that run on a pty, by their last word."""


def test_the_tutorial_has_all_three_parts_and_every_command_is_tested() -> None:
    text = TUTORIAL.read_text(encoding="utf-8")
    commands = tutorial_commands(text)
    assert len(commands) >= 30
    lines = [c.line for c in commands]
    assert any("show realms --session demo" in line for line in lines)
    assert any("--profile board-sim" in line for line in lines)
    assert any(line.startswith("cca-hil fvp start") for line in lines)
    for command in commands:
        assert command.words[0] in ("cca-hil", "export", "unset"), command.line
    assert (ROOT / "docs" / "images" / "show-gpt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "images/show-gpt.png" in text


def test_every_tutorial_command_runs_as_documented(tmp_path: Path, process_guard: str) -> None:
    commands = tutorial_commands(TUTORIAL.read_text(encoding="utf-8"))
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    (firmware / "bl1.bin").write_bytes(b"\0" * 4096)
    (firmware / "fip.bin").write_bytes(b"\0" * 4096)
    work = tmp_path / "bench"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCA_HIL_")}
    env["COLUMNS"] = "120"
    env.pop("TERM", None)
    fvp_started = False
    ran = 0
    try:
        for command in commands:
            words = [_substituted(w, firmware) for w in command.words]
            if words[0] == "export":
                for assignment in words[1:]:
                    name, _, value = assignment.partition("=")
                    env[name] = value
                continue
            if words[0] == "unset":
                for name in words[1:]:
                    env.pop(name, None)
                continue
            argv = [sys.executable, "-m", "cca_hil", *words[1:]]
            ran += 1
            if words[-1] in INTERACTIVE:
                INTERACTIVE[words[-1]](command, argv, env, work)
                continue
            proc = subprocess.run(
                argv, capture_output=True, text=True, env=env, cwd=work, timeout=TIMEOUT, check=False
            )
            if words[1:3] == ["fvp", "start"]:
                fvp_started = proc.returncode == 0
            elif words[1:3] == ["fvp", "stop"]:
                fvp_started = False
            assert proc.returncode == command.expected_exit, (
                f"tutorial.md:{command.number}: `{command.line}` exited {proc.returncode}, "
                f"expected {command.expected_exit}\n{proc.stdout}{proc.stderr}"
            )
            _check_excerpt(command, proc.stdout)
    finally:
        if fvp_started:
            subprocess.run(
                [sys.executable, "-m", "cca_hil", "fvp", "stop"],
                env=env,
                cwd=work,
                timeout=TIMEOUT,
                check=False,
            )
    assert ran == sum(1 for c in commands if c.words[0] == "cca-hil")
    # The picture the tutorial shows is what `show gpt --svg` writes.
    assert (work / "pas.svg").read_text(encoding="utf-8").startswith("<?xml")


@pytest.mark.parametrize(
    ("line", "exit_code", "words"),
    [
        ("cca-hil rmi version", 0, ["cca-hil", "rmi", "version"]),
        ("cca-hil run bad.yaml  # exit 2", 2, ["cca-hil", "run", "bad.yaml"]),
        ("export A='x;y=z'", 0, ["export", "A=x;y=z"]),
    ],
)
def test_command_lines_are_read_with_their_exit_annotation(
    line: str, exit_code: int, words: list[str]
) -> None:
    command = tutorial_commands(f"```console\n$ {line}\nsome output\n```\n")[0]
    assert (command.expected_exit, command.words, command.excerpt) == (exit_code, words, ["some output"])
