"""AnimateDiff turbo's parts without the queue: the A1111 prompt syntax, weighted and chunked CLIP
embeddings, and the runner's LoRAs (several at once, gone without a trace) on the tiny preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from models.fetch import weights_of
from models.tiny.animatediff import MOTION_MAX_FRAMES, build_base_pipeline
from openreel.settings import Settings
from pipelines.animatediff import ANIMATELCM_REPO, DEFAULT_BASE_REPO, LCM_LORA_FILE
from pipelines.animatediff.runner import CONTEXT_FRAMES, AnimateDiffTurbo, fitted_size
from pipelines.animatediff.schema import AnimateDiffV2VTurboInput
from pipelines.clip_prompts import ClipPromptEncoder
from pipelines.lora_adapters import RequestedLora
from pipelines.lora_sources import LoraFile, content_hash
from pipelines.prompt_weights import Weighted, parse_prompt
from pipelines.registry import select
from tests.generated_inputs import gradient_frames, lora_bytes, sd_lora_bytes
from workers.context import InputError, JobContext, Progress
from workers.decoding import Video

pytestmark = [
    pytest.mark.filterwarnings("ignore:Already found a `peft_config`"),
    # A LoRA's metadata names layers by suffix (to_q), which the motion modules share; the file
    # has no weights for theirs, so those adapters start at zero and change nothing.
    pytest.mark.filterwarnings("ignore:While injecting the PEFT adapters"),
]


@pytest.mark.parametrize(
    ("prompt", "parsed"),
    [
        (
            "(bad quality, worst quality:1.2), ugly faces, bad anime",
            [[Weighted("bad quality, worst quality", 1.2), Weighted(", ugly faces, bad anime", 1.0)]],
        ),
        ("a ((red)) [car]", [[Weighted("a ", 1.0), Weighted("red", 1.1 * 1.1), Weighted(" ", 1.0),
                              Weighted("car", 1 / 1.1)]]),
        ("nested (a (b:2) c:1.5)", [[Weighted("nested ", 1.0), Weighted("a ", 1.5), Weighted("b", 3.0),
                                     Weighted(" c", 1.5)]]),
        (r"\(literal\) and \[too\]", [[Weighted("(literal) and [too]", 1.0)]]),
        ("open (to the end", [[Weighted("open ", 1.0), Weighted("to the end", 1.1)]]),
        ("closes nothing) or :1.5)", [[Weighted("closes nothing) or :1.5)", 1.0)]]),
        ("[square:1.3] keeps its text", [[Weighted("square:1.3", 1 / 1.1), Weighted(" keeps its text", 1.0)]]),
        ("time: 5 pm", [[Weighted("time: 5 pm", 1.0)]]),
        ("one BREAK two", [[Weighted("one ", 1.0)], [Weighted(" two", 1.0)]]),
        ("", [[]]),
    ],
)
def test_the_a1111_syntax(prompt: str, parsed: list[list[Weighted]]) -> None:
    result = parse_prompt(prompt)
    assert [[run.text for run in part] for part in result] == [[run.text for run in part] for part in parsed]
    for got, expected in zip(result, parsed, strict=True):
        assert [run.weight for run in got] == pytest.approx([run.weight for run in expected])


@pytest.fixture(scope="module")
def encoder() -> ClipPromptEncoder:
    base = build_base_pipeline()
    with torch.no_grad():
        # Trained CLIP's final norm has a bias, so its embeddings have a mean to keep; at init it has none.
        base.text_encoder.final_layer_norm.bias.fill_(0.5)
    return ClipPromptEncoder(base.tokenizer, base.text_encoder)


def embeddings(encoder: ClipPromptEncoder, prompt: str) -> torch.Tensor:
    with torch.inference_mode():
        return encoder.encode(encoder.chunks(prompt), torch.device("cpu"))


def test_a_weight_scales_its_tokens_against_the_rest(encoder: ClipPromptEncoder) -> None:
    plain = embeddings(encoder, "a red car")
    assert torch.equal(embeddings(encoder, "(a red car:1)"), plain)
    weighted = embeddings(encoder, "a (red:1.5) car")
    assert not torch.allclose(weighted, plain)
    # The tiny tokenizer makes a token of each letter (spaces end words): after the start token,
    # "a" is position 1, "red" 2-4 and "car" 5-7.
    ratio = weighted[0] / plain[0]
    assert ratio[2:5].mean() / ratio[1].mean() == pytest.approx(1.5, rel=1e-4)
    assert torch.allclose(ratio[5:8], ratio[1].expand(3, -1))  # "car" shares the unweighted scale
    assert weighted.mean() == pytest.approx(plain.mean().item(), rel=1e-4)  # emphasis moves, the mean stays
    negative = embeddings(encoder, "(bad quality, worst quality:1.2), ugly faces, bad anime")
    assert not torch.allclose(negative, embeddings(encoder, "bad quality, worst quality, ugly faces, bad anime"))


def test_long_prompts_are_chunked_not_cut(encoder: ClipPromptEncoder) -> None:
    long = "a slow pan over a quiet harbour at dawn, " * 5  # 160 tokens: a letter or comma each
    chunks = encoder.chunks(long + "red")
    assert [len(chunk.ids) for chunk in chunks] == [75, 75, 13]
    red, blue = embeddings(encoder, long + "red"), embeddings(encoder, long + "blue")
    assert red.shape == (1, 3 * 77, 32)
    assert not torch.allclose(red[:, 154:], blue[:, 154:])  # the words past 150 tokens count
    assert [len(chunk.ids) for chunk in encoder.chunks("one BREAK two")] == [3, 3]
    with torch.inference_mode():
        positive, negative = encoder.encode_pair(long, "blurry", torch.device("cpu"))
    assert positive.shape == negative.shape == (1, 3 * 77, 32)


def test_sizes_fit_the_bound_and_multiples_of_8() -> None:
    assert fitted_size(64, 48, 512) == (64, 48)
    assert fitted_size(1920, 1080, 512) == (512, 288)
    assert fitted_size(1080, 1920, 512) == (288, 512)
    assert fitted_size(100, 30, 512) == (96, 24)
    assert fitted_size(6, 6, 512) == (8, 8)


class ClipInputs:
    """The input resolver's interface, handing out one decoded clip."""

    def __init__(self, video: Video) -> None:
        self.clip = video

    def video(self, url: str, loc: list) -> Video:
        return self.clip

    def file(self, url: str, loc: list) -> Path:
        return Path(url)


