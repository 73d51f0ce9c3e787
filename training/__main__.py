"""`python -m training`: train one model into a run directory (see design.md for the contract)."""

from __future__ import annotations

import sys

from .train import main

if __name__ == "__main__":
    sys.exit(main())
