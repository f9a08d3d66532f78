"""What a key is: the str or int that names an item of keyed progress, and its JSON form.

A key is a JSON string or a JSON integer, so the key ``"1"`` and the key ``1`` stay
distinct. Two kinds of key that JSON (or orjson) cannot hold as such are stored as a
one-entry object, which no plain key can be confused with:

- an int beyond the 64 bits orjson writes (below -2**63 or above 2**64 - 1) as
  ``{"int": "<hex digits>"}``, hex because Python limits decimal conversion of huge ints;
- a str with a lone surrogate (e.g. a file name decoded with ``surrogateescape``), which
  is not valid UTF-8, as ``{"str": "<hex of its UTF-8 bytes, surrogates passed>"}``.

The key journal (`resumable._store.journal_codec`) and the failure records
(`resumable._failures`) write keys in that form.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from resumable._errors import UsageError
from resumable._text import shown

Key: TypeAlias = str | int
KEY_TYPES = frozenset({str, int})
_INT_TAG = "int"
_STR_TAG = "str"
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def check_keys(keys: list[Any]) -> None:
    """Raise `UsageError` unless every key is exactly a str or an int."""
    # One pass in C over the types; the loop below runs only to name the culprit.
    if set(map(type, keys)) <= KEY_TYPES:
        return
    for key in keys:
        if type(key) not in KEY_TYPES:
            raise UsageError(_bad_key_message(key))


def _bad_key_message(key: object) -> str:
    kind = type(key).__name__
    try:
        shown = repr(key)
    except Exception:  # a broken __repr__ must not hide the real problem
        shown = object.__repr__(key)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    message = (
        f"a key must be a str or an int, but the key function returned a {kind}: {shown}. "
        "Return a str or an int from the key function"
    )
    if isinstance(key, bool):
        return f"{message} (True would be the same key as 1, and False as 0)."
    if isinstance(key, (str, int)):
        return (
            f"{message}, e.g. str(key) or int(key): {kind} is a subclass of "
            f"{'str' if isinstance(key, str) else 'int'}, and it would come back from the "
            "journal as a plain value, which may not compare or hash like it."
        )
    return f"{message}, e.g. str(key)."


def tagged_key(key: Key) -> Key | dict[str, str]:
    """`key`, or the tagged object that stands for it when orjson cannot write it."""
    if isinstance(key, int):  # the keys were checked: no bool, no subclass
        if _INT64_MIN <= key <= _UINT64_MAX:
            return key
        return {_INT_TAG: format(key, "x")}
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return {_STR_TAG: key.encode("utf-8", "surrogatepass").hex()}
    return key


def key_from_tagged(value: object) -> Key:
    """The key that `value`, as `tagged_key` wrote it, stands for; ValueError if none."""
    if type(value) is str or type(value) is int:
        return value
    if type(value) is dict and len(value) == 1:
        tag, digits = next(iter(value.items()))
        key: Key | None = None
        if type(digits) is str:
            try:
                if tag == _INT_TAG:
                    key = int(digits, 16)
                elif tag == _STR_TAG:
                    key = bytes.fromhex(digits).decode("utf-8", "surrogatepass")
            except ValueError:  # UnicodeDecodeError is a ValueError
                pass
        # Only the form tagged_key writes: a tag around a key JSON holds as it is
        # ({"str": ""}, {"int": "5"}) was written by no save, so it is damage.
        if key is not None and tagged_key(key) == value:
            return key
    raise ValueError(f"{shown(value)}, which is not a key")
