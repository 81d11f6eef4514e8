"""``python -m dglm.bench [options]``: the same as ``dglm bench``."""

import sys

from dglm.bench.run import main

sys.exit(main())
