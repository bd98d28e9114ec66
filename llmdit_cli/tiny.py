"""Tiny Z-Image-architecture components built from configs.

They run the stock diffusers code on CPU in well under a second per image. The shipped `demo`
model, the test suite and the benchmarks all build from these one definitions.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# Qwen3-style chat template, reduced to what the toolkit uses. With enable_thinking=false the
# generation prompt gets the empty think block, as Qwen3's own template does.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)

TRANSFORMER = dict(
    all_patch_size=(2,),
    all_f_patch_size=(1,),
    in_channels=16,
    dim=32,
    n_layers=2,
    n_refiner_layers=1,
    n_heads=2,
    n_kv_heads=2,
    norm_eps=1e-5,
    qk_norm=True,
    cap_feat_dim=32,
    rope_theta=256.0,
    t_scale=1000.0,
    axes_dims=[8, 4, 4],
    axes_lens=[256, 32, 32],
)
TEXT_ENCODER = dict(
    vocab_size=264,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
)
VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=[8, 16, 16, 16],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=1,
    latent_channels=16,
    norm_num_groups=8,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)


def byte_tokenizer(corpus: list[str] | None = None, vocab_size: int = 512, extra: tuple[str, ...] = (), **named: str):
    """A Qwen2Tokenizer over the 256 byte symbols plus the Qwen chat specials and `extra` special
    tokens (`named` ones, e.g. image_token=..., become tokenizer attributes); with a `corpus`, also
    byte-level BPE merges learned from it (whole words become single tokens, as in real vocabularies)."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {sym: i for i, sym in enumerate(alphabet)}
    for tok in [*SPECIAL_TOKENS, *extra]:
        vocab[tok] = len(vocab)
    merges: list = []
    if corpus:
        learned, merges = _learn_merges(corpus, vocab_size)
        for tok in learned:
            vocab.setdefault(tok, len(vocab))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=[*SPECIAL_TOKENS[1:], *extra],
        **named,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _learn_merges(corpus: list[str], vocab_size: int) -> tuple[list[str], list]:
    """BPE merges learned from `corpus` with the Qwen2 pre-tokenisation (a leading space joins the word)."""
    import json

    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    ordered = sorted(model["vocab"], key=model["vocab"].get)
    return ordered, [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]


