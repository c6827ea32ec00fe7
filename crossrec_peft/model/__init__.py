"""Item and user towers. Importing this package registers the built-in fusions and user encoders."""

from . import fusion, user_encoders  # noqa: F401
from .build import build_model
from .two_tower import ModalityEncoder, TwoTowerModel

__all__ = ["ModalityEncoder", "TwoTowerModel", "build_model"]
