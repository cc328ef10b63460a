"""CogVideoX-5B: text-, image- and video-to-video (torch-free; the runner imports torch)."""

T2V_REPO = "THUDM/CogVideoX-5b"
# Only its transformer is loaded: its text encoder, tokenizer and VAE are those of T2V_REPO.
I2V_REPO = "THUDM/CogVideoX-5b-I2V"
# The RIFE weights behind use_rife (models.rife.weights.REPO_ID and WEIGHTS_FILE, which import
# torch; this package must not).
RIFE_REPO = "AlexWortega/RIFE"
RIFE_FILE = "flownet.pkl"
