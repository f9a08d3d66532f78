"""Progress bars: a tqdm bar of our own with ``progress=True``, or the caller's own display.

A display is moved at the loop's item boundaries, where the library already runs (never
per item, so the hot path stays free of Python code), and the boundaries come at least
every `REFRESH_SECONDS` while a display is on. It is told about what this run did only:
a bar that starts at the resumed position (tqdm's ``initial``) computes its rate and ETA
from the items processed since it was created, so skipped items never make them absurd.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sized
from typing import IO, Any, Protocol, runtime_checkable

# How often a shown display is moved, at most: tqdm's own default refresh is 0.1 s.
REFRESH_SECONDS = 0.2


@runtime_checkable
class ProgressDisplay(Protocol):
    """What ``iterate(progress=...)`` accepts besides True: anything with tqdm's `update`.

    Optional, used when present: ``set_postfix_str(text, refresh=False)`` (shows when the
    last save happened) and ``write(text, file=...)`` (prints the stop line without
    garbling the display), both as tqdm has them.
    """

    def update(self, n: int = 1) -> Any:
        """Advance the display by `n` finished items."""


class LoopDisplay:
    """The display of one loop, and what it has been shown so far."""

    def __init__(self, display: ProgressDisplay, *, owned: bool, position: int) -> None:
        self.display = display
        self.owned = owned  # we made it, so we close it
        self._shown = position

    def advance_to(self, position: int) -> None:
        """Show every item up to `position` as done."""
        if position > self._shown:
            self.display.update(position - self._shown)
            self._shown = position

    def saved(self) -> None:
        """Note a save in the postfix, as local wall time (cheap: no redraw of its own)."""
        set_postfix = getattr(self.display, "set_postfix_str", None)
        if set_postfix is not None:
            set_postfix(f"saved {time.strftime('%H:%M:%S')}", refresh=False)

    def write(self, text: str) -> bool:
        """Print `text` through the display; False when it has no `write` method."""
        write = getattr(self.display, "write", None)
        if write is None:
            return False
        write(text, file=sys.stderr)
        return True

    def close(self) -> None:
        """Close the bar if the library made it; a caller's display stays the caller's."""
        if self.owned:
            self.display.close()  # type: ignore[attr-defined]


def write_line(text: str, stream: IO[str]) -> None:
    """Write `text` on `stream` as a line of its own, even after a program's ``\\r``
    progress line that left the terminal's cursor mid-line.

    A terminal cannot be asked where its cursor is without reading its input, so on a
    terminal the line is preceded by as many spaces as the terminal is wide, and a
    carriage return (zsh's PROMPT_SP does the same): from the first column those spaces
    fill the line without moving to the next (the cursor waits at the last column) and
    the return goes back to its start; from any other column they wrap to the next line,
    and the return goes to that line's start. Either way the text starts a clean line,
    and a line that ended properly gets no blank line after it.
    """
    for program_output in (sys.stdout, sys.stderr):
        try:
            if program_output is not None:
                program_output.flush()  # what the program wrote comes first
        except (OSError, ValueError):
            pass  # closed or broken: nothing of it will show anyway
    prefix = ""
    try:
        if stream.isatty():
            columns = os.get_terminal_size(stream.fileno()).columns
            prefix = " " * columns + "\r" if columns > 1 else "\n"
    except (OSError, ValueError, AttributeError):  # no terminal after all, or no fileno()
        prefix = ""
    stream.write(prefix + text + "\n")
    stream.flush()


def items_until_refresh(pace: float | None) -> int:
    """Items until the display is due again, at `pace` seconds per item."""
    if not pace:
        return 1
    return max(1, int(REFRESH_SECONDS / pace))


def open_display(
    choice: bool | ProgressDisplay, items: object, position: int, description: str
) -> LoopDisplay | None:
    """The display `iterate(progress=choice)` asks for, starting at `position`."""
    if choice is False:
        return None
    if choice is True:
        return LoopDisplay(_new_tqdm(items, position, description), owned=True, position=position)
    if isinstance(choice, ProgressDisplay):
        return LoopDisplay(choice, owned=False, position=position)
    raise TypeError(
        "iterate(progress=...) takes True (a tqdm bar), False, or a progress display with "
        f"an update(n) method such as a tqdm bar of your own; got {type(choice).__name__}"
    )


def require_tqdm() -> None:
    """Raise a clear ImportError, naming the extra to install, when tqdm is missing."""
    try:
        import tqdm  # noqa: F401
    except ImportError:
        raise ImportError(
            "iterate(progress=True) draws a tqdm bar, and tqdm is not installed. Install "
            "it with: pip install tqdm (from a clone of resumable, pip install '.[progress]' "
            "installs it too), or pass a display of your own with an update(n) method."
        ) from None


def _new_tqdm(items: object, position: int, description: str) -> ProgressDisplay:
    require_tqdm()
    from tqdm.auto import tqdm

    total = len(items) if isinstance(items, Sized) else None
    bar: ProgressDisplay = tqdm(
        total=total, initial=position, desc=description, unit="item", dynamic_ncols=True
    )
    return bar
