"""PyTorch / transformers backend: AutoModelForCausalLM on CUDA when present, else CPU.

This module imports torch and transformers at the top: it is only imported, through
`load_backend`, when a config's backend is `pytorch`.

Timing is measured, not estimated: a logits processor stamps the clock at every
decoding step, when the next-token logits exist (after a device synchronize on CUDA,
so that queued kernels are not mistaken for finished ones). Token i of a request is
timed at step i: TTFT is step 0, the request's latency is its last token's step,
and inter-token latencies are the gaps between its steps.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

import tokenizers
import torch
import transformers
from packaging.version import Version
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from llenergymeasure.config.models import DecoderConfig, ExperimentConfig, PyTorchConfig
from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner.backends.base import BatchOutcome, RequestRecord

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
# transformers renamed `torch_dtype` to `dtype` in 4.56; images may carry either side.
DTYPE_KWARG = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


class StepTimer(LogitsProcessor):
    """Records `time.perf_counter()` at each decoding step, when its logits exist."""

    def __init__(self, synchronize: Callable[[], None] | None = None) -> None:
        self._synchronize = synchronize
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._synchronize is not None:
            self._synchronize()
        self.stamps.append(time.perf_counter())
        return scores


def count_output_tokens(generated: torch.Tensor, eos_ids: Sequence[int]) -> list[int]:
    """Per row of generated ids: tokens up to and including the first EOS, else all.

    After a row's EOS, generate fills it with padding until the batch ends: excluded.
    """
    is_eos = torch.isin(generated, torch.tensor(list(eos_ids), device=generated.device))
    first_eos = is_eos.int().argmax(dim=1)
    full_length = torch.full_like(first_eos, generated.shape[1])
    counts = torch.where(is_eos.any(dim=1), first_eos + 1, full_length)
    return [int(n) for n in counts.tolist()]


def request_record(
    start: float, step_stamps: Sequence[float], input_tokens: int, output_tokens: int
) -> RequestRecord:
    """A request's timings from the batch start and the stamps of its own steps."""
    own_steps = step_stamps[: max(output_tokens, 1)]
    return RequestRecord(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_s=own_steps[-1] - start,
        ttft_s=own_steps[0] - start,
        itl_s=[later - earlier for earlier, later in itertools.pairwise(own_steps)],
    )


def generation_settings(
    decoder: DecoderConfig, section: PyTorchConfig, pad_id: int, eos_ids: Sequence[int]
) -> dict[str, Any]:
    """GenerationConfig arguments: greedy when temperature is 0, else seeded sampling."""
    settings: dict[str, Any] = {
        "max_new_tokens": decoder.max_new_tokens,
        "do_sample": not decoder.greedy,
        "pad_token_id": pad_id,
        "eos_token_id": list(eos_ids) or None,
        "use_cache": section.use_cache,
    }
    if decoder.min_new_tokens is not None:
        settings["min_new_tokens"] = decoder.min_new_tokens
    if not decoder.greedy:
        # top_k=0 is passed as is: it disables top-k, where None would take the model's default
        settings.update(temperature=decoder.temperature, top_p=decoder.top_p, top_k=decoder.top_k)
    return settings


class LoadedPyTorch:
    """A transformers causal LM and its tokenizer, ready to generate."""

    # request_record: from the start of the request's batch (its generate call) to its
    # first token; every request of a batch arrives at once.
    ttft_definition = "batch_start"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: str):
        self.device = device
        self._model: PreTrainedModel | None = model
        self._tokenizer = tokenizer
        self.eos_ids = _eos_ids(model, tokenizer)
        self.context_length: int | None = getattr(model.config, "max_position_embeddings", None)

    def generate(self, prompts: list[str], config: ExperimentConfig) -> BatchOutcome:
        section = config.pytorch or PyTorchConfig()
        generation_config = GenerationConfig(
            **generation_settings(
                config.decoder, section, self._tokenizer.pad_token_id, self.eos_ids
            )
        )
        torch.manual_seed(config.decoder.seed)
        outcome = BatchOutcome(records=[])
        for start in range(0, len(prompts), section.batch_size):
            batch = prompts[start : start + section.batch_size]
            outcome.records.extend(self._generate_batch(batch, generation_config))
        outcome.warnings.extend(self._context_warnings(outcome.records, config.decoder))
        return outcome

    def _generate_batch(
        self, batch: list[str], generation_config: GenerationConfig
    ) -> list[RequestRecord]:
        model = self._require_model()
        timer = StepTimer(torch.cuda.synchronize if self.device == "cuda" else None)
        start = time.perf_counter()
        encoded = self._tokenizer(batch, return_tensors="pt", padding=True).to(self.device)
        sequences = model.generate(
            **encoded,
            generation_config=generation_config,
            logits_processor=LogitsProcessorList([timer]),
        )
        generated = sequences[:, encoded["input_ids"].shape[1] :]
        input_counts = encoded["attention_mask"].sum(dim=1).tolist()
        output_counts = count_output_tokens(generated, self.eos_ids)
        return [
            request_record(start, timer.stamps, int(n_in), n_out)
            for n_in, n_out in zip(input_counts, output_counts, strict=True)
        ]

    def _context_warnings(self, records: list[RequestRecord], decoder: DecoderConfig) -> list[str]:
        if self.context_length is None:
            return []
        longest = max((r.input_tokens for r in records), default=0)
        if longest + decoder.max_new_tokens <= self.context_length:
            return []
        return [
            f"longest prompt ({longest} tokens) + max_new_tokens ({decoder.max_new_tokens}) "
            f"exceeds the model's context of {self.context_length} tokens"
        ]

    def _require_model(self) -> PreTrainedModel:
        if self._model is None:
            raise ExperimentError("the PyTorch model was unloaded: load it again to generate")
        return self._model

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def unload(self) -> None:
        self._model = None
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def versions(self) -> dict[str, str]:
        found = {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        }
        if torch.version.cuda:
            found["torch_cuda"] = torch.version.cuda
        return found


def load(config: ExperimentConfig) -> LoadedPyTorch:
    """Load model and tokenizer from a local path or a hub id, on CUDA when available."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    section = config.pytorch or PyTorchConfig()
    tokenizer = _load_tokenizer(config)
    model = AutoModelForCausalLM.from_pretrained(
        config.model.path, **_model_kwargs(config, section)
    )
    model.to(device).eval()
    if section.torch_compile:
        model.forward = torch.compile(model.forward)
    return LoadedPyTorch(model, tokenizer, device)


def _model_kwargs(config: ExperimentConfig, section: PyTorchConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "revision": config.model.revision,
        "trust_remote_code": config.model.trust_remote_code,
        DTYPE_KWARG: TORCH_DTYPES[config.precision],
    }
    if section.attn_implementation is not None:
        kwargs["attn_implementation"] = section.attn_implementation
    return kwargs


def _load_tokenizer(config: ExperimentConfig) -> PreTrainedTokenizerBase:
    # left padding keeps every prompt's last token at the edge where generation starts
    tokenizer = AutoTokenizer.from_pretrained(
        config.model.path,
        revision=config.model.revision,
        trust_remote_code=config.model.trust_remote_code,
        padding_side="left",
    )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ExperimentError(f"tokenizer of {config.model.path} has neither a pad nor an EOS")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a request: the model's generation EOS ids and the tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return sorted(i for i in ids if i is not None)
