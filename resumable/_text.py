"""Text from files, file names and keys, made safe and short to show.

A state file, a file name or a key is data, and data may hold anything:

| what | shown as |
| --- | --- |
| a character a terminal acts on (newline, ESC) | its escape, ``\\n``, ``\\x1b`` |
| a byte of a file name that is no UTF-8 | ``\\xNN`` (surrogateescape made it U+DCNN) |
| a str key | its repr, cut after `KEY_CHARS`: ``'abc'... (1,234,567 characters)`` |
| an int key of more than `KEY_DIGITS` digits | ``12345...67890 (5,000 digits)`` |
| a count (`counted`) | ``1 item``, ``9,096 items`` |

Python's str() refuses ints beyond 4,300 digits (``sys.set_int_max_str_digits``), and the
key journal holds keys of any size: `describe_key` never calls it on those.
"""

from __future__ import annotations

import logging
import math
import os

KEY_CHARS = 60  # characters of a str key shown; a longer one is cut, its length given
KEY_DIGITS = 40  # digits of an int key shown; a longer one as its first and last digits
_EDGE_DIGITS = 5
_SHOWN_IN_FULL = 10**KEY_DIGITS
# Counting the digits exactly takes a division as long as the int; beyond ~120,000 digits
# (a few milliseconds) the count comes from the bit length, and is said to be "about".
_EXACT_BITS = 400_000


def counted(number: int, noun: str) -> str:
    """A count as people read it: ``1 item``, ``0 items``, ``9,096 items``."""
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def printable(text: str) -> str:
    """`text` with each character a terminal would act on escaped, as one line."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def valid_unicode(text: str) -> str:
    """`text` with its lone surrogates escaped, so that it encodes as UTF-8 (JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(_escape(char) if _is_surrogate(char) else char for char in text)
    return text


def describe_key(key: str | int) -> str:
    """`key` as a message shows it: a Python literal, of bounded length, on one line."""
    if isinstance(key, str):
        if len(key) <= KEY_CHARS:
            return repr(key)  # repr escapes what is not printable
        return f"{key[:KEY_CHARS]!r}... ({len(key):,} characters)"
    if -_SHOWN_IN_FULL < key < _SHOWN_IN_FULL:
        return str(key)
    sign, size = ("-" if key < 0 else ""), abs(key)
    tail = f"{size % 10**_EDGE_DIGITS:0{_EDGE_DIGITS}d}"
    if size.bit_length() > _EXACT_BITS:
        about = int(size.bit_length() * math.log10(2))
        return f"{sign}...{tail} (about {about:,} digits)"
    digits = _digits(size)
    head = size // 10 ** (digits - _EDGE_DIGITS)
    return f"{sign}{head}...{tail} ({digits:,} digits)"


def _digits(size: int) -> int:
    """The number of decimal digits of `size` > 0, without str(), which may refuse it."""
    digits = int((size.bit_length() - 1) * math.log10(2)) + 1  # those of 2**(bits - 1)
    return digits + 1 if size >= 10**digits else digits  # size < 2**bits: one more, maybe


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return repr(char)[1:-1]  # \n, \x1b, \u200b, \ud800


def _is_surrogate(char: str) -> bool:
    return 0xD800 <= ord(char) <= 0xDFFF


def shown(value: object) -> str:
    """`value` for a message: an int too long to print (Python refuses str() of more than
    4,300 digits) by its size, anything else cut to 60 characters."""
    if type(value) is int and value.bit_length() > 128:
        return f"an integer of {value.bit_length():,} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class PrintableArguments(logging.Filter):
    """Makes the text and path arguments of the library's log records `printable`.

    File names and keys are data: a newline in one would forge a line of the log, and a
    byte of a file name that is no UTF-8 (a lone surrogate in Python) fails a handler that
    writes UTF-8 strictly (a ``FileHandler(encoding="utf-8")`` prints "--- Logging error
    ---" and loses the record). They are logged escaped, as the CLI shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                printable(os.fsdecode(arg)) if isinstance(arg, (str, os.PathLike)) else arg
                for arg in record.args
            )
        return True
