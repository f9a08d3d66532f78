"""Mutation testing of resumable's core with cosmic-ray; `nox -s mutants` runs this.

Why cosmic-ray and not mutmut 3: cosmic-ray writes each mutant into the source file and
runs a shell command, so every process the tests start (tests/jobs/*.py, `python -m
resumable`) imports the mutant as the test process does. mutmut 3 puts its mutants in a copy
(mutants/) that only the test process imports, switched by trampolines, and chooses the
tests of a mutant by the functions each test called in its own process: code that runs only
in a child (locks held by another process, signals, kill -9) would count as untested.

How: the tree is copied once per worker (the working tree is never mutated, and a run that
is killed leaves nothing behind); each module gets a cosmic-ray session of its own whose test
command runs that module's tests (TESTS below) with pytest -x. PYTHONPATH names the copy, so
the test process and its children import the copy's mutated resumable. Mutants inside type
annotations (never evaluated: every module has `from __future__ import annotations`) and
most of the eleven replacements of each binary or comparison operator are skipped: one or two
per site say what the others would (OPERATORS).

    python tools/mutants.py [MODULE ...] [--jobs N] [--out DIR]

MODULE is a core module's dotted name below resumable (_store.flock, policies, ...); default:
all.
Writes DIR/report.md (the score and every surviving mutant with its diff) and prints it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each core module and the tests that exercise it, fastest first: pytest -x stops at the
# first failure, so a killed mutant usually costs only the first file.
# The modules that were one controller (`_resumable.py`) share its selection.
_CONTROLLER = [
    "test_loop",
    "test_input_check",
    "test_uncovered_branches",
    "test_state_file",
    "test_batch",
    "test_keyed",
    "test_signal_promises",
    "test_malformed_progress",
    "test_fork",
    "test_failures",
    "test_logging",
]

_OBJECT_STORE = ["test_job_by_url", "test_object_store"]

TESTS: dict[str, list[str]] = {
    "_store.durable": [
        "test_durability",
        "test_uncovered_branches",
        "test_state_file",
        "test_faults_strace",
    ],
    "_store.file": [
        "test_uncovered_branches",
        "test_state_file",
        "test_durability",
        "test_cli",
        "test_hostile_files",
        "test_faults_strace_branches",
        "test_progress_log",
    ],
    "_store.document": [
        "test_malformed_progress",
        "test_uncovered_branches",
        "test_state_file",
        "test_hostile_files",
        "test_sinks_footer",
    ],
    "_store.flock": [
        "test_uncovered_branches",
        "test_fork",
        "test_loop",
        "test_lock_processes",
        "test_cli",
    ],
    "_signals": [
        "test_loop",
        "test_asyncio_review",
        "test_amap",
        "test_uncovered_branches",
        "test_signal_promises",
        "test_asyncio_signals",
        "test_fork",
        "test_signals",
    ],
    "_store.journal_codec": [
        "test_journal",
        "test_journal_files",
        "test_malformed_progress",
        "test_journal_fuzz",
        "test_hostile_files",
    ],
    "_keys": ["test_journal", "test_keyed", "test_key_display"],
    "_store.journal_files": [
        "test_journal_files",
        "test_uncovered_branches",
        "test_keyed",
        "test_hostile_files",
        "test_journal",
    ],
    "_store.journal": [
        "test_journal_files",
        "test_keyed",
        "test_durability",
        "test_failures",
        "test_hostile_files",
        "test_faults_strace_branches",
    ],
    "_progress.keys": [
        "test_journal_files",
        "test_uncovered_branches",
        "test_malformed_progress",
        "test_batch",
        "test_keyed",
        "test_hostile_files",
        "test_journal",
    ],
    "_feed": ["test_loop", "test_batch", "test_feed", "test_durability"],
    "_progress.position": [
        "test_input_check",
        "test_loop",
        "test_malformed_progress",
        "test_save_schedule",
        "test_what_a_user_sees",
        "test_failures",
        "test_progress_log",
    ],
    "_resumable": _CONTROLLER,
    "_session": [*_CONTROLLER, "test_display", "test_sinks", "test_sinks_footer", "test_signals"],
    "_checkpoint": [
        "test_save_schedule",
        "test_save_log",
        *_CONTROLLER,
        "test_sinks",
        "test_asyncio_signals",
    ],
    "_drivers.chunked": _CONTROLLER,
    "_drivers.keyed": [*_CONTROLLER, "test_signals"],
    "_drivers.loop": [*_CONTROLLER, "test_display", "test_amap", "test_signals"],
    "_drivers.pool": ["test_amap", "test_map", "test_map_process_pool", "test_map_kill9"],
    "_progress.watermark": [
        "test_malformed_progress",
        "test_amap",
        "test_asyncio_review",
        "test_map",
        "test_map_kill9",
    ],
    "policies": ["test_policies", "test_save_schedule"],
    "_drivers.aio": ["test_asyncio_review", "test_amap", "test_asyncio_signals"],
    "_drivers.batches": ["test_batch", "test_uncovered_branches", "test_keyed", "test_failures"],
    "_drivers.read_ahead": ["test_batch", "test_map"],
    "_sinks": [
        "test_sinks",
        "test_sinks_replaced",
        "test_sinks_faults_strace",
        "test_sinks_review",
        "test_sinks_footer",
    ],
    # The object-store modules: their tests start a real S3-compatible server (moto) on
    # localhost, and run each job on the memory://, file:// and s3:// backends.
    "_store.lease": _OBJECT_STORE,
    "_store.object": _OBJECT_STORE,
    "_store.object_backend": [*_OBJECT_STORE, "test_shards", "test_status_folder"],
    "_store.object_journal": _OBJECT_STORE,
    "_store.url": [*_OBJECT_STORE, "test_sinks", "test_status_folder"],
    "_failures": [
        "test_progress_log_riding",
        "test_failures",
        "test_malformed_progress",
        "test_keyed",
    ],
    "_store.progress_log": [
        "test_progress_log",
        "test_progress_log_riding",
        "test_progress_log_review",
        "test_failures",
        "test_progress_log_strace",
    ],
}

# The operators whose mutants run. A binary operator keeps its nearest confusion (+ and -,
# * and /, | and &), a comparison its negation and its off-by-one; the other replacements
# of the same site rarely fail where these pass.
OPERATORS = {
    "core/ReplaceBinaryOperator_Add_Sub",
    "core/ReplaceBinaryOperator_Sub_Add",
    "core/ReplaceBinaryOperator_Mul_Div",
    "core/ReplaceBinaryOperator_Div_Mul",
    "core/ReplaceBinaryOperator_FloorDiv_Mul",
    "core/ReplaceBinaryOperator_Mod_FloorDiv",
    "core/ReplaceBinaryOperator_Pow_Mul",
    "core/ReplaceBinaryOperator_BitOr_BitAnd",
    "core/ReplaceBinaryOperator_BitAnd_BitOr",
    "core/ReplaceBinaryOperator_BitXor_BitOr",
    "core/ReplaceBinaryOperator_LShift_RShift",
    "core/ReplaceBinaryOperator_RShift_LShift",
    "core/ReplaceComparisonOperator_Eq_NotEq",
    "core/ReplaceComparisonOperator_NotEq_Eq",
    "core/ReplaceComparisonOperator_Lt_LtE",
    "core/ReplaceComparisonOperator_Lt_GtE",
    "core/ReplaceComparisonOperator_LtE_Lt",
    "core/ReplaceComparisonOperator_LtE_Gt",
    "core/ReplaceComparisonOperator_Gt_GtE",
    "core/ReplaceComparisonOperator_Gt_LtE",
    "core/ReplaceComparisonOperator_GtE_Gt",
    "core/ReplaceComparisonOperator_GtE_Lt",
    "core/ReplaceComparisonOperator_Is_IsNot",
    "core/ReplaceComparisonOperator_IsNot_Is",
    "core/ReplaceUnaryOperator_Delete_Not",
    "core/ReplaceUnaryOperator_USub_UAdd",
    "core/AddNot",
    "core/ReplaceAndWithOr",
    "core/ReplaceOrWithAnd",
    "core/ReplaceTrueWithFalse",
    "core/ReplaceFalseWithTrue",
    "core/ReplaceBreakWithContinue",
    "core/ReplaceContinueWithBreak",
    "core/ZeroIterationForLoop",
    "core/NumberReplacer",
    "core/ExceptionReplacer",
}

COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".nox", ".venv", "__pycache__", "site", ".hypothesis", ".coverage*", "mutants-run"
)


def unrun_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions, (line, column), of code whose mutants cannot fail a test:
    type annotations and TYPE_CHECKING blocks (never evaluated), and the statements that
    coverage leaves out (`# pragma: no cover`: code for Windows)."""
    lines = source.splitlines()
    nodes: list[ast.expr | ast.stmt] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.arg) and node.annotation is not None:
            nodes.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            nodes.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            nodes.append(node.annotation)
        elif isinstance(node, ast.stmt) and never_run(node, lines[node.lineno - 1]):
            nodes.append(node)
    return [
        ((n.lineno, n.col_offset), (n.end_lineno or n.lineno, n.end_col_offset or 0)) for n in nodes
    ]


