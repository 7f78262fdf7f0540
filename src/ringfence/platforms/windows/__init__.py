"""Windows: the one-time elevated setup and (later) the plan compiler and command runner.

Every Windows-only call sits behind :class:`ringfence.platforms.windows.setup.WinApi`, so the
setup state machine runs and is tested on Linux against a simulated machine. Nothing in this
package has run on Windows yet (see docs/platforms.md).
"""
