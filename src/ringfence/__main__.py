"""``python -m ringfence`` is the same as the ``ringfence`` command.

``python -m`` puts the working directory first on ``sys.path``, and it is usually the
workspace, which the sandbox writes: a module a command leaves there (``termios.py``) would
be imported by this process, outside the sandbox, on first use. It is taken off the path
here, and noted (importplaces.note_dropped): ``ringfence`` itself was found there before this
ran, so a ``ringfence/`` a command leaves in the workspace would run instead next time; runs
whose sandbox can write it warn. Use the ``ringfence`` command, or ``python -P -m ringfence``
(SECURITY.md).
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
        from ringfence import importplaces  # told of when the sandbox can write it

        importplaces.note_dropped(_cwd)

from ringfence.entry import main  # after the path is made safe

sys.exit(main())