def never_run(statement: ast.stmt, first_line: str) -> bool:
    if isinstance(statement, ast.If) and ast.unparse(statement.test) == "TYPE_CHECKING":
        return True
    return "pragma: no cover" in first_line


def inside(pos: tuple[int, int], spans: Iterable[tuple[tuple[int, int], tuple[int, int]]]) -> bool:
    return any(start <= pos < end for start, end in spans)


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def source(module: str) -> str:
    """The file of `module`, a dotted name below resumable: ``resumable/_store/flock.py``."""
    return "resumable/" + module.replace(".", "/") + ".py"


def test_command(module: str) -> str:
    files = " ".join(f"tests/{name}.py" for name in TESTS[module])
    return f"python -m pytest -x -q -p no:cacheprovider -m 'not slow' {files}"


def prepare(module: str, tree: Path, env: dict[str, str], cap: int) -> tuple[Path, int, float]:
    """Write the module's config, list its mutants, skip the filtered ones; time a run."""
    imported = run(["python", "-c", "import resumable; print(resumable.__file__)"], tree, env)
    if not Path(imported.strip()).is_relative_to(tree):
        sys.exit(f"the tests would import {imported.strip()}, not the mutants in {tree}")
    started = time.monotonic()
    run(["sh", "-c", test_command(module)], tree, env)  # the baseline must pass
    baseline = time.monotonic() - started
    config = tree / f"cr-{module}.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{source(module)}"\n'
        f"timeout = {max(60.0, 4 * baseline):.0f}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(test_command(module))}\n"
        '[cosmic-ray.distributor]\nname = "local"\n'
    )
    db = tree / f"cr-{module}.sqlite"
    db.unlink(missing_ok=True)
    run(["cosmic-ray", "init", config.name, db.name], tree, env)
    kept = skip_filtered(db, (tree / source(module)).read_text(), cap)
    return db, kept, baseline


