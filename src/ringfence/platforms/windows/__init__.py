"""Windows: the policy compiler, the one-time elevated setup, the grants, the run and the
broker.

Every Windows-only call sits behind small interfaces (``setup.WinApi``, ``run.RunnerApi``,
``broker.BrokerApi``) whose real implementations use ctypes (``win32.Win32Api``,
``run_native.Win32RunnerApi``, ``broker_native.Win32BrokerApi``); the compiler, the setup
journal, the facts gatherer and the run's and broker's orchestration run and are tested on
Linux. Nothing in this package has run on Windows yet (see docs/platforms.md).
"""
