"""``python -m fanout.testing.streamserver``: serve scripted shards (benchmarks)."""

from __future__ import annotations

import sys

from fanout.testing.streamserver import main

if __name__ == "__main__":
    sys.exit(main())
