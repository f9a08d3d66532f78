"""The fingerprint of one input item: the same in every process, and cheap whatever the item.

The input check (`_input_check`) compares the fingerprints of the first done items between
runs, so a fingerprint must not change when nothing changed: no ``repr`` of arbitrary
objects (a set's order changes with each interpreter's string hashing, a default repr shows
a memory address, a repr may raise or cost seconds). What is read of an item:

| item | what its fingerprint covers |
| --- | --- |
| None, bool, int, float, complex | the value (of a huge int: size, lowest bytes) |
| str | the length, the first `MAX_CHARS` characters |
| bytes, bytearray, other buffers | format, shape, the first `MAX_CHARS` bytes if contiguous |
| tuple, list, dict | the length; the elements, keys and values, depth first |
| set, frozenset | the length; the elements' fingerprints, sorted |
| datetime and friends, Decimal, Fraction, UUID | its repr |
| a path, an Enum member, a class | its str, its name, its qualified name |
| a dataclass instance | its fields, by name |
| an object with ``__index__`` and no buffer | its integer |
| any other object | its type's name only |

The type's name is part of the fingerprint wherever the type is not one of the built-in
ones above (a subclass, a named tuple, numpy's floats). One item reads at most
`MAX_PARTS` values, whatever its depth; past that, the same cut is made on every run. An
exception while reading an item (an ``__index__`` that raises) makes its fingerprint
unknown (None), never a stopped loop.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import fractions
import hashlib
import itertools
import operator
import pathlib
import uuid
from collections.abc import Iterator

MAX_CHARS = 1024  # of a str, bytes or buffer: its length and this many first ones
MAX_PARTS = 128  # values read per item, containers and their elements alike
# Types fingerprinted by what they are, without their type's name.
_BUILT_IN = frozenset(
    (type(None), bool, int, float, complex, str, bytes, bytearray, tuple, list, dict)
) | {set, frozenset}
# Types whose repr is their value, the same in every process.
_TEXT = (
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    datetime.timezone,
    decimal.Decimal,
    fractions.Fraction,
    uuid.UUID,
)


def item_fingerprint(item: object) -> bytes | None:
    """The fingerprint of `item` (16 bytes), or None when reading it raised."""
    writer = _Writer(MAX_PARTS)
    try:
        writer.add(item)
    except Exception:
        return None
    return writer.digest()


class _Writer:
    """Collects a value's parts, each tagged and length-prefixed, to be hashed at once."""

    def __init__(self, parts: int) -> None:
        self._text = bytearray()  # at most MAX_PARTS parts of at most 4 * MAX_CHARS bytes
        self.parts = parts  # values still to be read

    def digest(self) -> bytes:
        return hashlib.blake2b(self._text, digest_size=16).digest()

    def write(self, tag: bytes, data: bytes = b"") -> None:
        self._text += tag
        self._text += len(data).to_bytes(4, "little")
        self._text += data

    def add(self, value: object) -> None:
        """Read `value` into the hash; a container's values while the budget lasts. The
        built-in types are read through their own methods, never a subclass's."""
        self.parts -= 1
        kind = type(value)
        if kind not in _BUILT_IN:
            self.write(b"t", _name(kind))
        if value is None:
            self.write(b"N")
        elif isinstance(value, bool):
            self.write(b"?", b"1" if value else b"0")
        elif isinstance(value, int):
            self.write(b"i", _int_bytes(int.__index__(value)))
        elif isinstance(value, float):
            self.write(b"f", float.__repr__(value).encode())
        elif isinstance(value, complex):
            self.write(b"j", complex.__repr__(value).encode())
        elif isinstance(value, str):
            head = str.__getitem__(value, slice(MAX_CHARS))
            self.write(b"s", f"{str.__len__(value)}:{head}".encode("utf-8", "surrogatepass"))
        elif isinstance(value, tuple):
            self._add_all(b"(", tuple.__len__(value), tuple.__iter__(value))
        elif isinstance(value, list):
            self._add_all(b"[", list.__len__(value), list.__iter__(value))
        elif isinstance(value, dict):
            pairs = dict.items(value)
            self._add_all(b"{", len(pairs), itertools.chain.from_iterable(pairs))
        elif isinstance(value, frozenset):
            self._add_set(frozenset.__len__(value), frozenset.__iter__(value))
        elif isinstance(value, set):
            self._add_set(set.__len__(value), set.__iter__(value))
        else:
            self._add_other(value)

    def _add_all(self, tag: bytes, size: int, values: Iterator[object]) -> None:
        """A container's length and its first values, as many as the budget allows."""
        self.write(tag, str(size).encode())
        for value in values:
            if self.parts <= 0:
                self.write(b"~")  # cut here, the same on every run
                break
            self.add(value)
        self.write(b")")

    def _add_set(self, size: int, elements: Iterator[object]) -> None:
        """A set's elements come in no fixed order: each gets an equal share of the
        budget, so which ones are cut short does not depend on the order."""
        self.write(b"<", str(size).encode())
        share = self.parts // size if size else 0
        if share == 0:
            return  # too many to read: the length stands for them
        self.parts -= share * size
        digests = []
        for element in elements:
            part = _Writer(share)
            part.add(element)
            digests.append(part.digest())
        for digest in sorted(digests):
            self.write(b"e", digest)

    def _add_other(self, value: object) -> None:
        if isinstance(value, _TEXT):
            self.write(b"r", repr(value)[:MAX_CHARS].encode())
        elif isinstance(value, pathlib.PurePath):
            self.write(b"p", str(value).encode("utf-8", "surrogatepass"))
        elif isinstance(value, enum.Enum):
            self.write(b"e", str(value._name_).encode())
        elif isinstance(value, type):
            self.write(b"c", _name(value))
        elif dataclasses.is_dataclass(value):
            fields = dataclasses.fields(value)
            named = ((field.name, getattr(value, field.name)) for field in fields)
            self._add_all(b"@", len(fields), itertools.chain.from_iterable(named))
        elif not self._add_buffer(value) and hasattr(type(value), "__index__"):
            self.write(b"i", _int_bytes(operator.index(value)))  # type: ignore[arg-type]

    def _add_buffer(self, value: object) -> bool:
        """bytes, bytearray, array.array, numpy arrays and scalars: format, shape, and the
        first bytes. False for an object without a buffer."""
        try:
            view = memoryview(value)  # type: ignore[arg-type]
        except TypeError:
            return False
        with view:
            self.write(b"m", f"{view.format} {view.shape} {view.nbytes}".encode())
            if view.c_contiguous:  # else: too costly to gather, its shape stands for it
                # Formats cast() refuses (numpy's structured ones) keep their shape only.
                try:
                    data = view.cast("B")[:MAX_CHARS].tobytes()
                except (TypeError, ValueError):
                    return True
                self.write(b"b", data)
        return True


def _name(kind: type) -> bytes:
    return f"{kind.__module__}.{kind.__qualname__}".encode("utf-8", "surrogatepass")


def _int_bytes(number: int) -> bytes:
    """An int's bytes; of one longer than `MAX_CHARS` bytes, its size and lowest bytes."""
    size = number.bit_length() // 8 + 1
    if size <= MAX_CHARS:
        return number.to_bytes(size, "little", signed=True)
    low = number & ((1 << (8 * MAX_CHARS)) - 1)
    return size.to_bytes(8, "little") + low.to_bytes(MAX_CHARS, "little")
