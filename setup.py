"""The optional C extension: region-of-interest JPEG decoding against the system's libjpeg-turbo (see
src/visiondb/imaging/_jpegregion.c). Everything else is declared in pyproject.toml; without a compiler or
libjpeg-turbo's headers the build skips the extension and decoding falls back to full-image decodes."""
from setuptools import Extension, setup

setup(ext_modules=[
    Extension("visiondb.imaging._jpegregion", ["src/visiondb/imaging/_jpegregion.c"], libraries=["jpeg"],
              extra_compile_args=["-O2"], optional=True),
])
