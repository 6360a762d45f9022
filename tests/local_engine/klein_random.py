"""Flux2KleinPipeline objects with random weights, built from configurations: no download.

`tiny_pipeline()` is small enough for CPU tests (a ~0.7 MB folder once saved, ~0.1 s per 64x64
image); `klein_4b_pipeline()` has the published FLUX.2 Klein 4B architecture (a 5 + 20 block
transformer, 24 heads of 128, a Qwen3-4B text encoder, the 32-channel FLUX.2 VAE) for timing a GPU
without the weights. Both use a byte-level tokenizer made here (one token per UTF-8 byte, Qwen's
chat markers added), since the real tokenizer files come with the weights. Needs flux-nb[local].

Test and benchmark support, not part of the installed package: the tests here import it as
`klein_random` (pytest puts this folder on sys.path), and benchmarks/local_engine.py and
notebooks/conftest.py (the flux2-klein tutorial's tiny model) put this folder on sys.path first.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKLFlux2,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Transformer2DModel,
)
from transformers import Qwen2TokenizerFast, Qwen3Config, Qwen3ForCausalLM

from flux_nb.server.engines._klein_configs import KLEIN_4B, TINY

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
# What Flux2KleinPipeline asks of the chat template: the user turn, the assistant prefix and, with
# enable_thinking=False, an empty thinking block (as Qwen3's own template writes it).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def byte_tokenizer() -> Qwen2TokenizerFast:
    """A Qwen2 tokenizer whose vocabulary is the 256 byte-level symbols plus Qwen's specials."""
    from tokenizers import pre_tokenizers

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols)}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab,
        merges=[],
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    return tokenizer


def random_pipeline(
    config: dict[str, dict[str, Any]], *, seed: int = 0, device: str = "cpu", dtype=None
) -> Flux2KleinPipeline:
    """A step-distilled Flux2KleinPipeline with random weights drawn from `seed` (same seed, same
    weights), its modules built directly on `device` in `dtype` (default float32)."""
    dtype = dtype or torch.float32
    torch.manual_seed(seed)
    with torch.device(device):
        text_encoder = Qwen3ForCausalLM(Qwen3Config(**config["text_encoder"]))
        vae = AutoencoderKLFlux2(**config["vae"])
        transformer = Flux2Transformer2DModel(
            patch_size=1,
            mlp_ratio=3.0,
            rope_theta=2000,
            guidance_embeds=False,
            **config["transformer"],
        )
    if dtype != torch.float32:
        for module in (text_encoder, vae, transformer):
            module.to(dtype)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        time_shift_type="exponential",
    )
    return Flux2KleinPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=byte_tokenizer(),
        transformer=transformer,
        is_distilled=True,  # Klein's model_index.json says so; the constructor's default is False
    )


def tiny_pipeline(seed: int = 0) -> Flux2KleinPipeline:
    """A Flux2KleinPipeline small enough for CPU tests."""
    return random_pipeline(TINY, seed=seed)


def klein_4b_pipeline(device: str = "cuda", dtype=None, seed: int = 0) -> Flux2KleinPipeline:
    """The full-size FLUX.2 Klein 4B architecture with random weights (~8 B parameters in all)."""
    return random_pipeline(KLEIN_4B, seed=seed, device=device, dtype=dtype or torch.bfloat16)


__all__ = [
    "KLEIN_4B",
    "TINY",
    "byte_tokenizer",
    "klein_4b_pipeline",
    "random_pipeline",
    "tiny_pipeline",
]