@pytest.fixture(scope="module")
def runner(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AnimateDiffTurbo:
    loras = tmp_path_factory.mktemp("loras")
    return AnimateDiffTurbo(Settings(models="tiny", model_cache_dir=models_dir, device="cpu", lora_dirs=[str(loras)]))


def generate(runner: AnimateDiffTurbo, frames: np.ndarray, **fields: object) -> tuple[np.ndarray, list[str]]:
    logs: list[str] = []
    written: list[np.ndarray] = []
    context = JobContext(
        request_id="test",
        progress=Progress(log=logs.append, cancelled=lambda: False),
        write_video=lambda video, fps, file_name: written.append(video) or {"url": "memory:"},
        inputs=ClipInputs(Video(frames, 8.0)),
    )
    request = dict(video_url="clip.mp4", prompt="a red kite", seed=5, num_inference_steps=4, select_every_nth_frame=1)
    runner.run(AnimateDiffV2VTurboInput(**{**request, **fields}), context)
    return written[0], logs


def lora_path(runner: AnimateDiffTurbo, name: str, content: bytes) -> str:
    path = runner.lora_sources.allowed_dirs[0] / name
    path.write_bytes(content)
    return str(path)


def test_loras_combine_and_leave_no_trace(runner: AnimateDiffTurbo) -> None:
    clip = gradient_frames(4, (32, 32))
    style = lora_path(runner, "style.safetensors", sd_lora_bytes(seed=1))
    unet_only = lora_path(runner, "unet.safetensors", sd_lora_bytes(seed=2, text_encoder=False))

    before, _ = generate(runner, clip)
    styled, logs = generate(runner, clip, loras=[{"path": style, "scale": 1.0}])
    assert any(line.startswith("loras.0.path: LoRA") and "loaded from a local directory" in line for line in logs)
    both, _ = generate(runner, clip, loras=[{"path": style, "scale": 1.0}, {"path": unet_only, "scale": 0.7}])
    after, _ = generate(runner, clip)

    assert np.array_equal(after, before)  # bit-identical once the adapters are off
    assert len({frames.tobytes() for frames in (before, styled, both)}) == 3


def test_a_lora_for_another_model_is_a_422_naming_it(runner: AnimateDiffTurbo, tmp_path: Path) -> None:
    clip = gradient_frames(4, (32, 32))
    other = lora_path(runner, "cogvideox.safetensors", lora_bytes(seed=0))
    with pytest.raises(InputError) as refused:
        generate(runner, clip, loras=[{"path": lora_path(runner, "ok.safetensors", sd_lora_bytes())}, {"path": other}])
    ((detail),) = refused.value.detail
    assert detail["loc"] == ["body", "loras", 1, "path"]
    assert "is not a unet/text_encoder LoRA key" in detail["msg"]
    wrong_shape = lora_path(runner, "wide.safetensors", b"")
    save_file({"unet.conv_in.lora_A.weight": torch.zeros(4, 5, 3, 3)}, wrong_shape)
    with pytest.raises(InputError, match="has shape"):
        generate(runner, clip, loras=[{"path": wrong_shape}])


def test_kohya_loras_load_into_unet_and_text_encoder(runner: AnimateDiffTurbo) -> None:
    """The layout most SD1.5 LoRAs are shared in, LoCon convolutions and alphas included."""
    layers = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (torch.randn(4, 8), torch.randn(8, 4)),
        "lora_unet_down_blocks_0_resnets_0_conv1": (torch.randn(4, 8, 3, 3), torch.randn(8, 4, 1, 1)),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (torch.randn(4, 32), torch.randn(32, 4)),
    }
    tensors = {}
    for name, (down, up) in layers.items():
        tensors |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up, f"{name}.alpha": torch.tensor(2.0)}
    path = Path(lora_path(runner, "kohya.safetensors", b""))
    save_file(tensors, str(path))
    logs: list[str] = []
    requested = [RequestedLora(LoraFile(path, content_hash(path), "from a test"), 1.0, ["loras", 0, "path"])]
    with torch.inference_mode(), runner.adapters.applied(requested, logs.append):  # as the runner does
        name = runner.adapters.loaded[content_hash(path)]
        assert name in runner.pipe.unet.peft_config and name in runner.pipe.text_encoder.peft_config
        conv = runner.pipe.unet.down_blocks[0].resnets[0].conv1
        assert conv.lora_A[name].weight.shape == (4, 8, 3, 3)
    assert logs == [f"loras.0.path: LoRA {content_hash(path)[:12]} loaded from a test (6 tensors)"]


