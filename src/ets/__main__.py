"""``python -m ets``: the ``ets`` command."""

import sys

from ets.cli import main

sys.exit(main())
