"""macOS: the policy compiled to a Seatbelt profile, run by ``/usr/bin/sandbox-exec``.

``plan`` (the pure compiler) and ``sbpl`` (quoting, the structural check) are tested on Linux;
``runner`` and ``monitor`` run here against stand-ins for ``sandbox-exec`` and ``log``.
Nothing here has been run on a Mac (see docs/platforms.md).
"""
