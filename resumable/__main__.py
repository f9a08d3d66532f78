"""``python -m resumable``: the same command line as the ``resumable`` script."""

import sys

from resumable._cli import main

if __name__ == "__main__":
    sys.exit(main())
