"""macOS: the policy compiled to a Seatbelt profile for ``/usr/bin/sandbox-exec``.

Only the pure compiler (``plan``) and the profile checker (``sbpl``) exist so far; they run
and are tested on Linux. Nothing here has been run on a Mac (see docs/platforms.md).
"""
