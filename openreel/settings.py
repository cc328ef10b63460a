"""The one configuration object, read from ``OPENREEL_*`` environment variables.

Every process (API, GPU worker, the all-in-one launcher) builds the same ``Settings``;
command-line flags are only overrides of these fields, so each flag has an env twin.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENREEL_", extra="ignore")

    # --- HTTP face -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the API binds. Default 127.0.0.1.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of the API. Default 8000.")
    tls_cert: Path | None = Field(
        None, description="PEM certificate; with tls_key the API serves HTTPS (the Python fal client requires it)."
    )
    tls_key: Path | None = Field(None, description="PEM private key matching tls_cert.")
    public_url: str | None = Field(
        None,
        description="Base URL put in file URLs (e.g. https://media.example.com). "
        "Default: the scheme and host each request arrived on.",
    )
    api_keys: CsvList = Field(
        default_factory=list,
        description="Comma-separated keys accepted in 'Authorization: Key <key>', in addition to keys made "
        "with 'openreel keys create'. Default none: then only loopback binding is allowed.",
    )

    # --- queue -----------------------------------------------------------------------------
    redis_url: str | None = Field(
        None,
        description="Redis shared by API and workers, e.g. redis://host:6379/0. "
        "Default unset: 'openreel up' starts an embedded redis-server in data_dir.",
    )
    retention_s: int = Field(
        7 * 24 * 3600, ge=60, description="Seconds request records, results and logs are kept. Default 7 days."
    )
    job_timeout_s: int = Field(
        3600, ge=10, description="Hard limit in seconds on one request's run on a worker. Default 3600."
    )
    max_retries: int = Field(
        3, ge=0, le=10, description="Times a request is re-queued when its worker dies mid-job. Default 3."
    )
    poll_interval_s: float = Field(
        0.1, gt=0, le=5, description="Seconds between record reads in status streams and sync runs. Default 0.1."
    )

    # --- workers ---------------------------------------------------------------------------
    workers: int = Field(1, ge=0, le=64, description="Worker processes 'openreel up' starts. Default 1.")
    endpoints: CsvList = Field(
        default_factory=list,
        description="Endpoint ids (or family names) served; comma-separated. Default: every implemented endpoint.",
    )
    heartbeat_s: float = Field(
        5.0, gt=0, description="Seconds between worker heartbeats, also while a job runs. Default 5."
    )
    heartbeat_ttl_s: int = Field(
        30,
        ge=2,
        description="Seconds without heartbeat after which a worker counts as dead and its job is re-queued. "
        "Default 30.",
    )
    maintenance_s: int = Field(
        10, ge=1, description="Seconds between an idle worker's sweeps for jobs of dead workers. Default 10."
    )
    device: str = Field("auto", description="Torch device for pipelines: auto, cpu, cuda, cuda:N. Default auto.")
    warmup: bool = Field(True, description="Run one small generation at worker start. Default true.")

    # --- GPUs and residency ----------------------------------------------------------------
    gpus: str | None = Field(
        None,
        description="GPUs 'openreel up' runs one worker each on, with CUDA_VISIBLE_DEVICES set to that GPU: 'all' "
        "(every GPU nvidia-smi lists, or those CUDA_VISIBLE_DEVICES names; on a host without GPUs, 'workers' "
        "workers with no CUDA_VISIBLE_DEVICES) or indexes such as '0,1'. Default unset: 'workers' workers that "
        "all see every GPU.",
    )
    residency_budget_mib: float | None = Field(
        None,
        gt=0,
        description="Device memory, in MiB, the weights a worker keeps on its device may take; beyond it the least "
        "recently used pipeline moves to (pinned) CPU memory. Default unset: on CUDA the GPU's memory less 16 GiB "
        "for activations; on CPU no limit.",
    )
    residency_max_wait_s: float = Field(
        120.0,
        ge=0,
        description="Seconds a request may wait while a worker prefers requests for pipelines it has on its "
        "device; an older request is taken next whatever the swap costs. 0 serves strictly oldest first. "
        "Default 120.",
    )
    group_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Seconds a rank of a worker group (torchrun over several GPUs) waits for the others inside a "
        "request: an attention collective, the inputs, the closing handshake. A rank that does not arrive in time "
        "breaks the group, which exits for torchrun to restart. Must cover writing a request's output. Default 600.",
    )

    # --- models and files ------------------------------------------------------------------
    models: Literal["tiny", "full"] = Field(
        "tiny",
        description="Weight preset: 'full' loads the real Hugging Face repos (GPU hosts); 'tiny' generates "
        "random weights of the same layout offline (tests, laptops). Default tiny.",
    )
    data_dir: Path = Field(Path("data"), description="Embedded Redis, local file storage and caches. Default ./data.")
    model_cache_dir: Path | None = Field(
        None, description="Where tiny weights are generated. Default <data_dir>/models."
    )

    # --- generation ------------------------------------------------------------------------
    video_min_side: int = Field(
        16, ge=16, description="Smallest width or height of a generated video, in pixels. Default 16."
    )
    video_max_side: int = Field(
        1360,
        ge=16,
        description="Largest width or height of a generated video, in pixels. Past about 1360 the decode of 49 "
        "frames no longer fits an 80 GB GPU without VAE tiling. Default 1360.",
    )
    memory_mode: Literal["auto", "gpu", "model_offload", "sequential_offload"] = Field(
        "auto",
        description="Where a CUDA worker keeps pipeline weights: 'gpu' (all on the GPU, fastest), 'model_offload' "
        "(each model moves to the GPU while it runs), 'sequential_offload' (layer by layer: least memory, very "
        "slow). 'auto' picks from the GPU's memory and the weights loaded, and the worker logs its choice. CPU "
        "workers keep everything in memory. Default auto.",
    )
    vae_tiling: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Decode videos in tiles, one at a time (VAE tiling and slicing): less memory at the decode, "
        "the peak, for a little time. 'auto' is on for CUDA devices unless memory_mode=auto keeps everything on "
        "the GPU with room for the untiled decode, and off on CPU. Default auto.",
    )
    rife_weights: Path | None = Field(
        None,
        description="RIFE flownet.pkl (or its folder) for the full preset. Default unset: the file of the "
        "AlexWortega/RIFE repo in the Hugging Face cache, as 'openreel fetch-weights' puts it there.",
    )
    lora_dirs: CsvList = Field(
        default_factory=list,
        description="Directories whose files a LoRA path may name by absolute path; comma-separated. Default none: "
        "local paths are refused.",
    )
    lora_hub_download: bool = Field(
        False,
        description="Let a LoRA path naming a Hugging Face repo download it at request time; otherwise it must "
        "already be in the worker's Hugging Face cache. Default false.",
    )
    lora_max_loaded: int = Field(
        4,
        ge=0,
        le=64,
        description="LoRA adapters kept loaded per transformer after their request, so a repeated LoRA is not "
        "loaded again; the least recently used goes first. Default 4.",
    )
    fp8_weights: bool = Field(
        False,
        description="Store the large transformers' weights in float8_e4m3fn and compute in bfloat16 (diffusers' "
        "layerwise casting): about half their memory, slightly slower and less precise. Applies to the "
        "Video-As-Prompt transformer. Default false.",
    )

    # --- speed: how the denoiser runs (pipelines/speed.py) ---------------------------------
    compile: Literal["auto", "on", "off"] = Field(
        "auto",
        description="torch.compile each repeated transformer block (regional compile), compiled at worker start by "
        "the warm-up at the default request size; another size compiles once on its first request. 'auto' is on "
        "for CUDA devices and off on CPU, where compiling costs more than it saves. Default auto.",
    )
    attention_backend: Literal["auto", "cudnn", "flash", "efficient", "math"] = Field(
        "auto",
        description="Scaled-dot-product attention kernel of CUDA workers: 'auto' prefers cuDNN, then flash, then "
        "memory-efficient attention (the fastest first on Hopper at head dim 64; each falls back to the next where "
        "it cannot run); a name forces that kernel alone. CPU workers keep torch's choice. Default auto.",
    )
    fuse_qkv: bool = Field(
        True,
        description="Fuse each attention's query, key and value projections into one matmul where the model "
        "supports it (diffusers' fuse_qkv_projections): same weights, one larger GEMM. Default true.",
    )
    fp8_compute: bool = Field(
        False,
        description="Fast mode: quantize the transformers' linear layers to float8 weights and activations (torchao, "
        "rowwise dynamic scaling; needs CUDA compute capability 8.9 or later and the 'fp8' extra). Lossy: measure "
        "the frame difference with 'openreel bench'. Excludes fp8_weights. Default false.",
    )
    step_cache_threshold: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Fast mode: diffusers' First Block Cache. A step whose first transformer block changes its "
        "output by less than this relative amount reuses the previous step's other blocks. Lossy; 0.05-0.2 is the "
        "useful range (higher blurs). 0: off. Default 0.",
    )

    # --- Video-As-Prompt (fal-ai/video-as-prompt) ----------------------------------------------
    video_as_prompt_steps: int = Field(
        50,
        ge=1,
        le=100,
        description="Denoising steps per request (fal's schema has no such field); each runs the transformer "
        "twice for guidance. Default 50, the Video-As-Prompt inference script's value.",
    )
    video_as_prompt_max_pixels: int = Field(
        0,
        ge=0,
        description="Largest width x height generated per frame, in pixels; a larger aspect_ratio/resolution is "
        "generated and delivered scaled down to fit (same aspect, multiples of 16), and the request's logs say "
        "so. 0: no cap, every size as documented. Default 0.",
    )
    safety_checker: str | None = Field(
        None,
        description="Hugging Face repo id or local directory of the StableDiffusionSafetyChecker (with its CLIP "
        "preprocessor_config.json) behind enable_safety_checker. Default: CompVis/stable-diffusion-safety-checker "
        "(under the tiny preset, its generated stand-in).",
    )

    # --- AnimateDiff (fal-ai/animatediff-v2v/turbo) ----------------------------------------
    animatediff_base_model: str = Field(
        "emilianJR/epiCRealism",
        description="Hugging Face repo of the Stable Diffusion 1.5 checkpoint (diffusers layout) that AnimateDiff "
        "animates under the full preset; any SD1.5 finetune works. The tiny preset ignores it. Default "
        "emilianJR/epiCRealism (photoreal).",
    )
    animatediff_max_side: int = Field(
        512,
        ge=64,
        le=2048,
        description="Longest side of AnimateDiff's output in pixels: larger inputs are scaled down to it (both sides "
        "then rounded down to multiples of 8). SD1.5 was trained at 512. Default 512.",
    )
    animatediff_max_frames: int = Field(
        128,
        ge=1,
        le=2000,
        description="Most frames AnimateDiff generates per request, counted after select_every_nth_frame; longer "
        "inputs are a 422. Default 128.",
    )

    # --- output storage --------------------------------------------------------------------
    storage: Literal["local", "s3"] = Field(
        "local", description="Output and upload storage: 'local' (data_dir/files, served at /files) or 's3'. Default local."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. http://minio:9000. Default unset: AWS S3 itself."
    )
    s3_bucket: str | None = Field(None, description="Bucket for outputs and uploads; required when storage=s3.")
    s3_region: str = Field("us-east-1", description="S3 region. Default us-east-1.")
    s3_access_key_id: str | None = Field(None, description="S3 access key id. Default: boto3's credential chain.")
    s3_secret_access_key: str | None = Field(None, description="S3 secret key. Default: boto3's credential chain.")
    s3_public_base_url: str | None = Field(
        None,
        description="Public URL prefix of the bucket (objects must be readable there). "
        "Default unset: presigned GET URLs are handed out instead.",
    )
    s3_presign_expiry_s: int = Field(
        7 * 24 * 3600, ge=60, le=7 * 24 * 3600, description="Lifetime of presigned GET URLs in seconds. Default 7 days."
    )
    storage_sweep_s: int = Field(
        300,
        ge=1,
        description="Seconds between the io-worker's sweeps deleting expired files and abandoned multipart uploads "
        "(both backends). Default 300.",
    )

    # --- uploads ---------------------------------------------------------------------------
    upload_max_bytes: int = Field(
        2 * 1024**3, ge=1, description="Largest accepted upload in bytes. Default 2 GiB."
    )
    upload_url_expiry_s: int = Field(
        3600, ge=10, description="Seconds a presigned upload URL (and an unfinished multipart upload) stays valid. "
        "Default 3600.",
    )
    request_body_max_bytes: int = Field(
        96 * 1024**2,
        ge=1024,
        description="Largest JSON body of a submit or run call, in bytes; larger ones are a 413. Default 96 MiB "
        "(a data: URI of OPENREEL_DATA_URI_MAX_BYTES in base64, plus the rest).",
    )

    # --- input fetching (file URLs in requests) and webhooks ------------------------------
    fetch_allow: CsvList = Field(
        default_factory=list,
        description="Host names, addresses or CIDRs that input fetches and webhooks may reach although they are "
        "loopback, private, link-local or metadata addresses; comma-separated. Default none.",
    )
    fetch_max_bytes: int = Field(
        1024**3, ge=1, description="Largest input file fetched from a URL, in bytes. Default 1 GiB."
    )
    data_uri_max_bytes: int = Field(
        64 * 1024**2, ge=1, description="Largest decoded data: URI input, in bytes. Default 64 MiB."
    )
    fetch_connect_timeout_s: float = Field(10.0, gt=0, description="Connect timeout of input fetches, seconds. Default 10.")
    fetch_read_timeout_s: float = Field(60.0, gt=0, description="Read timeout of input fetches, seconds. Default 60.")
    fetch_max_redirects: int = Field(5, ge=0, le=20, description="Redirects followed by input fetches. Default 5.")
    input_video_max_seconds: float = Field(
        60.0, gt=0, description="Longest input video accepted, in seconds. Default 60."
    )
    input_video_max_side: int = Field(
        4096, ge=16, description="Largest width or height of an input video or image, in pixels. Default 4096."
    )
    input_video_max_frames: int = Field(
        2000, ge=1, description="Most frames decoded from one input video. Default 2000."
    )
    webhook_timeout_s: float = Field(15.0, gt=0, description="Timeout of one webhook delivery try, seconds. Default 15.")
    webhook_max_attempts: int = Field(
        10, ge=1, le=50, description="Webhook delivery tries before giving up. Default 10."
    )
    webhook_retry_window_s: int = Field(
        7200, ge=1, description="Seconds over which webhook retries are spread (exponential backoff). Default 2 h."
    )
    webhook_key_file: Path | None = Field(
        None,
        description="PEM Ed25519 private key that signs webhooks. Default unset: a key generated on first start "
        "and kept in Redis, so every process sharing the Redis signs with it.",
    )

    # --- operations: logs ------------------------------------------------------------------
    log_format: Literal["auto", "json", "text"] = Field(
        "auto",
        description="Log lines on stderr: 'json' (one object per line, with the request id), 'text' (readable), or "
        "'auto': text when stderr is a terminal, JSON otherwise. Default auto.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Least severe level logged (DEBUG also logs every status poll). Default INFO."
    )

    @field_validator("api_keys", "endpoints", "fetch_allow", "lora_dirs", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # an empty variable in an env file means unset
        if value == "all":
            return value
        indexes = [item.strip() for item in value.split(",")]
        if not indexes or not all(item.isdigit() for item in indexes):
            raise ValueError("gpus must be 'all' or comma-separated GPU indexes such as '0,1'")
        return ",".join(indexes)

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.heartbeat_ttl_s <= self.heartbeat_s:
            raise ValueError("heartbeat_ttl_s must exceed heartbeat_s, or live workers look dead")
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("storage=s3 needs s3_bucket")
        if self.video_min_side > self.video_max_side:
            raise ValueError("video_min_side must not exceed video_max_side")
        self._speed_combinations()
        return self

    def _speed_combinations(self) -> None:
        if self.fp8_compute and self.fp8_weights:
            raise ValueError("fp8_compute and fp8_weights both convert the transformer's weights; choose one")
        if self.device == "cpu" and (self.fp8_compute or self.attention_backend != "auto"):
            raise ValueError("fp8_compute and attention_backend are CUDA kernels; device=cpu allows neither")
        if self.compile == "on" and self.memory_mode == "sequential_offload":
            raise ValueError("compile=on cannot trace sequential offload's per-layer weight moves")

    @property
    def models_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    def binds_loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def as_env(self) -> dict[str, str]:
        """The settings as OPENREEL_* variables, to hand to child processes."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, list):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"OPENREEL_{name.upper()}"] = str(value)
        return env


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (flag) overrides that are not None."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


def child_env(settings: Settings) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENREEL_")}
    env.update(settings.as_env())
    return env
