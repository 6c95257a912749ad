"""``python -m tune_app``."""

from __future__ import annotations

import sys

from tune_app.cli import main

if __name__ == "__main__":
    sys.exit(main())
