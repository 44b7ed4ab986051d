"""``python -m pass_wds.cli``: the ``pass-wds`` command."""

import sys

from pass_wds.cli import main

sys.exit(main())
