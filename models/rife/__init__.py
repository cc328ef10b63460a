"""RIFE frame interpolation (the HDv3 IFNet the CogVideo demo uses for ``use_rife``).

Worker-side only: importing this imports torch.
"""

from models.rife.ifnet import IFNet
from models.rife.interpolate import RifeInterpolator, doubled_length
from models.rife.weights import REPO_ID, load_rife

__all__ = ["IFNet", "REPO_ID", "RifeInterpolator", "doubled_length", "load_rife"]
