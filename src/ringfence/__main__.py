"""``python -m ringfence`` is the same as the ``ringfence`` command.

``python -m`` puts the working directory first on ``sys.path``, and it is usually the
workspace, which the sandbox writes: a module a command leaves there (``termios.py``) would
be imported by this process, outside the sandbox, on first use. It is taken off the path
here. (``ringfence`` itself was found before this ran: from inside a checkout, use the
``ringfence`` command or ``python -P -m ringfence``; SECURITY.md.)
"""

import os
import sys

if sys.path and not sys.flags.safe_path:
    try:
        _cwd = os.getcwd()
    except OSError:
        _cwd = ""
    if sys.path[0] in ("", _cwd):
        del sys.path[0]

from ringfence.entry import main  # after the path is made safe

sys.exit(main())
