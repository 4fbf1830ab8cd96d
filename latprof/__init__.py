"""latprof: measure how fast CNN blocks and networks really run, next to FLOPs and memory access cost."""

from latprof.errors import LatprofError

__version__ = "0.1.0"
__all__ = ["LatprofError", "__version__"]
