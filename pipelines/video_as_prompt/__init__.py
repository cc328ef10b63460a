"""Video-As-Prompt on Wan2.1-I2V-14B (torch-free; the runner imports torch)."""

REPO = "ByteDance/Video-As-Prompt-Wan2.1-14B"
# The image classifier behind enable_safety_checker: diffusers' StableDiffusionSafetyChecker
# with its CLIP image processor.
SAFETY_CHECKER_REPO = "CompVis/stable-diffusion-safety-checker"
