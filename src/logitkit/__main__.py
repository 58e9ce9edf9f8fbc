"""``python -m logitkit``: the same as the ``logitkit`` command."""

import sys

from logitkit.cli import main

sys.exit(main())