def test_frames_past_the_limit_are_a_422(runner: AnimateDiffTurbo) -> None:
    assert MOTION_MAX_FRAMES < 40 and CONTEXT_FRAMES < MOTION_MAX_FRAMES
    limited = runner.settings
    runner.settings = limited.model_copy(update={"animatediff_max_frames": 5})
    try:
        with pytest.raises(InputError) as refused:
            generate(runner, gradient_frames(12, (48, 32)), select_every_nth_frame=2)
        assert generate(runner, gradient_frames(12, (48, 32)), select_every_nth_frame=3)[0].shape == (4, 32, 48, 3)
    finally:
        runner.settings = limited
    ((detail),) = refused.value.detail
    assert detail["loc"] == ["body", "video_url"]
    assert "select_every_nth_frame=2 keeps 6, more than the 5" in detail["msg"]


def test_fetch_weights_takes_the_configured_base_model() -> None:
    endpoints = select(["animatediff"])
    default, animatelcm = weights_of(endpoints)
    assert (default.repo, animatelcm.repo) == (DEFAULT_BASE_REPO, ANIMATELCM_REPO)
    assert "unet/diffusion_pytorch_model.safetensors" in default.patterns and LCM_LORA_FILE in animatelcm.patterns
    swapped = weights_of(endpoints, Settings(animatediff_base_model="someone/sd15-anime"))
    assert [weights.repo for weights in swapped] == ["someone/sd15-anime", ANIMATELCM_REPO]
    assert swapped[0].patterns == default.patterns
