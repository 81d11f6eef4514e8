"""``python -m dglm``: the same as the ``dglm`` console script (see :mod:`dglm.cli`)."""

import sys

from dglm.cli import main

sys.exit(main())
