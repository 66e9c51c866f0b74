"""``python -m bench [--quick] [--only NAME] ...``: see :func:`bench.runner.main`."""

from __future__ import annotations

import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())
