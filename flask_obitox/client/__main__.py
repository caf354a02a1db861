"""``python -m flask_obitox.client upload ...``: the ``obitox`` command without its script."""

import sys

from .cli import main

sys.exit(main())
