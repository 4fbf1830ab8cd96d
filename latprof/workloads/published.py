"""The published complexity of the zoo networks (``published.toml``): one data file, read by the tests and matched
by docs/zoo.md, so a figure copied from a paper is written once."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class Published:
    """A network's published mult-adds and params (at ``resolution``, 224 unless the paper counts it at its own; 1000
    classes), and where they are printed."""

    name: str
    mult_adds: float
    source: str
    params: float | None = None  # absent where none is published
    params_reachable: float | None = None  # the figure checked instead of an unreachable published one
    params_why: str = ""
    mult_adds_with_dsm: bool = False  # MicroNet: Dynamic Shift-Max's element-wise work is in the figure
    resolution: int = 224  # the input size the figures are printed for (EfficientNet B1-B3, V2-S: their own)
    mult_adds_reachable: float | None = None  # the figure checked instead of an unreachable published one
    mult_adds_why: str = ""

    @property
    def mult_adds_checked(self) -> float:
        """The mult-adds figure a faithful build must reach (within 3%)."""
        return self.mult_adds_reachable if self.mult_adds_reachable is not None else self.mult_adds

    @property
    def params_checked(self) -> float | None:
        """The params figure a faithful build must reach (within 3%)."""
        return self.params_reachable if self.params_reachable is not None else self.params

    def text(self) -> str:
        """``569 M, 4.2 M`` as docs/zoo.md's "published" column prints it."""
        madds = f"{self.mult_adds / 1e9:g} G" if self.mult_adds >= 1e9 else f"{self.mult_adds / 1e6:g} M"
        return f"{madds}, {self.params / 1e6:g} M" if self.params is not None else f"{madds}, —"


@cache
def published_figures() -> dict[str, Published]:
    """Every network with published figures, by registered name."""
    data = tomllib.loads(resources.files("latprof.workloads").joinpath("published.toml").read_text())
    return {name: Published(name=name, **fields) for name, fields in data.items()}
