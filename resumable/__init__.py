"""Make any long for-loop survive ctrl+c, crashes and shutdowns, and carry on where it stopped.

::

    from resumable import Resumable, NPolicy, TimePolicy

    with Resumable("job.state", policy=NPolicy(100) | TimePolicy(60)) as r:
        for url in r.iterate(urls):
            save(fetch(url))
"""

import logging

from resumable._checkpoint import SaveRecord
from resumable._display import ProgressDisplay
from resumable._errors import (
    CalledTooOftenError,
    InputChangedError,
    Interrupted,
    ResumableError,
    ResumableWarning,
    StateFileError,
    StateLockedError,
    StateNotSerializableError,
    StateWriteError,
    UsageError,
)
from resumable._failures import FailedItem
from resumable._inspect import StateSnapshot, inspect
from resumable._reset import reset
from resumable._resumable import Resumable
from resumable._shards import Shard, ShardFailedError, shards
from resumable._sinks import CsvSink, Sink
from resumable._text import PrintableArguments
from resumable._version import __version__
from resumable.policies import (
    AllOf,
    ExactChecks,
    NPolicy,
    Policy,
    PolicySwitch,
    QuantityPolicy,
    SinceLastSave,
    TimePolicy,
)

# File names and keys in the library's log records are escaped, as the CLI shows them.
logging.getLogger("resumable").addFilter(PrintableArguments())

__all__ = [
    "AllOf",
    "CalledTooOftenError",
    "CsvSink",
    "ExactChecks",
    "FailedItem",
    "InputChangedError",
    "Interrupted",
    "NPolicy",
    "Policy",
    "PolicySwitch",
    "ProgressDisplay",
    "QuantityPolicy",
    "Resumable",
    "ResumableError",
    "ResumableWarning",
    "SaveRecord",
    "Shard",
    "ShardFailedError",
    "SinceLastSave",
    "Sink",
    "StateFileError",
    "StateLockedError",
    "StateNotSerializableError",
    "StateSnapshot",
    "StateWriteError",
    "TimePolicy",
    "UsageError",
    "__version__",
    "inspect",
    "reset",
    "shards",
]


def _show_as_public() -> None:
    """Name the public classes of private modules as ``resumable.X`` in tracebacks and
    reprs (``resumable.InputChangedError``, not ``resumable._errors.InputChangedError``);
    pickle finds them there too."""
    for name in __all__:
        value = globals()[name]
        if isinstance(value, type) and value.__module__.startswith("resumable._"):
            value.__module__ = __name__


_show_as_public()
