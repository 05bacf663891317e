"""evosuite: evolutionary model merging as a plugin-based tool."""

from evosuite.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