def skip_filtered(db: Path, source: str, cap: int) -> int:
    """Mark as skipped the mutants of other operators and those in code never run here;
    of the rest keep `cap` (0: all), spread evenly over the module's lines."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = unrun_spans(source)
    with use_db(str(db), WorkDB.Mode.open) as work_db:
        candidates = []
        for item in list(work_db.pending_work_items):
            (mutation,) = item.mutations
            why = None
            if mutation.operator_name not in OPERATORS:
                why = "operator not in tools/mutants.py OPERATORS"
            elif inside(tuple(mutation.start_pos), spans):
                why = "in an annotation or a block coverage leaves out: never run here"
            if why:
                skipped = WorkResult(output=why, worker_outcome=WorkerOutcome.SKIPPED)
                work_db.set_result(item.job_id, skipped)
            else:
                key = (tuple(mutation.start_pos), mutation.operator_name, mutation.occurrence)
                candidates.append((key, item.job_id))
        candidates.sort()
        if cap and len(candidates) > cap:
            chosen = {round(n * len(candidates) / cap) for n in range(cap)}
            for n, (_, job_id) in enumerate(candidates):
                if n not in chosen:
                    skipped = WorkResult(
                        output=f"not among the {cap} of this run (--per-module)",
                        worker_outcome=WorkerOutcome.SKIPPED,
                    )
                    work_db.set_result(job_id, skipped)
    return min(cap, len(candidates)) if cap else len(candidates)


def results(db: Path) -> list[dict[str, object]]:
    """The mutants that ran: line, operator, function, outcome and diff of each."""
    query = (
        "SELECT m.start_pos_row, m.operator_name, m.definition_name, r.worker_outcome,"
        " r.test_outcome, r.diff FROM work_results r JOIN mutation_specs m USING (job_id)"
        " WHERE r.worker_outcome != 'SKIPPED' ORDER BY m.start_pos_row"
    )
    names = ("line", "operator", "function", "worker", "test", "diff")
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return [dict(zip(names, row, strict=True)) for row in connection.execute(query)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(TESTS), choices=list(TESTS))
    parser.add_argument("--jobs", type=int, default=2, help="copies run at once (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "mutants-run")
    parser.add_argument(
        "--per-module",
        type=int,
        # 32 modules: some 320 mutants, about 25 minutes here with two copies at once
        # (issue 20 asks for under 30); 15 a module made some 470, near 40 minutes.
        default=10,
        help="mutants run per module, spread over its lines (default 10; 0: all)",
    )
    args = parser.parse_args(argv)
    modules: list[str] = args.modules or list(TESTS)
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    trees = []
    for n in range(args.jobs):
        tree = out / f"tree{n}"
        shutil.copytree(ROOT, tree, ignore=COPY_IGNORE)
        trees.append(tree)

    def env_for(tree: Path) -> dict[str, str]:
        # No bytecode: a mutant written within the same second as the last one, of the
        # same size, would otherwise be run from the last one's cached .pyc.
        bin_dir = str(Path(sys.executable).parent)  # python and cosmic-ray of this venv
        path = bin_dir + os.pathsep + os.environ.get("PATH", "")
        return {**os.environ, "PATH": path, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}

    started = time.monotonic()
    prepared: dict[str, tuple[Path, int, float]] = {}
    for module in modules:
        prepared[module] = prepare(module, trees[0], env_for(trees[0]), args.per_module)
        print(f"{module}: {prepared[module][1]} mutants, tests {prepared[module][2]:.1f} s")
    # Longest expected first, each to the least loaded copy.
    load = [0.0] * len(trees)
    plan: list[list[str]] = [[] for _ in trees]
    for module in sorted(modules, key=lambda m: -prepared[m][1] * prepared[m][2]):
        n = load.index(min(load))
        load[n] += prepared[module][1] * prepared[module][2]
        plan[n].append(module)

    def work(n: int) -> None:
        for module in plan[n]:
            db = prepared[module][0]
            if n:
                shutil.copy(trees[0] / db.name, trees[n] / db.name)
                shutil.copy(trees[0] / f"cr-{module}.toml", trees[n] / f"cr-{module}.toml")
            run(["cosmic-ray", "exec", f"cr-{module}.toml", db.name], trees[n], env_for(trees[n]))
            print(f"{module}: done at {time.monotonic() - started:.0f} s", flush=True)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(trees))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    found = {m: results(trees[n] / f"cr-{m}.sqlite") for n, ms in enumerate(plan) for m in ms}
    report = summarise(found, time.monotonic() - started)
    (out / "report.md").write_text(report)
    print(report)
    return 0


def summarise(found: dict[str, list[dict[str, object]]], seconds: float) -> str:
    """The score per module and in all (a mutant that timed out counts as killed), then
    each survivor as `module:line operator (function)` and the lines it changed."""
    table = ["| module | mutants | killed | survived | score |", "| --- | --- | --- | --- | --- |"]
    survivors: list[tuple[str, dict[str, object]]] = []
    total = 0
    for module, rows in found.items():
        lived = [row for row in rows if row["test"] == "SURVIVED"]
        survivors += [(module, row) for row in lived]
        total += len(rows)
        table.append(
            f"| {module} | {len(rows)} | {len(rows) - len(lived)} | {len(lived)} "
            f"| {score(len(rows) - len(lived), len(rows))} |"
        )
    killed = total - len(survivors)
    table.append(f"| all | {total} | {killed} | {len(survivors)} | {score(killed, total)} |")
    lines = [*table, "", f"{seconds / 60:.1f} minutes.", "", "## Survivors", ""]
    for module, row in survivors:
        changed = [
            line
            for line in str(row["diff"]).splitlines()
            if line[:1] in "+-" and line[:3] not in ("+++", "---")
        ]
        lines += [f"- {source(module)}:{row['line']} {row['operator']} ({row['function']})"]
        lines += [f"      {line}" for line in changed]
    return "\n".join(lines) + "\n"


def score(killed: int, total: int) -> str:
    return f"{100 * killed / total:.1f} %" if total else "-"


if __name__ == "__main__":
    sys.exit(main())
