"""The package version, in one place (read by setuptools and by exports)."""

__version__ = "0.8.0"
