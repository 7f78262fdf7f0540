"""The native launcher (issue 18): an optional C extension.

Built by ``pip install .`` with the system's C compiler on Linux. ``optional=True``: where it
cannot be built (no compiler, no Python headers) the install still succeeds and every run
takes the pure-Python path, which is tested on its own (docs/native.md).
"""

import glob
import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(
        Extension(
            "ringfence.platforms.linux._launcher",
            sorted(glob.glob("src/ringfence/platforms/linux/launcher/*.c")),
            depends=glob.glob("src/ringfence/platforms/linux/launcher/*.h"),
            optional=True,
            extra_compile_args=[
                "-O2",
                "-Wall",
                "-Wextra",
                "-Wno-missing-field-initializers",
                "-fvisibility=hidden",
            ],
        )
    )

setup(ext_modules=ext_modules)
