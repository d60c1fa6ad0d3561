"""``python -m fanout``: the command line (see ``fanout.cli``)."""

from __future__ import annotations

import sys

from fanout.cli import main

if __name__ == "__main__":
    sys.exit(main())
