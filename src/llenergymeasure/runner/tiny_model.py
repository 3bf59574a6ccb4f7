"""A tiny random-initialised causal LM with a tokenizer trained on shipped text.

It runs the real PyTorch backend end to end on a CPU in seconds, with no download:
demos and tests point their configs at it. Same arguments, same files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)
CORPUS_RESOURCE = "tokenizer-corpus.txt"
# transformers 5 writes its own class name, which transformers 4 (in some engine images)
# cannot resolve; both versions load the fast-tokenizer class name.
PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
HEAD_DIM = 32
MAX_POSITIONS = 2048


@dataclass(frozen=True)
class TinyModelSpec:
    seed: int = 0
    vocab_size: int = 2048
    hidden_size: int = 256
    layers: int = 4

    def __post_init__(self) -> None:
        if self.hidden_size < HEAD_DIM or self.hidden_size % HEAD_DIM:
            raise ValueError(
                f"hidden_size must be a multiple of {HEAD_DIM}, got {self.hidden_size}"
            )
        if self.vocab_size < 300:
            # the byte-level alphabet (256) plus the special tokens must fit
            raise ValueError(f"vocab_size must be at least 300, got {self.vocab_size}")
        if self.layers < 1:
            raise ValueError(f"layers must be at least 1, got {self.layers}")


@dataclass(frozen=True)
class TinyModelInfo:
    path: Path
    parameters: int
    vocab_size: int


def corpus_lines() -> list[str]:
    """The English text shipped in the package that the tokenizer learns from."""
    text = resources.files("llenergymeasure").joinpath("data", CORPUS_RESOURCE).read_text("utf-8")
    return [line for line in text.splitlines() if line.strip()]


def train_tokenizer(vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer that prepends BOS, like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_lines(), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    return tokenizer


def create_tiny_model(out_dir: Path, spec: TinyModelSpec | None = None) -> TinyModelInfo:
    """Write a Hugging Face model directory that AutoModelForCausalLM/AutoTokenizer load."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    spec = spec or TinyModelSpec()
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(spec.vocab_size),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=MAX_POSITIONS,
    )
    config = LlamaConfig(
        vocab_size=len(hf_tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.hidden_size * 4,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.hidden_size // HEAD_DIM,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=hf_tokenizer.bos_token_id,
        eos_token_id=hf_tokenizer.eos_token_id,
        pad_token_id=hf_tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    hf_tokenizer.save_pretrained(out_dir)
    _make_tokenizer_config_portable(out_dir / "tokenizer_config.json")
    return TinyModelInfo(
        path=out_dir,
        parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=config.vocab_size,
    )


def _make_tokenizer_config_portable(path: Path) -> None:
    settings = json.loads(path.read_text(encoding="utf-8"))
    settings["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
