"""The paper's Figure 2 time breakdown (ShuffleNet V2, Ma et al. 2018), copied here so the report needs no files.

Shares in percent of run time per operator category; ``None`` where the network has no such operator.
"""

from __future__ import annotations

CATEGORIES = ("Conv", "Elemwise", "Data", "Shuffle", "Other")

FIGURE2_PERCENT: dict[str, tuple[float | None, ...]] = {
    "paper: ShuffleNet v1, GPU (1080Ti)": (50, 15, 20, 5, 10),
    "paper: MobileNet v2, GPU (1080Ti)": (54, 23, 22, None, 1),
    "paper: ShuffleNet v1, ARM (Snapdragon 810)": (87, 4, 1, 0, 8),
    "paper: MobileNet v2, ARM (Snapdragon 810)": (89, 10.5, 0.3, None, 0.2),
}

SOURCE = "Ma, Zhang, Zheng, Sun. ShuffleNet V2, ECCV 2018 (arXiv:1807.11164), Figure 2."
