"""The configurations of the two Flux2KleinPipeline architectures flux-nb knows without weights.

TINY is the random test pipeline's (tests/local_engine/klein_random.py); KLEIN_4B is the published
FLUX.2 Klein 4B (a 5 + 20 block transformer, 24 heads of 128, a Qwen3-4B text encoder, the
32-channel FLUX.2 VAE). Plain dicts, no torch: the memory plan (_plan.py) reads them too.
"""

from __future__ import annotations

from typing import Any

TINY: dict[str, dict[str, Any]] = {
    "text_encoder": dict(
        vocab_size=320,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=27,  # the pipeline reads hidden states 9, 18 and 27
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    ),
    "vae": dict(
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    ),
    "transformer": dict(
        in_channels=16,  # 4 x the VAE's latent channels (2x2 patches)
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=48,  # 3 stacked text layers x hidden_size
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),  # sums to attention_head_dim
    ),
}

KLEIN_4B: dict[str, dict[str, Any]] = {
    "text_encoder": dict(  # Qwen3-4B
        vocab_size=151936,
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
    ),
    "vae": dict(),  # AutoencoderKLFlux2's defaults are FLUX.2's VAE
    "transformer": dict(
        in_channels=128,
        num_layers=5,
        num_single_layers=20,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=7680,
        timestep_guidance_channels=256,
        axes_dims_rope=(32, 32, 32, 32),
    ),
}
