"""`python -m cli` is `vpp`."""

import sys

from cli.main import main

sys.exit(main())
