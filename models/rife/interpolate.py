"""Frame-rate doubling with an IFNet: one network midpoint between each pair of frames."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.rife.ifnet import IFNet

# IFNet's coarsest block works at 1/16 of the input; RIFE pads to 32 so all scales divide.
PAD_MULTIPLE = 32
DEFAULT_BATCH_SIZE = 8


def doubled_length(num_frames: int) -> int:
    """Frames after doubling: every original, plus one midpoint per consecutive pair.

    2F - 1 (49 -> 97), as classic RIFE's ``--exp=1`` gives. The CogVideo demo returns 2F (98)
    because it also pairs the last frame with itself; that extra frame is a near-copy of the
    last one and only makes the clip end on a freeze, so we do not emit it.
    """
    return max(2 * num_frames - 1, num_frames)


class RifeInterpolator:
    """Runs an IFNet over a whole clip in batches of frame pairs on one device.

    Batches go through the network as one tensor, so a GPU sees ``batch_size`` pairs per call
    rather than a Python loop per frame; ``batch_size`` bounds the activation memory. The model
    is moved to ``device`` and ``dtype`` in place.
    """

    def __init__(
        self, model: IFNet, device: torch.device | str, dtype: torch.dtype, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = batch_size
        self.model = model.to(device=self.device, dtype=dtype).eval().requires_grad_(False)

    @torch.inference_mode()
    def double(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (F, H, W, 3) -> uint8 (2F - 1, H, W, 3): each original frame, then the midpoint
        to the next; originals are copied through untouched (even indices)."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(f"expected uint8 frames of shape (F, H, W, 3), got {frames.dtype} {frames.shape}")
        count = len(frames)
        output = np.empty((doubled_length(count), *frames.shape[1:]), dtype=np.uint8)
        output[0::2] = frames
        for start in range(0, count - 1, self.batch_size):
            stop = min(start + self.batch_size, count - 1)
            # Frames start..stop hold the pairs (start, start+1) .. (stop-1, stop).
            output[2 * start + 1 : 2 * stop : 2] = self._midpoints(frames[start : stop + 1])
        return output

    def _midpoints(self, frames: np.ndarray) -> np.ndarray:
        height, width = frames.shape[1:3]
        # uint8 crosses to the device: a quarter of the bytes of float32.
        pixels = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).to(self.dtype) / 255
        # RIFE's own inference pads the right and bottom with zeros. Repeating the edge instead
        # makes those edges behave like the top and left ones, where warping already repeats the
        # edge pixel: a flow pointing off the frame (a pan) then never pulls black pad into it.
        padding = (0, -width % PAD_MULTIPLE, 0, -height % PAD_MULTIPLE)
        pixels = F.pad(pixels, padding, mode="replicate")
        middle = self.model(pixels[:-1], pixels[1:])[:, :, :height, :width]
        # Round half to even, like the runner's float-to-uint8 conversion of generated frames.
        middle = (middle.float().clamp(0, 1) * 255).round().to(torch.uint8)
        return middle.permute(0, 2, 3, 1).cpu().numpy()
