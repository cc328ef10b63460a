"""LoRA paths and adapters on the tiny CogVideoX transformer: where a path may point, what counts
as a LoRA for the model, and that adapters leave no trace once switched off or evicted."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file

from models.tiny.cogvideox import build_pipeline
from pipelines.lora_adapters import LoraAdapters, RequestedLora
from pipelines.lora_sources import LoraFile, LoraSources, content_hash
from tests.generated_inputs import lora_bytes, png_bytes
from workers.context import InputError

LOC = ["loras", 0, "path"]
# peft's notice that a model now holds several adapters: that is the point of the cache.
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config`")


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline()


def forward(transformer: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 3, 16, 6, 8, generator=generator)
    text = torch.randn(1, 226, 32, generator=generator)
    with torch.inference_mode():
        return transformer(
            hidden_states=latents, encoder_hidden_states=text, timestep=torch.tensor([500]), return_dict=False
        )[0]


def lora_file(directory: Path, name: str, content: bytes) -> LoraFile:
    path = directory / name
    path.write_bytes(content)
    return LoraFile(path, content_hash(path), "from a test")


def test_adapters_switch_off_to_the_exact_base_and_the_oldest_goes_first(pipe, tmp_path: Path) -> None:
    base = forward(pipe.transformer)
    first, second = lora_file(tmp_path, "a", lora_bytes(seed=0)), lora_file(tmp_path, "b", lora_bytes(seed=1))
    adapters, logs = LoraAdapters(pipe, "tiny", max_loaded=1), []

    with torch.inference_mode(), adapters.applied([RequestedLora(first, 1.0, LOC)], logs.append):
        full = forward(pipe.transformer)
    assert not torch.allclose(full, base)
    assert torch.equal(forward(pipe.transformer), base)
    with torch.inference_mode(), adapters.applied([RequestedLora(first, 0.5, LOC)], logs.append):
        assert not torch.allclose(forward(pipe.transformer), full)
    assert logs[-1] == f"loras.0.path: LoRA {first.sha256[:12]} already loaded"

    with torch.inference_mode(), adapters.applied([RequestedLora(second, 1.0, LOC)], logs.append):
        assert not torch.allclose(forward(pipe.transformer), full)
    assert list(adapters.loaded) == [second.sha256]
    assert list(pipe.transformer.peft_config) == [adapters.loaded[second.sha256]]
    assert torch.equal(forward(pipe.transformer), base)

    adapters.max_loaded = 0
    with torch.inference_mode(), adapters.applied([RequestedLora(first, 1.0, LOC)], logs.append):
        assert torch.equal(forward(pipe.transformer), full)
    assert not adapters.loaded and not getattr(pipe.transformer, "peft_config", None)
    assert type(pipe.transformer.transformer_blocks[0].attn1.to_q) is torch.nn.Linear
    assert torch.equal(forward(pipe.transformer), base)


def test_the_alpha_a_lora_was_trained_with_is_kept(pipe, tmp_path: Path) -> None:
    adapters = LoraAdapters(pipe, "tiny", max_loaded=0)
    lora = lora_file(tmp_path, "a", lora_bytes(alpha=8))
    with torch.inference_mode(), adapters.applied([RequestedLora(lora, 1.0, LOC)], print):
        (config,) = pipe.transformer.peft_config.values()
        assert (config.r, config.lora_alpha) == (4, 8)


def test_files_that_are_not_a_lora_for_the_model_are_refused(pipe, tmp_path: Path) -> None:
    base = forward(pipe.transformer)
    tensor = torch.zeros(4, 32)
    key = "transformer.transformer_blocks.0.attn1.to_q"
    cases = {
        "png": (png_bytes((8, 8)), "not a LoRA in safetensors format"),
        "wide": (lora_bytes(attention_head_dim=32), "has shape (4, 64), the layer is 32 -> 32"),
        "unet": ({"unet.down.lora_A.weight": tensor}, "is not a transformer LoRA key"),
        "missing_layer": ({"transformer.nowhere.lora_A.weight": tensor}, "names no linear layer"),
        "half_pair": ({f"{key}.lora_A.weight": tensor}, "lora_A/lora_B pair"),
        "empty": ({}, "holds no tensors"),
    }
    adapters = LoraAdapters(pipe, "tiny", max_loaded=4)
    for name, (content, message) in cases.items():
        if isinstance(content, dict):
            save_file(content, str(tmp_path / name))
            content = (tmp_path / name).read_bytes()
        requested = [RequestedLora(lora_file(tmp_path, name, content), 1, LOC)]
        with pytest.raises(InputError) as refused, adapters.applied(requested, print):
            pass
        ((detail),) = refused.value.detail
        assert detail["loc"] == ["body", *LOC] and message in detail["msg"], (name, detail)
    assert not adapters.loaded and not getattr(pipe.transformer, "peft_config", None)
    assert torch.equal(forward(pipe.transformer), base)


class RecordingInputs:
    def __init__(self, path: Path) -> None:
        self.path, self.calls = path, []

    def file(self, url: str, loc: list) -> Path:
        self.calls.append((url, loc))
        return self.path


def test_paths_urls_and_hub_repos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    allowed, outside = tmp_path / "loras", tmp_path / "elsewhere"
    allowed.mkdir(), outside.mkdir()
    content = lora_bytes()
    (allowed / "style.safetensors").write_bytes(content)
    (outside / "secret.safetensors").write_bytes(content)
    (allowed / "link.safetensors").symlink_to(outside / "secret.safetensors")
    sources = LoraSources([str(allowed)], hub_download=False)

    found = sources.resolve(str(allowed / "style.safetensors"), LOC, None)
    assert found.sha256 == hashlib.sha256(content).hexdigest() and found.source == "from a local directory"
    refusals = {
        str(allowed / ".." / "elsewhere" / "secret.safetensors"): "OPENREEL_LORA_DIRS",
        str(allowed / "link.safetensors"): "OPENREEL_LORA_DIRS",
        str(outside / "absent.safetensors"): "OPENREEL_LORA_DIRS",  # says nothing about existence there
        str(allowed / "absent.safetensors"): "No such LoRA file",
        "style.safetensors": "Expected an http",
        "ftp://host/style.safetensors": "Expected an http",
    }
    for path, message in refusals.items():
        with pytest.raises(InputError, match=message):
            sources.resolve(path, LOC, None)

    inputs = RecordingInputs(allowed / "style.safetensors")
    assert sources.resolve("https://example.com/x.safetensors", LOC, inputs).sha256 == found.sha256
    assert inputs.calls == [("https://example.com/x.safetensors", LOC)]

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(InputError, match="not in this server's cache"):
        sources.resolve("owner/absent", LOC, None)
    snapshot = tmp_path / "hub" / "models--owner--two" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    (snapshot / "a.safetensors").write_bytes(content)
    assert sources.resolve("owner/two", LOC, None).path == snapshot / "a.safetensors"
    (snapshot / "b.safetensors").write_bytes(content)
    with pytest.raises(InputError, match="cannot tell which one is the LoRA"):
        sources.resolve("owner/two", LOC, None)
