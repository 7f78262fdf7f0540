"""Windows: the policy compiler, the one-time elevated setup, the grants and the runner.

Every Windows-only call sits behind small interfaces (``setup.WinApi``, ``runner.RunnerApi``)
whose real implementations use ctypes (``win32``, ``runner.Win32RunnerApi``); the compiler,
the setup journal and the runner's orchestration run and are tested on Linux. Nothing in this
package has run on Windows yet (see docs/platforms.md).
"""
