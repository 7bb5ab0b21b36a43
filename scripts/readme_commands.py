"""Run the README's commands, verbatim and in the order given, in a clone of the project.

Each ```bash block of the README is a fresh terminal: its commands run one after another
(``bash -c``, in the clone), and its ``source`` / ``export`` / ``cd`` lines are carried
into the block's later commands, as a shell would keep them. The environment is a fresh
shell's: no virtual environment on ``PATH``, no ``MLFLOW_*``, ``TAGIFAI_*`` or ``PG*``
variables. Servers (``make ui``, ``make dashboard``, ``make serve``, ``mlflow models
serve``, ...) start in the background and are waited on by their port; a later server on
the same port replaces the earlier one, and every server is stopped at the end, as are
the local database servers ``make servers-start`` starts.

Skipped, with the reason: the test suite (``make test``, ``make test-fast``: CI runs it),
commands with a placeholder (``<...>``), and commands reading ``../shared`` (the real data
sets) where the clone has none beside it.

One line per command; the first command that fails stops the run (exit code 1), naming
it and showing the tail of its output.

Run: ``python scripts/readme_commands.py CLONE [--readme FILE] [--timeout S]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

__all__ = ["Command", "main", "read_commands", "server_port", "skip_reason"]

PLACEHOLDER = re.compile(r"<[^<>\s]+>")  # <user>, <path/to/projects.json>
TEST_SUITE = re.compile(r"^make\s+(test|test-fast)\s*$")
STATE = ("source", ".", "export", "cd")  # lines whose effect later lines of a block rely on
# Foreground servers and the port each listens on unless the command says otherwise.
MAKE_SERVERS = {
    "ui": ("UI_PORT", 5000),
    "dashboard": ("DASHBOARD_PORT", 8080),
    "serve": ("SERVE_PORT", 5001),
}
PROGRAM_SERVERS = {
    ("mlflow", "ui"): 5000,
    ("mlflow", "server"): 5000,
    ("mlflow", "models"): 5000,  # mlflow models serve
    ("tagifai", "serve"): 5001,
    ("optuna-dashboard", None): 8080,
}
# Commands that leave daemons behind, and the command that stops them (run at the end).
CLEANUP = {"make servers-start": "make servers-stop"}
OUTPUT_TAIL_LINES = 40
SERVER_STOP_SECONDS = 30  # SIGTERM, then SIGKILL; a safety net, servers stop in a second


@dataclass(frozen=True)
class Command:
    """One command of the README.

    Attributes:
        block: The number of its ```bash block (1-based).
        text: The command as written, continuation lines included.
        prelude: The block's earlier ``source`` / ``export`` / ``cd`` lines, run first.
    """

    block: int
    text: str
    prelude: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        """The command on one line, without its trailing comment."""
        line = re.sub(r"\\\n\s*", "", self.text)
        line = re.sub(r"\s{2,}#.*$", "", line).strip()
        return line if len(line) <= 110 else line[:107] + "..."

    @property
    def words(self) -> list[str]:
        """Its words as the shell splits them (comments dropped; [] when unbalanced)."""
        try:
            return shlex.split(self.text, comments=True)
        except ValueError:
            return []


def read_commands(readme: Path) -> list[Command]:
    """Every command of the README's ```bash blocks, in order.

    Continuation lines (``\\`` at the end) belong to their command; blank lines and
    lines that are only a comment are not commands.

    Args:
        readme: The README file.

    Returns:
        The commands, each with the block's earlier state lines as its prelude.
    """
    commands: list[Command] = []
    block: list[str] | None = None
    number = 0
    for line in readme.read_text(encoding="utf-8").splitlines():
        if block is None:
            if line.strip() == "```bash":
                block, number = [], number + 1
        elif line.strip() == "```":
            commands.extend(_block_commands(number, block))
            block = None
        else:
            block.append(line)
    return commands


def _block_commands(number: int, lines: list[str]) -> Iterator[Command]:
    prelude: list[str] = []
    pending = ""
    for line in lines:
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line
        if line.endswith("\\"):
            pending += "\n"
            continue
        command = Command(number, pending, tuple(prelude))
        pending = ""
        if command.words[:1] and command.words[0] in STATE:
            prelude.append(command.text)
        yield command


def skip_reason(command: Command, clone: Path) -> str | None:
    """Why ``command`` is not run in ``clone``, or ``None`` to run it."""
    if TEST_SUITE.match(command.shown):
        return "the test suite, which CI runs (.ci/run)"
    if PLACEHOLDER.search(command.text):
        return "a placeholder to fill in (<...>)"
    if "../shared" in command.text and not (clone.parent / "shared").is_dir():
        return f"reads ../shared, and {clone.parent / 'shared'} does not exist"
    return None


def server_port(command: Command) -> int | None:
    """The port ``command`` serves on if it is a server that runs until stopped."""
    words = command.words
    if words[:1] == ["make"]:
        targets = [word for word in words[1:] if "=" not in word and not word.startswith("-")]
        for target in targets:
            if target in MAKE_SERVERS:
                variable, port = MAKE_SERVERS[target]
                given = [w.split("=", 1)[1] for w in words if w.startswith(variable + "=")]
                return int(given[-1]) if given else port
        return None
    for (program, sub), port in PROGRAM_SERVERS.items():
        if words[:1] == [program] and (sub is None or words[1:2] == [sub]):
            for option in ("--port", "-p"):
                if option in words[:-1]:
                    return int(words[words.index(option) + 1])
            return port
    return None


@dataclass
class Runner:
    """Runs commands in the clone, keeping the servers it started and what stops them."""

    clone: Path
    logs: Path
    timeout: float
    env: dict[str, str]
    servers: dict[int, tuple[subprocess.Popen[bytes], Command]] = field(default_factory=dict)
    cleanups: list[str] = field(default_factory=list)
    count: int = 0

    def _script(self, command: Command) -> list[str]:
        return ["bash", "-c", "\n".join([*command.prelude, command.text])]

    def _spawn(self, command: Command, out: BinaryIO) -> subprocess.Popen[bytes]:
        """Start ``command`` in the clone, its output to ``out``, in a process group of its
        own (stopped whole on a timeout or at the end)."""
        return subprocess.Popen(
            self._script(command),
            cwd=self.clone,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _log(self) -> Path:
        self.count += 1
        return self.logs / f"{self.count:03d}.log"

    def run(self, command: Command) -> tuple[int, Path]:
        """Run ``command`` to its end; its exit code (124 past the timeout) and its log."""
        log = self._log()
        with log.open("wb") as out:
            process = self._spawn(command, out)
            try:
                code = process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _stop(process)
                code = 124
        cleanup = CLEANUP.get(command.shown)
        if cleanup and cleanup not in self.cleanups:
            self.cleanups.append(cleanup)
        return code, log

    def start(self, command: Command, port: int) -> tuple[str | None, Path]:
        """Start a server in the background and wait until its port answers.

        Returns:
            ``None`` once it listens, else why not; and its log.
        """
        if port in self.servers:  # a later server on this port replaces the earlier one
            _stop(self.servers.pop(port)[0])
        log = self._log()
        if _listening(port):
            return f"port {port} is taken by a process this run did not start", log
        out = log.open("wb")
        process = self._spawn(command, out)
        out.close()
        self.servers[port] = (process, command)
        deadline = time.monotonic() + self.timeout  # a safety net: the port is the event
        while not _listening(port):
            if process.poll() is not None:
                return f"exited with code {process.returncode} before port {port} opened", log
            if time.monotonic() > deadline:
                return f"port {port} did not open in {self.timeout:.0f}s", log
            time.sleep(0.2)
        return None, log

    def close(self) -> None:
        """Stop every server, latest first, then run the cleanups (``make servers-stop``)."""
        for process, _ in reversed(list(self.servers.values())):
            _stop(process)
        self.servers.clear()
        for cleanup in self.cleanups:
            subprocess.run(
                ["bash", "-c", cleanup],
                cwd=self.clone,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
            )
            print(f"      cleanup: {cleanup}", flush=True)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's whole group (make and the server it runs), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=SERVER_STOP_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue


def fresh_shell_env() -> dict[str, str]:
    """This process's environment as a new terminal would have it: no virtual environment
    on ``PATH`` and no variable that would point the commands at other stores or servers."""
    dropped = ("MLFLOW_", "TAGIFAI_", "PG", "VIRTUAL_ENV")
    env = {key: value for key, value in os.environ.items() if not key.startswith(dropped)}
    folders = env.get("PATH", "").split(os.pathsep)
    env["PATH"] = os.pathsep.join(
        folder for folder in folders if folder and not (Path(folder).parent / "pyvenv.cfg").exists()
    )
    return env


def _tail(log: Path) -> str:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-OUTPUT_TAIL_LINES:])


def _line(index: int, result: str, seconds: float | None, command: Command, note: str) -> None:
    took = f"{seconds:6.1f}s" if seconds is not None else " " * 7
    print(f"[{index:2d}] {result:<4} {took}  {command.shown}{note}", flush=True)


def run_all(clone: Path, readme: Path, timeout: float) -> int:
    """Run the README's commands in ``clone``; print a line each.

    Returns:
        0 when every command run succeeded, 1 at the first that failed.
    """
    commands = read_commands(readme)
    counts = {"PASS": 0, "UP": 0, "SKIP": 0}
    skipped_state: dict[int, str] = {}  # block -> why a state line it needs was skipped
    with tempfile.TemporaryDirectory(prefix="readme-logs-") as logs:
        runner = Runner(clone, Path(logs), timeout, fresh_shell_env())
        try:
            for index, command in enumerate(commands, 1):
                reason = skip_reason(command, clone) or skipped_state.get(command.block)
                if reason is not None:
                    if command.words[:1] and command.words[0] in STATE:
                        skipped_state.setdefault(command.block, f"follows a skipped line: {reason}")
                    counts["SKIP"] += 1
                    _line(index, "SKIP", None, command, f"  ({reason})")
                    continue
                started = time.monotonic()
                port = server_port(command)
                if port is not None:
                    problem, log = runner.start(command, port)
                    failed, note = problem is not None, f"  (port {port})"
                    result = "UP"
                else:
                    code, log = runner.run(command)
                    failed, note, result = code != 0, "", "PASS"
                    problem = f"exit code {code}" + (" (timed out)" if code == 124 else "")
                seconds = time.monotonic() - started
                if failed:
                    _line(index, "FAIL", seconds, command, f"  ({problem})")
                    print(f"---- its output, last {OUTPUT_TAIL_LINES} lines ----")
                    print(_tail(log))
                    print(f"---- README command {index} failed: {command.shown}", flush=True)
                    return 1
                counts[result] += 1
                _line(index, result, seconds, command, note)
        finally:
            runner.close()
    print(
        f"README: {len(commands)} commands: {counts['PASS']} passed, {counts['UP']} servers "
        f"up and stopped, {counts['SKIP']} skipped",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line: ``readme_commands.py CLONE [--readme FILE] [--timeout S]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clone", type=Path, help="a fresh clone of the project, to run in")
    parser.add_argument("--readme", type=Path, help="the README to read [CLONE/README.md]")
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds one command may take, a safety net [%(default)s]",
    )
    args = parser.parse_args(argv)
    clone = args.clone.resolve()
    readme = args.readme or clone / "README.md"
    if not readme.is_file():
        parser.error(f"{readme}: no such file")

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through run_all, which stops the servers

    signal.signal(signal.SIGTERM, stop)
    return run_all(clone, readme, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
