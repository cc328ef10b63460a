"""RIFE frame interpolation (the HDv3 IFNet the CogVideo demo uses for ``use_rife``).

Worker-side only: importing this imports torch.
"""

from models.rife.ifnet import IFNet
from models.rife.interpolate import RifeInterpolator, doubled_length

__all__ = ["IFNet", "RifeInterpolator", "doubled_length"]
