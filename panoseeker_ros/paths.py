"""Where the package's shipped files live: the source tree (pip -e) or the ament share directory."""
from __future__ import annotations

from pathlib import Path

PACKAGE = "panoseeker_ros"


def share_dir() -> Path:
    """The directory holding config/, launch/ and sim/."""
    source = Path(__file__).resolve().parents[1]
    if (source / "config").is_dir():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - not installed through ament: fall back to the source layout
        return source


def default_params() -> Path:
    return share_dir() / "config" / "seek.yaml"


def sample_dataset() -> Path:
    """The annotated bedroom sample (a real panorama, polygons in ERP pixels)."""
    return share_dir() / "sim" / "bedroom" / "dataset.json"
