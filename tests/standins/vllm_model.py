"""The stand-in model the live vLLM tests serve: the built-in SmolLM2-135M-Instruct GGUF turned into a
float32 Hugging Face folder (weights and tokenizer), which vLLM loads like any model it serves.

Run by the vLLM environment's Python (``make test`` prepares it), which has transformers and gguf::

    .venv-vllm/bin/python tests/standins/vllm_model.py GGUF_FILE OUT_DIR

The folder is written aside and renamed into place, so a folder under OUT_DIR is always whole.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    # every GGUF block unpacked into dense float32 weights (what vLLM computes in on this CPU); a model that
    # keeps GGUF blocks cannot be saved, and a dense one is no longer quantized, so the quantizer goes
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True))
    model.hf_quantizer = None
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and hasattr(config, "quantization_config"):
            del config.quantization_config
    model.is_quantized = False
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: vllm_model.py GGUF_FILE OUT_DIR")
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
