"""RIFE's HDv3 IFNet (the network behind the CogVideo demo's ``flownet.pkl``), inference only.

Module names and nesting follow the published checkpoint exactly, so its state dict (with the
DDP ``module.`` prefix removed) loads with ``strict=True``; the tests pin that layout.

Method, in short: three IFBlocks refine a bidirectional optical flow (the middle frame's flow
towards each input, in pixels) and a fusion mask, coarse to fine at 1/4, 1/2 and full resolution.
The midpoint is both inputs backward-warped by their flow and blended by the sigmoid of the mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Channel width of every IFBlock in the HDv3 checkpoint.
WIDTH = 90
# What a block sees besides the flow: two warped RGB frames and the mask (3 + 3 + 1).
STUDENT_INPUTS = 7
# The teacher also sees the ground-truth middle frame (another 3 channels).
TEACHER_INPUTS = 10
FLOW_CHANNELS = 4  # two 2-D flows: middle -> first frame, middle -> second frame
SCALES = (4, 2, 1)


def _conv_prelu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.PReLU(out_channels))


def _upsampling_head(width: int, out_channels: int) -> nn.Sequential:
    """Back from the blocks' 1/4 working resolution to the input's, in two learned 2x steps."""
    return nn.Sequential(
        nn.ConvTranspose2d(width, width // 2, 4, 2, 1),
        nn.PReLU(width // 2),
        nn.ConvTranspose2d(width // 2, out_channels, 4, 2, 1),
    )


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    # At factor 1 bilinear resampling is the identity; skipping it saves a full-size copy.
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False)


class IFBlock(nn.Module):
    """Predicts a flow and mask update from frames, mask and current flow at ``1/scale`` size."""

    def __init__(self, in_channels: int, width: int = WIDTH) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(
            _conv_prelu(in_channels, width // 2, stride=2),
            _conv_prelu(width // 2, width, stride=2),
        )
        self.convblock0 = nn.Sequential(_conv_prelu(width, width), _conv_prelu(width, width))
        self.convblock1 = nn.Sequential(_conv_prelu(width, width), _conv_prelu(width, width))
        self.convblock2 = nn.Sequential(_conv_prelu(width, width), _conv_prelu(width, width))
        self.convblock3 = nn.Sequential(_conv_prelu(width, width), _conv_prelu(width, width))
        self.conv1 = _upsampling_head(width, FLOW_CHANNELS)
        self.conv2 = _upsampling_head(width, 1)

    def forward(self, x: torch.Tensor, flow: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        # Flow is measured in pixels, so it shrinks and grows with the image.
        features = self.conv0(torch.cat((_resize(x, 1 / scale), _resize(flow, 1 / scale) / scale), 1))
        for residual in (self.convblock0, self.convblock1, self.convblock2, self.convblock3):
            features = features + residual(features)
        return _resize(self.conv1(features), scale) * scale, _resize(self.conv2(features), scale)


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at each pixel displaced by ``flow`` (B, 2, H, W; x then y, in pixels).

    Computed in float32 whatever the model's dtype: in half precision the normalised sampling
    grid near ±1 is only good to ~1/1000 of the frame, a third of a pixel at 720 wide.
    """
    _, _, height, width = image.shape
    xs = torch.linspace(-1.0, 1.0, width, device=flow.device).view(1, width).expand(height, width)
    ys = torch.linspace(-1.0, 1.0, height, device=flow.device).view(height, 1).expand(height, width)
    # align_corners=True: -1 and +1 are the centres of the edge pixels, so a pixel is 2/(size-1).
    scale = flow.new_tensor([2.0 / (width - 1), 2.0 / (height - 1)], dtype=torch.float32).view(1, 2, 1, 1)
    grid = torch.stack((xs, ys)).unsqueeze(0) + flow.float() * scale
    warped = F.grid_sample(
        image.float(), grid.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border", align_corners=True
    )
    return warped.to(image.dtype)


def _swap_directions(flow: torch.Tensor) -> torch.Tensor:
    return torch.cat((flow[:, 2:4], flow[:, 0:2]), 1)


class IFNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block0 = IFBlock(STUDENT_INPUTS + FLOW_CHANNELS)
        self.block1 = IFBlock(STUDENT_INPUTS + FLOW_CHANNELS)
        self.block2 = IFBlock(STUDENT_INPUTS + FLOW_CHANNELS)
        # Only used in training (distillation); kept so the published weights load strictly.
        self.block_tea = IFBlock(TEACHER_INPUTS + FLOW_CHANNELS)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The frame halfway between ``first`` and ``second`` (B, 3, H, W in [0, 1]).

        H and W must be multiples of 32 so every block's 1/16 working grid is whole.
        """
        batch = first.shape[0]
        flow = first.new_zeros(batch, FLOW_CHANNELS, *first.shape[2:])
        mask = first.new_zeros(batch, 1, *first.shape[2:])
        warped_first, warped_second = first, second
        for block, scale in zip((self.block0, self.block1, self.block2), SCALES):
            # Each block also runs with the frames swapped, and the two answers are averaged, so
            # the result does not depend on the input order. Both passes share one batch.
            inputs = torch.cat(
                (
                    torch.cat((warped_first, warped_second, mask), 1),
                    torch.cat((warped_second, warped_first, -mask), 1),
                )
            )
            flows = torch.cat((flow, _swap_directions(flow)))
            flow_update, mask_update = block(inputs, flows, scale)
            flow = flow + (flow_update[:batch] + _swap_directions(flow_update[batch:])) / 2
            mask = mask + (mask_update[:batch] - mask_update[batch:]) / 2
            warped_first = backward_warp(first, flow[:, 0:2])
            warped_second = backward_warp(second, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped_first * weight + warped_second * (1 - weight)
