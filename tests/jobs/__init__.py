"""Test helpers: the child-process harness, hand-written state files, and the job scripts.

The job scripts (``*_job.py``, ``open_probe.py``) run as scripts by their path, in a child
process; the tests import `jobs.harness` and `jobs.documents` (pythonpath in pyproject.toml).
"""
