"""``python -m easyjobs``: the same as the ``easyjobs`` command."""

import sys

from .cli import main

sys.exit(main())
