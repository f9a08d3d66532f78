"""Every ```python block of README.md and docs/*.md runs, as a reader would run it.

The rules (docs/about.md tells contributors the same):

- A page is one session. The test of block N of a page runs, in a fresh namespace and a
  fresh temporary working directory, the page's setup from `SETUP`, then the page's
  blocks before N, then block N. So a block may build on the blocks above it, and each
  test still stands alone (``-k`` picks any one of them).
- A block that defines ``test_*`` functions has them called right after it runs, with a
  fresh ``tmp_path`` when they take one: a page that shows a test shows one that passes.
- Only ``python`` fences run. `test_fences_name_their_language` checks that every fence
  names a language and that no Python hides behind another label.

Blocks run with ``__name__ == "__main__"`` and ``sys.argv == [page]``, as a script would.
Warnings are errors here as in every test, so an example that warns fails.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

_FETCH = '''
def fetch(url: str) -> bytes:
    """Stands in for a download: these examples are about the loop, not about HTTP."""
    return url.encode()
'''

# Helpers that a page's examples use but do not define, because they are not the point of
# the page. Keyed by the page's path relative to the repository root.
SETUP: dict[str, str] = {
    "docs/faq.md": _FETCH,
    "docs/concurrent.md": _FETCH
    + """
urls = [f"https://example.org/page/{n}" for n in range(100)]
pages: list[bytes] = []
save = pages.append
""",
    "docs/index.md": """
from pathlib import Path

Path("words.txt").write_text("".join(f"{word}\\n" for word in ["fig", "banana", "kiwi"] * 50))
""",
}

# Labels a fence may carry; every other block is documentation of something that is not
# Python (commands, terminal sessions, output, file contents).
LANGUAGES = frozenset(
    {"python", "bash", "sh", "shell", "console", "text", "json", "toml", "yaml", "ini"}
)
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
_LOOKS_LIKE_PYTHON = re.compile(r"^(from [\w.]+ import |import [\w.]+$|def \w+\(|class \w+[(:])")


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown page."""

    page: str  # relative to the repository root, with forward slashes
    line: int  # of the opening fence, counted from 1
    language: str  # the first word of the fence's info string; "" when there is none
    code: str  # dedented by the fence's own indentation

    def run(self, namespace: dict[str, Any]) -> None:
        """Execute the block; tracebacks name the Markdown file and its line numbers."""
        # Leading newlines put each line of the code at its line number in the page.
        source = "\n" * self.line + self.code
        exec(compile(source, str(ROOT / self.page), "exec"), namespace)


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    return parse_fences(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


def parse_fences(text: str, page: str) -> list[Block]:
    """The fenced code blocks of Markdown `text`, in order; `page` names it in messages."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        first_line = index  # the opening fence's, counted from 1
        indent, fence = opening["indent"], opening["fence"]
        words = opening["info"].split()
        body: list[str] = []
        while index < len(lines) and not _closes(lines[index], fence):
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        if index == len(lines):
            raise ValueError(f"{page}: the fence opened on line {first_line} is never closed")
        blocks.append(Block(page, first_line, words[0] if words else "", "\n".join(body)))
        index += 1
    return blocks


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(fence) and set(stripped) == {fence[0]}


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = {page.relative_to(ROOT).as_posix(): fenced_blocks(page) for page in PAGES}
PYTHON = {
    page: [block for block in blocks if block.language == "python"]
    for page, blocks in BLOCKS.items()
}
EXAMPLES = [(page, number) for page, blocks in PYTHON.items() for number in range(len(blocks))]


@pytest.mark.parametrize(
    ("page", "number"), EXAMPLES, ids=[f"{page}-block{number}" for page, number in EXAMPLES]
)
def test_example_runs(
    page: str,
    number: int,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page's setup and its python blocks up to this one run without an error."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "argv", [page])
    namespace: dict[str, Any] = {"__name__": "__main__"}
    if page in SETUP:
        exec(compile(SETUP[page], f"<SETUP[{page!r}] in {__file__}>", "exec"), namespace)
    with _logging_put_back():  # a page may configure logging, as a program would
        for block in PYTHON[page][: number + 1]:
            before = dict(namespace)
            block.run(namespace)
            _call_new_tests(namespace, before, tmp_path_factory)


@contextlib.contextmanager
def _logging_put_back() -> Iterator[None]:
    loggers = [logging.root, logging.getLogger("resumable")]
    levels = [logger.level for logger in loggers]
    handlers = list(logging.root.handlers)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)  # setLevel, not an attribute: it clears level caches
        for handler in set(logging.root.handlers) - set(handlers):
            logging.root.removeHandler(handler)


def _call_new_tests(
    namespace: dict[str, Any], before: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    for name, value in list(namespace.items()):
        if not name.startswith("test_") or not callable(value) or before.get(name) is value:
            continue
        parameters = inspect.signature(value).parameters
        unknown = set(parameters) - {"tmp_path"}
        assert not unknown, f"{name}: the docs test supplies only tmp_path, not {unknown}"
        value(**({"tmp_path": tmp_path_factory.mktemp(name)} if parameters else {}))


def test_examples_are_found() -> None:
    """The collection sees the pages' examples (a broken parser would pass vacuously)."""
    assert PYTHON["README.md"], "README.md has no python block"
    assert len(PAGES) > 5, f"only {len(PAGES)} pages found under {ROOT}"
    for page in ("docs/index.md", "docs/guarantees.md", "docs/testing.md"):
        assert PYTHON.get(page), f"{page} has no python block"


def test_every_setup_serves_a_page_with_examples() -> None:
    """A setup left behind after its page lost its examples (or was renamed) is an error."""
    stale = sorted(page for page in SETUP if not PYTHON.get(page))
    assert not stale, f"SETUP names pages without python blocks: {stale}"


@pytest.mark.parametrize("page", sorted(BLOCKS))
def test_fences_name_their_language(page: str) -> None:
    """Every fence names a known language, and only python blocks look like Python."""
    for block in BLOCKS[page]:
        where = f"{page}:{block.line}"
        assert block.language in LANGUAGES, (
            f"{where}: fence labelled {block.language!r}; use one of {sorted(LANGUAGES)}"
        )
        if block.language != "python":
            python_lines = [
                line for line in block.code.splitlines() if _LOOKS_LIKE_PYTHON.match(line)
            ]
            assert not python_lines, (
                f"{where}: a {block.language} block with Python in it ({python_lines[0]!r}); "
                "label it python, so that the test suite runs it"
            )


def test_fence_parser() -> None:
    """The parser finds indented fences, their languages and their dedented code."""
    text = "text\n\n- item\n\n  ```python\n  x = 1\n  ```\n\n```\nplain\n```\n"
    assert [(block.line, block.language, block.code) for block in parse_fences(text, "t")] == [
        (5, "python", "x = 1"),
        (9, "", "plain"),
    ]
    with pytest.raises(ValueError, match="line 2 is never closed"):
        parse_fences("a\n```python\nx = 1\n", "t")