def build_pipeline(
    seed: int = 0, transformer: dict | None = None, text_encoder: dict | None = None, vae: dict | None = None
):
    """A ZImagePipeline with seeded random weights; the dicts override the tiny configs."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    te = Qwen3ForCausalLM(Qwen3Config(**{**TEXT_ENCODER, **(text_encoder or {})})).eval()
    dit = ZImageTransformer2DModel(**{**TRANSFORMER, **(transformer or {})}).eval()
    # Random init leaves the final projection at zero in diffusers; perturb every weight so
    # tests see real signal through all layers.
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ae = AutoencoderKL(**{**VAE, **(vae or {})}).eval()
    sched = FlowMatchEulerDiscreteScheduler(**SCHEDULER)
    return ZImagePipeline(scheduler=sched, vae=ae, text_encoder=te, tokenizer=byte_tokenizer(), transformer=dit)


def save_pipeline(pipe, folder: str | Path) -> Path:
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


VL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]


def build_qwen3_vl(seed: int = 0, hidden_size: int = 64):
    """A tiny Qwen3-VL (Qwen3VLForConditionalGeneration) with random weights, its byte tokenizer
    (the chat specials plus the vision tokens) and a PIL image processor (no torchvision): the
    model `--vl-model` loads in tests, with the demo text encoder's hidden size."""
    import torch
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tokenizer = byte_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:] + VL_TOKENS})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in VL_TOKENS}
    heads = 4
    pairs = hidden_size // heads // 2  # rotary pairs per head, split over time, height and width
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=2,
            num_attention_heads=heads,
            num_key_value_heads=2,
            head_dim=hidden_size // heads,
            max_position_embeddings=1024,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [pairs - 2 * (pairs // 4), pairs // 4, pairs // 4],
                "mrope_interleaved": True,
            },
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=hidden_size,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|image_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    processor = Qwen2VLImageProcessorPil(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=32 * 32,
        max_pixels=128 * 128,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return model, tokenizer, processor


def save_qwen3_vl(folder: str | Path, seed: int = 0, hidden_size: int = 64) -> Path:
    folder = Path(folder)
    model, tokenizer, processor = build_qwen3_vl(seed, hidden_size)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# Qwen-Image-Layered and Qwen-Image-Edit-Plus (DESIGN.md §4): a Qwen2.5-VL text encoder, the
# Wan-style AutoencoderKLQwenImage and the QwenImage MMDiT. The VAE downsamples 16x (the real one
# 8x) so the ~1024² images Edit-Plus encodes stay cheap; every multiple of 32 still packs into 2x2
# patches.
QWEN_VL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
QWEN_HIDDEN = 32
QWEN_TRANSFORMER = dict(
    patch_size=2,
    in_channels=64,
    out_channels=16,
    num_layers=2,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=QWEN_HIDDEN,
    axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
)
QWEN_VAE = dict(
    base_dim=2, z_dim=16, dim_mult=[1, 1, 1, 1, 1], num_res_blocks=0, temperal_downsample=[False, True, True, True]
)
# The real models' scheduler config.
QWEN_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=0.9,
    base_image_seq_len=256,
    max_image_seq_len=8192,
    shift_terminal=0.02,
    time_shift_type="exponential",
)


def qwen_vl_text_encoder(tokenizer, seed: int = 0):
    """A tiny Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration) for the Qwen-Image pipelines."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_VL_TOKENS}
    heads = 2
    pairs = QWEN_HIDDEN // heads // 2  # rotary pairs per head, split over time, height and width
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=QWEN_HIDDEN,
            intermediate_size=2 * QWEN_HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=heads,
            num_key_value_heads=1,
            max_position_embeddings=4096,
            bos_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [pairs - 2 * (pairs // 3), pairs // 3, pairs // 3],
            },
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=QWEN_HIDDEN,
            window_size=112,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_qwen_image(kind: str, seed: int = 0):
    """A tiny QwenImageLayeredPipeline (`kind` 'layered': RGBA VAE, layer RoPE and the RGB/RGBA
    timestep condition) or QwenImageEditPlusPipeline ('edit'), with seeded random weights.

    Seeded random weights condition weakly, so a few are scaled up after the init: the q/k-norm
    gains, the output projection and the VAE encoder's last conv. Then prompt, negative prompt,
    true CFG and the input image visibly change the output (DESIGN.md §4)."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPlusPipeline,
        QwenImageLayeredPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import PaddleOCRVLProcessor, Qwen2VLImageProcessorPil

    if kind not in ("layered", "edit"):
        raise ValueError(f"kind {kind!r}: 'layered' or 'edit'")
    layered = kind == "layered"
    tokenizer = byte_tokenizer(extra=QWEN_VL_TOKENS, image_token="<|image_pad|>", video_token="<|video_pad|>")
    text_encoder = qwen_vl_text_encoder(tokenizer, seed)
    torch.manual_seed(seed + 1)
    dit = QwenImageTransformer2DModel(
        **QWEN_TRANSFORMER, use_additional_t_cond=layered, use_layer3d_rope=layered
    ).eval()
    vae = AutoencoderKLQwenImage(**QWEN_VAE, input_channels=4 if layered else 3).eval()
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if "norm_q" in name or "norm_k" in name or "norm_added" in name:
                p.mul_(4.0)
            elif name.startswith("proj_out"):
                p.add_(torch.randn_like(p) * 0.5)
        vae.encoder.conv_out.weight.mul_(4.0)
    # PaddleOCRVLProcessor, not Qwen2VLProcessor: the latter cannot be built without torchvision
    # (DESIGN.md §4); this one expands <|image_pad|> the same way for images.
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=56 * 56, max_pixels=112 * 112
    )
    processor = PaddleOCRVLProcessor(image_processor=image_processor, tokenizer=tokenizer)
    pipeline_class = QwenImageLayeredPipeline if layered else QwenImageEditPlusPipeline
    return pipeline_class(
        scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_SCHEDULER),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=processor,
        transformer=dit,
    )


def save_qwen_image(kind: str, folder: str | Path, seed: int = 0) -> Path:
    """`build_qwen_image(kind, seed)` saved as a diffusers folder that `from_pretrained` reloads."""
    return save_pipeline(build_qwen_image(kind, seed), folder)


def build_controlnet(transformer_config: dict, seed: int = 0, control_in_dim: int = 33):
    """A ZImageControlNetModel with seeded random weights that fits a Z-Image transformer of
    `transformer_config`: control blocks at every other layer, one refiner block, and 33 control
    channels (the control image, a mask and the masked image: what inpainting needs, and a plain
    control image is zero-padded to it, as diffusers does)."""
    import torch
    from diffusers import ZImageControlNetModel

    c = transformer_config
    torch.manual_seed(seed)
    net = ZImageControlNetModel(
        control_layers_places=list(range(0, c["n_layers"], 2)),
        control_refiner_layers_places=[0],
        control_in_dim=control_in_dim,
        add_control_noise_refiner="control_noise_refiner",
        all_patch_size=tuple(c["all_patch_size"]),
        all_f_patch_size=tuple(c["all_f_patch_size"]),
        dim=c["dim"],
        n_refiner_layers=c["n_refiner_layers"],
        n_heads=c["n_heads"],
        n_kv_heads=c["n_kv_heads"],
        norm_eps=c["norm_eps"],
        qk_norm=c["qk_norm"],
    ).eval()
    with torch.no_grad():  # as for the transformer: signal through every layer
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net


def save_controlnet(folder: str | Path, transformer_config: dict, seed: int = 0, control_in_dim: int = 33) -> Path:
    folder = Path(folder)
    build_controlnet(transformer_config, seed, control_in_dim).save_pretrained(folder, safe_serialization=True)
    return folder
