"""Nox sessions for resumable-loop: `python3 -m nox` runs tests, lint, typecheck and docs."""

from __future__ import annotations

from pathlib import Path

import nox

# 2025.10.14: first release with nox.options.download_python
# (nox.project.dependency_groups needs only 2025.02.09).
nox.needs_version = ">=2025.10.14"

nox.options.sessions = ["tests", "ray", "lint", "typecheck", "docs"]
nox.options.default_venv_backend = "venv"
# A missing interpreter must fail the run, never be skipped or fetched from the network.
nox.options.error_on_missing_interpreters = True
nox.options.download_python = "never"

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")


def group(name: str) -> tuple[str, ...]:
    """Requirements of a PEP 735 dependency group in pyproject.toml."""
    return nox.project.dependency_groups(PYPROJECT, name)


@nox.session(python=["3.10", "3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    """Run the test suite, minus slow tests, against the installed package, in a process
    per core (pytest-xdist; `-n 0` in posargs runs it in one)."""
    session.install(".", *group("test"))
    # tests/test_ray.py runs in the ray session, which installs Ray.
    session.run(
        "pytest", "-n", "auto", "-m", "not slow", "--ignore=tests/test_ray.py", *session.posargs
    )


@nox.session(python="3.11", default=False)
def torture(session: nox.Session) -> None:
    """Run only the slow fault-injection tests."""
    session.install(".", *group("test"))
    # pytest exits 5 when no test is collected (a -k that matches no slow test): fine here.
    session.run(
        "pytest", "-m", "slow", "--ignore=tests/test_ray.py", *session.posargs, success_codes=[0, 5]
    )


@nox.session(python="3.11")
def ray(session: nox.Session) -> None:
    """Run the Ray tests (tests/test_ray.py) with the ray extra: Ray is some 80 MB, so it is
    installed in this session only, on one Python."""
    session.install(".[ray]", *group("test"))
    session.run("pytest", "tests/test_ray.py", *session.posargs)


@nox.session(python="3.11", default=False)
def coverage(session: nox.Session) -> None:
    """Branch coverage of resumable/ by the non-slow tests and the processes they start."""
    session.install(".", *group("coverage"))
    # Absolute: children run in other folders, and each writes .coverage.<host>.<pid>.<n>.
    session.env["COVERAGE_FILE"] = str(ROOT / ".coverage")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", "-m", "not slow", *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report", "--include=*/resumable/*")


@nox.session(python="3.11", default=False)
def mutants(session: nox.Session) -> None:
    """Mutation testing of the core modules with cosmic-ray (posargs: modules, --jobs N)."""
    # The package is installed for its dependencies and console script; the tests and their
    # children import the mutated copy that tools/mutants.py puts first on PYTHONPATH.
    session.install(".", *group("mutants"))
    session.run("python", "tools/mutants.py", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """Check lint and formatting with ruff (posargs go to `ruff check`, e.g. --fix)."""
    session.install(*group("lint"))
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """Type-check the package and the tests with mypy --strict."""
    session.install(".", *group("typecheck"))
    session.run("mypy", *session.posargs)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with mkdocs --strict: any warning fails."""
    session.install(".", *group("docs"))
    # Material prints a notice of its end of life on every build; docs/about.md records it.
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    # Figures drawn from real runs of the installed library (docs/figures/).
    session.run("python", "tools/figure_from_n_to_t.py")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"), *session.posargs)
    broken = links_not_to_files(ROOT / "site")
    if broken:
        session.error("links that do not open a file from disk:\n" + "\n".join(broken))


def links_not_to_files(site: Path) -> list[str]:
    """Relative links in the built site that do not name a file: opened from disk
    (file://), a link to a folder shows its listing, and one to nothing fails."""
    from html.parser import HTMLParser
    from urllib.parse import unquote, urlsplit

    class Links(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            for name, value in attrs:
                if name in ("href", "src") and value:
                    self.found.append(value)

    broken = []
    for page in sorted(site.rglob("*.html")):
        if page.name == "404.html":  # a web server's page, with links from the server's root
            continue
        parser = Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for link in parser.found:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or not parts.path:  # elsewhere, or in the page
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {link}")
    return broken


@nox.session(python="3.11", default=False)
def bench(session: nox.Session) -> None:
    """Run every benchmarks/bench_*.py script in sorted order."""
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    if not scripts:
        session.log("No benchmarks/bench_*.py scripts yet: nothing to run.")
        return
    session.install(".", *group("bench"))
    for script in scripts:
        session.run("python", str(script.relative_to(ROOT)), *session.posargs)
