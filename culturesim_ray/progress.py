"""What a command prints: one progress bar per stage, a log file for the rest,
and one line when a stage fails. Pure: tqdm only, no ray.

    with Stage("embed", unit="rows") as st:   # a bar "embed" on stderr
        run_embed(..., log=st.log)            # messages go to the log file, the last
                                              # one beside the bar
    advance(n, total)                         # called by a pipeline loop: n more done

The log file is `log_path()`: a file in Ray's session log directory once
`pipeline.ray_env.init_ray` has started or joined Ray (it calls `set_log_path`),
else one in the temp directory. Under `--verbose` (`set_verbose(True)`) every
message is printed as well, and Ray's own output is left as Ray prints it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from tqdm import tqdm

_state: dict[str, Any] = {"verbose": False, "log_path": None, "stage": None, "failed": None}


def set_verbose(on: bool) -> None:
    _state["verbose"] = bool(on)


def verbose() -> bool:
    return bool(_state["verbose"])


def log_path() -> Path:
    """The file this process logs to (created on first use)."""
    if _state["log_path"] is None:
        _state["log_path"] = Path(tempfile.gettempdir()) / f"culturesim-{os.getpid()}.log"
    return Path(_state["log_path"])


def set_log_path(path: str | Path) -> None:
    """Move logging to `path` (Ray's session log directory), keeping what was written."""
    new, old = Path(path), log_path()
    if new == old:
        return
    new.parent.mkdir(parents=True, exist_ok=True)
    if old.exists():
        with new.open("a", encoding="utf-8") as fh:
            fh.write(old.read_text(encoding="utf-8"))
        old.unlink()
    _state["log_path"] = new


def write_log(msg: str) -> None:
    with log_path().open("a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")


def log(msg: str) -> None:
    """A message of the running stage (or of none): to the log file, beside the
    stage's bar, and printed under --verbose."""
    stage = _state["stage"]
    if stage is not None:
        stage.log(msg)
        return
    write_log(msg)
    if verbose():
        print(msg, file=sys.stderr)


def advance(n: int = 1, total: int | None = None) -> None:
    """n more units of the running stage are done (total: the stage's size when
    known). A no-op outside a stage, so pipeline code may call it always."""
    stage = _state["stage"]
    if stage is not None:
        stage.advance(n, total)


def failed_stage() -> str | None:
    """The stage whose block an exception left, if any (for the one-line error)."""
    return _state["failed"]


class Stage:
    """One bar for one stage: units done, rate, elapsed (and ETA when the total
    is known). Not a terminal: the bar is drawn once, when the stage ends."""

    def __init__(self, name: str, unit: str = "step", total: int | None = None) -> None:
        self.name = name
        self.unit = unit
        self.total = total
        self.done = 0
        self.started = time.time()
        self.bar: tqdm | None = None

    def __enter__(self) -> Stage:
        self.started = time.time()
        _state["stage"] = self
        _state["failed"] = None
        write_log(f"== stage {self.name} started")
        tty = sys.stderr.isatty()
        if not tty:  # a log file or a pipe: one line when the stage ends (see __exit__)
            return self
        self.bar = tqdm(desc=f"{self.name:<14}", total=self.total, unit=f" {self.unit}",
                        file=sys.stderr, leave=True, ascii=not tty, dynamic_ncols=tty,
                        ncols=None if tty else 100, mininterval=0.5 if tty else 1e9,
                        bar_format=None if self.total else
                        "{desc}: {n_fmt}{unit} [{elapsed}, {rate_fmt}]{postfix}")
        return self

    def log(self, msg: str) -> None:
        write_log(f"[{self.name}] {msg}")
        if verbose():
            tqdm.write(msg, file=sys.stderr)
        elif self.bar is not None and sys.stderr.isatty():
            self.bar.set_postfix_str(msg.strip()[:50], refresh=True)

    def advance(self, n: int = 1, total: int | None = None) -> None:
        self.done += n
        self.total = total if total is not None else self.total
        if self.bar is None:
            return
        if total is not None and total != self.bar.total:
            self.bar.total = total
            self.bar.bar_format = None
        self.bar.update(n)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _state["stage"] = None
        seconds = time.time() - self.started
        if exc is not None:
            _state["failed"] = self.name
            write_log(f"== stage {self.name} failed after {seconds:.1f} s:\n"
                      + "".join(traceback.format_exception(kind, exc, tb)))
            if self.bar is not None:
                self.bar.leave = False
                self.bar.close()
            return
        write_log(f"== stage {self.name} done in {seconds:.1f} s")
        if self.bar is None:
            total = self.total or max(1, self.done)
            print(tqdm.format_meter(total if self.done == 0 else self.done, total, seconds,
                                    prefix=f"{self.name:<14}", unit=f" {self.unit}",
                                    ascii=True, ncols=80), file=sys.stderr, flush=True)
        else:
            if self.bar.total is None:  # a stage that counted nothing: one step, done
                self.bar.total = max(1, self.done)
                self.bar.bar_format = None
                self.bar.n = self.bar.total
            self.bar.set_postfix_str("")
            self.bar.refresh()
            self.bar.close()


def innermost(exc: BaseException) -> BaseException:
    """The exception Ray wrapped (RayTaskError.cause, __cause__), innermost first."""
    cause, seen = exc, set()
    while id(cause) not in seen:
        seen.add(id(cause))
        inner = getattr(cause, "cause", None) or cause.__cause__
        if not isinstance(inner, BaseException):
            break
        cause = inner
    return cause


def error_line(exc: BaseException, command: str) -> str:
    """`culturesim: STAGE failed: CAUSE (log: FILE)`, one line: the stage that
    was running (else the command) and the innermost cause's first line."""
    cause = innermost(exc)
    lines = [t for t in str(cause).strip().splitlines() if t.strip()]
    # a Ray error without a user cause starts with its task's name: its last line says why
    text = lines[-1] if lines and lines[0].startswith("ray::") else (lines[0] if lines else "")
    what = f"{type(cause).__name__}: {text.strip()}".strip().rstrip(":")
    return (f"culturesim: {failed_stage() or command} failed: {what[:300]} "
            f"(log: {log_path()})")


def summary(what: str, stage: Stage) -> None:
    """A command's closing line: the stage, what it wrote, its time."""
    print(f"{stage.name}: {what} ({time.time() - stage.started:.0f} s)")
