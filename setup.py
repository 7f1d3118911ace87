"""The one compiled part of the project: media_node._audiokernel, the fast path of media_node/audio.py.

Everything else about the package is in pyproject.toml. The extension is optional: where no C compiler (or no
Python headers) is found, `pip install` still succeeds and media_node.audio runs its numpy fallback, saying so in
one INFO log line. On Debian/Ubuntu: `apt-get install build-essential python3-dev` (make test does it as root).
"""

import os

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "media_node._audiokernel",
            ["media_node/_audiokernel.c"],
            extra_compile_args=["-O3"] if os.name == "posix" else [],  # some distros build Python with -O2
            optional=True,
        )
    ]
)
