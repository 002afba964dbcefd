"""Tiny Hugging Face models and tokenizers built from configs, shared by the tests (nothing is downloaded).

Every model here has 32x32 images cut into 8x8 patches (:data:`TINY_VISION`)
and hidden size 32 with 2 layers; weights are random and seeded. The
tokenizers are written in-process: a byte-level BPE trained on
:data:`CORPUS` and a CLIP vocabulary of :data:`CLIP_WORDS`. torch, tokenizers
and transformers are imported by the builders, so importing this module
costs nothing where they are missing (the tests that use it skip).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import xai_bridge as xb

#: The vision tower every tiny model shares: ViT / DeiT / CLIP / BLIP vision configs take these keywords.
TINY_VISION: dict[str, Any] = dict(
    image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
)
#: The preprocessing of the tiny vision towers (their processors' defaults at 32x32).
TINY_VIT_PREPROCESS = xb.Preprocess(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

CORPUS = [
    "a red cat near a green tree",
    "a blue dog near a white car",
    "a red dog near a white tree",
    "a blue cat near a green car",
    "a red cat near a white car",
    "a blue dog near a green tree",
    "a bird on a branch",
    "a woman wearing glasses",
    "a group of horses standing on grass",
]
#: The words of the CLIP vocabulary :func:`write_clip_vocab` writes.
CLIP_WORDS = ["a", "photo", "of", "cat", "dog", "car", "tree"]


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def build_tokenizer(special_template: bool = True):
    """A byte-level BPE tokenizer (vocab 300) trained on CORPUS; ``<s> $A </s>`` added when ``special_template``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    if special_template:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def build_bart(vocab_size: int, seed: int = 0):
    """A 2-layer BART (d_model 32), seeded, in eval mode."""
    from transformers import BartConfig, BartForConditionalGeneration

    _seed(seed)
    config = BartConfig(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
    )
    return BartForConditionalGeneration(config).eval()


def _gpt2_config(vocab_size: int, **extra: Any) -> Any:
    """A 2-layer GPT-2 configuration (n_embd 32, 64 positions), with ``extra`` keywords (cross-attention...)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        **extra,
    )


def build_gpt2(vocab_size: int, seed: int = 0):
    """A 2-layer GPT-2 (n_embd 32), seeded, in eval mode."""
    from transformers import GPT2LMHeadModel

    _seed(seed)
    return GPT2LMHeadModel(_gpt2_config(vocab_size)).eval()


def build_vit_gpt2(vocab_size: int, seed: int = 0):
    """A VisionEncoderDecoderModel: 2-layer ViT (32x32 images, 8x8 patches) + 2-layer GPT-2 with cross-attention."""
    from transformers import VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    _seed(seed)
    vit = ViTConfig(**TINY_VISION)
    gpt = _gpt2_config(vocab_size, add_cross_attention=True, is_decoder=True)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(vit, gpt)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 0, 1, 2
    return VisionEncoderDecoderModel(config=config).eval()


def tiny_blip_config(vocab_size: int, initializer_range: float = 0.5) -> Any:
    """A tiny BLIP configuration (32x32 images, hidden 32, 2 layers), shared by the captioning and VQA tests."""
    from transformers import BlipConfig

    text = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        sep_token_id=2,
        encoder_hidden_size=32,
        initializer_range=initializer_range,
    )
    vision = {**TINY_VISION, "initializer_range": initializer_range}
    return BlipConfig(text_config=text, vision_config=vision)


def build_blip(vocab_size: int, seed: int = 0):
    """A tiny BlipForConditionalGeneration, seeded."""
    from transformers import BlipForConditionalGeneration

    _seed(seed)
    return BlipForConditionalGeneration(tiny_blip_config(vocab_size)).eval()


def build_blip_vqa(vocab_size: int, seed: int = 0, initializer_range: float = 0.5):
    """A tiny BlipForQuestionAnswering (the captioning tests' BLIP configuration), seeded."""
    from transformers import BlipForQuestionAnswering

    _seed(seed)
    return BlipForQuestionAnswering(tiny_blip_config(vocab_size, initializer_range)).eval()


def build_llava(vocab_size: int, seed: int = 0):
    """A tiny LlavaForConditionalGeneration: 2-layer CLIP vision tower (32x32, 8x8 patches) + 2-layer Llama."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    _seed(seed)
    vision = CLIPVisionConfig(**TINY_VISION)
    text = LlamaConfig(
        vocab_size=vocab_size + 1,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=vocab_size)
    return LlavaForConditionalGeneration(config).eval()


def write_clip_vocab(folder: Path) -> tuple[Path, Path]:
    """A byte-level-free CLIP BPE vocabulary covering CLIP_WORDS, merged letter by letter."""
    vocab: dict[str, int] = {}
    for c in sorted(set("".join(CLIP_WORDS))):
        vocab[c] = len(vocab)
    for c in sorted(set("".join(CLIP_WORDS))):
        vocab[c + "</w>"] = len(vocab)
    merges: list[str] = []
    for word in CLIP_WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            merge = f"{parts[0]} {parts[1]}"
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(parts[0] + parts[1], len(vocab))
            parts = [parts[0] + parts[1], *parts[2:]]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder / "vocab.json", folder / "merges.txt"


def tiny_text_config(tok: Any) -> dict[str, Any]:
    """A 2-layer CLIP / SigLIP text tower (hidden 32, 16 positions) for ``tok``'s vocabulary and special tokens."""
    return dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def saved_hf_resnet(folder: Path, num_labels: int, **config: Any) -> Any:
    """A tiny Hugging Face ResNet classifier (2 stages, 8/16 channels) with a ConvNext processor (32 px), seeded,
    saved to ``folder`` with ``save_pretrained`` and loaded back as a user's model is; ``config`` goes to its config."""
    import transformers

    _seed(0)
    cfg = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=num_labels, **config
    )
    transformers.ResNetForImageClassification(cfg).eval().save_pretrained(folder)
    transformers.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(folder)
    return transformers.ResNetForImageClassification.from_pretrained(folder).eval()
