"""What a user sees while a study runs.

On a terminal: one live line, redrawn twice a second and cut to the terminal's width
(80 columns and up): trials done of N, the running trial's epoch k/E and its last
validation value, the best so far, elapsed time and ETA. Log lines and warnings are
printed above it, never onto it. Elsewhere (CI, a pipe, nohup): a plain line when a
trial starts and when it ends, and one per epoch once a trial has run longer than
:data:`EPOCH_LINES_AFTER_SECONDS`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console, ConsoleOptions
from rich.live import Live
from rich.text import Text

__all__ = ["EPOCH_LINES_AFTER_SECONDS", "EpochProgress", "StudyProgress"]

EPOCH_LINES_AFTER_SECONDS = 30.0  # off a terminal, a long trial says how it goes per epoch


@dataclass(frozen=True)
class EpochProgress:
    """Where a running trial stands after one of its epochs.

    Attributes:
        trial: The trial's number.
        epoch: The epoch just finished (a retry counts the restored ones too).
        epochs: The trial's epochs at most (early stopping or pruning may end it sooner).
        metrics: The epoch's metrics (train loss, validation metrics, lr).
        done: Done (complete or pruned) trials of the study when this trial started.
        total: The study's ``n_trials``.
    """

    trial: int
    epoch: int
    epochs: int
    metrics: dict[str, float]
    done: int
    total: int


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class StudyProgress:
    """A study's progress on ``console`` (see the module's docstring).

    Args:
        console: Where to show it (stderr).
        name: The study.
        metric: The objective's name.
        total: The study's ``n_trials``.
        quiet: Show nothing (a helper worker: the process that started it reports).
        epoch_lines_after: Off a terminal, seconds of a trial before its epochs are shown.
    """

    def __init__(
        self,
        console: Console,
        name: str,
        metric: str,
        total: int,
        quiet: bool = False,
        epoch_lines_after: float = EPOCH_LINES_AFTER_SECONDS,
    ) -> None:
        self.console = console
        self.name = name
        self.metric = metric
        self.total = total
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self.epoch_lines_after = epoch_lines_after
        self.started = time.monotonic()
        self.done: int | None = None  # unknown until the first trial starts
        self.done_here = 0  # by this process
        self.started_done: int | None = None  # done trials when this process began
        self.running: EpochProgress | None = None
        self.trial_started = self.started
        self.best: tuple[float, int] | None = None
        self._live: Live | None = None
        self._streams: list[tuple[logging.StreamHandler[Any], Any]] = []

    def __enter__(self) -> StudyProgress:
        if self.live:
            self._live = Live(
                self, console=self.console, transient=True, refresh_per_second=2
            ).__enter__()
            # Handlers made before Live write to the real stderr, onto the line: point them
            # at Live's stderr, which prints above it.
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream in (
                    sys.__stderr__,
                    self._live.console.file,
                ):
                    self._streams.append((handler, handler.setStream(sys.stderr)))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for handler, stream in self._streams:
            handler.setStream(stream)
        if self._live is not None:
            self._live.__exit__(*exc_info)

    def on_epoch(self, now: EpochProgress) -> None:
        """A trial finished an epoch."""
        first = self.running is None or self.running.trial != now.trial
        self.running, self.done = now, now.done
        if self.started_done is None:
            self.started_done = now.done  # this invocation's pace counts from here
        if first:
            self.trial_started = time.monotonic()
        if self.live or self.quiet:
            return
        running = time.monotonic() - self.trial_started
        if first or running >= self.epoch_lines_after:
            self._say(f"[{now.done}/{self.total}] {self._epoch(now)} ({_clock(running)})")

    def on_trial(self, now: Any) -> None:
        """A trial ended (``now``: :class:`tagifai.study.TrialProgress`)."""
        trial = now.trial
        self.done, self.done_here, self.running = now.done, self.done_here + 1, None
        if now.best_value is not None:
            self.best = (now.best_value, now.best_number)
        if self.live or self.quiet:
            return
        value = "" if trial.value is None else f" {self.metric}={trial.value:.4f}"
        best = "" if self.best is None else f"; best {self.best[0]:.4f} (trial {self.best[1]})"
        self._say(f"[{now.done}/{now.total}] trial {trial.number} {trial.state.name.lower()}"
                  f"{value}{best}")  # fmt: skip

    def _say(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def _epoch(self, now: EpochProgress) -> str:
        value = now.metrics.get(self.metric)
        shown = "" if value is None else f" {self.metric}={value:.4f}"
        return f"trial {now.trial} epoch {now.epoch}/{now.epochs}{shown}"

    def line(self, width: int) -> str:
        """The live line, cut to ``width`` columns (the fullest form that fits)."""
        elapsed = time.monotonic() - self.started
        done = "?" if self.done is None else str(self.done)
        trials = f"{done}/{self.total} trials"
        running = "" if self.running is None else self._epoch(self.running)
        best = "" if self.best is None else f"best {self.best[0]:.4f} (trial {self.best[1]})"
        times = f"{_clock(elapsed)} ETA {self._eta(elapsed)}"
        forms = [
            [f"study {self.name}", trials, running, best, times],
            [trials, running, best, times],
            [trials, running, best.replace(" (trial ", " #").rstrip(")"), times],
            [trials, running, times],
            [trials, running],
        ]
        for parts in forms:
            text = " | ".join(part for part in parts if part)
            if len(text) <= width:
                return text
        return text[: max(0, width - 1)] + "…"

    def _eta(self, elapsed: float) -> str:
        """Time left at this invocation's pace so far (trials and the running one's epochs)."""
        if self.done is None:
            return "?"
        start = self.done if self.started_done is None else self.started_done
        fraction_now = (
            self.running.epoch / max(1, self.running.epochs) if self.running is not None else 0.0
        )
        progressed = self.done - start + fraction_now
        left = self.total - self.done - fraction_now
        if progressed <= 0 or left <= 0:
            return "?" if left > 0 else _clock(0)
        return _clock(elapsed * left / progressed)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        yield Text(self.line(options.max_width), no_wrap=True, overflow="ellipsis")
