"""``python -m fanout.testing.dynamodb_local``."""

import sys

from fanout.testing.dynamodb_local.cli import main

sys.exit(main())
