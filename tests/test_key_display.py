"""Keys as they are shown: in r.attempt()'s warning, in `resumable status` and its --json.

A key can be an int of any size (Python's str() refuses more than 4,300 digits) or a str
of any length holding anything; a message shows it bounded and on one line, and --json
holds it exactly, as the state file writes it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, cast

import pytest

from resumable import Resumable, UsageError

from jobs.harness import resumable_command

BIG = 10**5000 + 12345  # 5,001 digits
main = resumable_command()  # what the installed `resumable` command runs


def keyed_job_failing_on(path: Path, keys: list[str | int], *bad: str | int) -> list[str | int]:
    """A keyed run over `keys` where the items `bad` fail; the items the loop ran."""
    ran = []
    with Resumable(path) as r:
        for key in r.iterate(keys, key=lambda k: k, on_error="record"):
            with r.attempt():
                ran.append(key)
                if key in bad:
                    raise RuntimeError("boom")
    return ran


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]


def test_an_int_key_of_5000_digits_that_fails_is_recorded_logged_short_and_the_loop_goes_on(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="resumable"):
        ran = keyed_job_failing_on(state_path, [1, BIG, 2], BIG)
    assert ran == [1, BIG, 2]
    assert warnings_of(caplog) == [
        f"{state_path}: item 10000...12345 (5,001 digits) failed (RuntimeError: boom), "
        "attempt 1 of 3; recorded, going on"
    ]
    with Resumable(state_path) as r:
        assert [item.key for item in r.failed] == [BIG]


def test_a_long_str_key_is_logged_cut_with_its_length_and_escaped(
    state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    long_key = "\x1b[2J" + "u" * 1_000 + "\n"
    with caplog.at_level(logging.WARNING, logger="resumable"):
        keyed_job_failing_on(state_path, [long_key], long_key)
    [warning] = warnings_of(caplog)
    shown = repr("\x1b[2J" + "u" * 56) + "... (1,005 characters)"
    assert f"item {shown} failed" in warning
    assert "\x1b" not in warning
    assert "\n" not in warning


def test_status_shows_a_huge_int_key_short_and_json_holds_it_exactly(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json writes the key as the state file does: an int beyond 64 bits as
    ``{"int": "<hex>"}``, which every JSON parser reads (Python's json refuses a number
    of more than 4,300 digits, JavaScript rounds one beyond 2**53)."""
    keyed_job_failing_on(state_path, [1, BIG, 2**64, 2], BIG, 2**64)
    assert main(["status", str(state_path)]) == 0
    out = capsys.readouterr().out
    assert "               10000...12345 (5,001 digits): RuntimeError: boom (once)" in out
    assert "               18446744073709551616: RuntimeError: boom (once)" in out

    assert main(["status", "--json", str(state_path)]) == 0
    [report] = json.loads(capsys.readouterr().out)
    keys = [item["key"] for item in report["failed"]]
    assert keys == [{"int": format(BIG, "x")}, {"int": "10000000000000000"}]


def test_a_str_key_that_is_no_utf8_is_tagged_in_json_and_escaped_in_text(
    state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file name decoded with surrogateescape, as os.listdir gives one that is no UTF-8."""
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    keyed_job_failing_on(state_path, [name], name)
    assert main(["status", str(state_path)]) == 0
    assert "               'caf\\udce9.txt': RuntimeError: boom (once)" in capsys.readouterr().out
    assert main(["status", "--json", str(state_path)]) == 0
    out = capsys.readouterr().out
    [report] = json.loads(out)
    [tagged] = [item["key"] for item in report["failed"]]
    assert bytes.fromhex(tagged["str"]).decode("utf-8", "surrogatepass") == name


class Name(str):
    """A str subclass, as some libraries return for names."""


class Count(int):
    """An int subclass, as numpy-like libraries return for counts."""


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (b"x" * 57, "returned a bytes: b'" + "x" * 57 + "'. Return"),  # 60 characters: whole
        (b"x" * 58, "returned a bytes: b'" + "x" * 55 + ".... Return"),  # 61: cut to 57 and ...
        (1.5, "returned a float: 1.5. Return"),
        (
            Name("a"),
            "returned a Name: 'a'. Return a str or an int from the key function, "
            "e.g. str(key) or int(key): Name is a subclass of str,",
        ),
        (
            Count(7),
            "returned a Count: 7. Return a str or an int from the key function, "
            "e.g. str(key) or int(key): Count is a subclass of int,",
        ),
    ],
    ids=["60-characters", "61-characters", "float", "str-subclass", "int-subclass"],
)
def test_a_bad_key_is_shown_whole_up_to_60_characters_and_a_subclass_is_named(
    state_path: Path, key: object, message: str
) -> None:
    with Resumable(state_path) as r, pytest.raises(UsageError, match=re.escape(message)):
        for _ in r.iterate([key], key=cast(Any, lambda item: item)):
            pass
