"""ringfence's version: its own module, so that what needs only the version (the plan cache's
key, `ringfence --version`) does not import the package's public API."""

__version__ = "0.1.0"
