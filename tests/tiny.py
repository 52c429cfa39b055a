"""Tiny random Hugging Face causal LMs with a character tokenizer, for fast CPU tests."""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import Gemma3TextConfig, Gemma3ForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from comprexit import Backbone

KINDS = ("llama", "gemma3")


def char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for char in string.printable[:95] + "\n":
        vocab.setdefault(char, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_model(kind: str, vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    if kind == "llama":
        config = LlamaConfig(**common)
        return LlamaForCausalLM(config)
    if kind in ("gemma3", "gemma3-hybrid"):
        # "gemma3-hybrid" mixes sliding-window and full-attention layers, as Gemma-3-270M does
        # (3 layers are too few for Gemma-3's default pattern, which makes them all sliding)
        hybrid = ["sliding_attention", "full_attention", "sliding_attention"] if kind == "gemma3-hybrid" else None
        config = Gemma3TextConfig(**common, head_dim=8, sliding_window=16, layer_types=hybrid)
        return Gemma3ForCausalLM(config)
    raise ValueError(kind)


def tiny_backbone(kind: str, seed: int = 0) -> Backbone:
    tokenizer = char_tokenizer()
    model = tiny_model(kind, len(tokenizer), seed)
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 0
    return Backbone(model.float(), tokenizer, name=f"tiny-{kind}")


def varied_backbone(kind: str, seed: int = 1) -> Backbone:
    """A tiny backbone whose matrices are drawn anew (normal, std 0.02), so that greedy answers vary
    from token to token: the default draw repeats one character, which hides many decoding errors."""
    backbone = tiny_backbone(kind)
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in backbone.model.parameters():
            if parameter.ndim == 2:
                parameter.normal_(0, 0.02)
    return backbone


def save_tiny_backbone(kind: str, folder: Path) -> Path:
    """Write a tiny model + tokenizer folder, loadable with `Backbone.load(folder)`."""
    backbone = tiny_backbone(kind)
    backbone.model.save_pretrained(folder)
    backbone.tokenizer.save_pretrained(folder)
    return folder


def cli(capsys, *argv) -> tuple[int, str, str]:
    """`comprexit ARGV` in this process: its exit code, stdout and stderr (captured by pytest's `capsys`)."""
    from comprexit.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def lever_sft_config(tmp_path: Path, qa_file: Path, init: Path, **changes):
    """A few SFT steps on the tiny model from `init` weights (a lever added over them with `compressor=`)."""
    from comprexit.training.config import TrainConfig

    values = dict(phase="sft", data=[str(qa_file)], output_dir=str(tmp_path / "sft"), lr=3e-2, batch_size=4,
                  max_steps=3, init=str(init), validation_permille=200, val_questions=4, eval_every=100,
                  save_every=100, log_every=1, warmup_ratio=0.0, mixed_precision="no")
    values.update(changes)
    return TrainConfig(**values)


def saved_without_field(compressor, folder: Path, field: str) -> dict:
    """Save `compressor` into `folder` with `field` gone from its config, as every folder written before the
    field was (the shipped one included); returns the saved metadata."""
    import json

    from comprexit.saving import CONFIG_FILE

    compressor.save_pretrained(folder)
    saved = json.loads((folder / CONFIG_FILE).read_text())
    del saved["config"][field]
    (folder / CONFIG_FILE).write_text(json.dumps(saved))
    return saved
