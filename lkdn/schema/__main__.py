"""``python -m lkdn.schema --write`` regenerates docs/options.md's key tables and docs/options.schema.json."""

import sys

from lkdn.schema.docs import main

sys.exit(main())
