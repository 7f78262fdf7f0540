"""Windows: the policy compiler, the one-time elevated setup, the grants, the broker and the
runner.

Every Windows-only call sits behind small interfaces (``setup.WinApi``, ``runner.RunnerApi``,
``broker.BrokerApi``) whose real implementations use ctypes (``win32``,
``runner.Win32RunnerApi``, ``runner.Win32BrokerApi``); the compiler, the setup journal, the
facts gatherer and the runner's and broker's orchestration run and are tested on Linux.
Nothing in this package has run on Windows yet (see docs/platforms.md).
"""
