"""``python -m ringfence`` is the same as the ``ringfence`` command."""

import sys

from ringfence.entry import main

sys.exit(main())
