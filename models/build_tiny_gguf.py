"""Write a tiny llama-architecture GGUF with random weights, for tests.

CI has no model hub, and the agent's tests need a *real* GGUF that llama.cpp loads
and samples from under a JSON grammar. A 2-layer, 64-wide model with a byte-level
vocabulary loads in milliseconds and, being random, acts as a fuzzer: whatever the
grammar allows it will eventually produce, which is what the tests want to exercise.
It knows nothing; never point the gateway at it.

Usage::

    .venv/bin/python models/build_tiny_gguf.py OUT.gguf [--seed N]

or, from tests, ``build_tiny_gguf(path, seed=0)``. The output is deterministic for a
seed (same bytes every run), so a failure reproduces.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gguf
import numpy as np

ARCH = "llama"
N_LAYERS = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
N_CTX_TRAIN = 8192  # rope only, no cost: room for the tests' long generations
RMS_EPS = 1e-5
WEIGHT_STD = 0.02

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2

# A minimal role-tagged template. With it, llama-cpp-python formats chats through its
# Jinja path, which is the path real GGUF chat models take; without one it would fall
# back to its hard-coded "llama-2" format and the tests would exercise a different path.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Three specials and the 256 byte tokens, so every string tokenizes by byte fallback.

    ``token_type`` is not optional: llama.cpp's grammar sampler uses it to tell control
    tokens from text, and without it grammar-constrained sampling aborts the process.
    """
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    types = [
        int(gguf.TokenType.UNKNOWN),
        int(gguf.TokenType.CONTROL),
        int(gguf.TokenType.CONTROL),
    ] + [int(gguf.TokenType.BYTE)] * 256
    return tokens, scores, types


def _tensors(seed: int, n_vocab: int) -> dict[str, np.ndarray]:
    """Random weights in numpy's row-major (out, in) layout, which GGUF stores as ggml's (in, out).

    Small magnitudes keep the logits near uniform: every grammar-allowed byte stays
    likely, so sampling wanders over the whole grammar instead of repeating one path.
    """
    rng = np.random.default_rng(seed)
    head_dim = N_EMBD // N_HEAD

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * WEIGHT_STD).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    out: dict[str, np.ndarray] = {"token_embd.weight": mat(n_vocab, N_EMBD)}
    for i in range(N_LAYERS):
        blk = f"blk.{i}"
        out[f"{blk}.attn_norm.weight"] = ones(N_EMBD)
        out[f"{blk}.attn_q.weight"] = mat(N_HEAD * head_dim, N_EMBD)
        out[f"{blk}.attn_k.weight"] = mat(N_HEAD_KV * head_dim, N_EMBD)
        out[f"{blk}.attn_v.weight"] = mat(N_HEAD_KV * head_dim, N_EMBD)
        out[f"{blk}.attn_output.weight"] = mat(N_EMBD, N_HEAD * head_dim)
        out[f"{blk}.ffn_norm.weight"] = ones(N_EMBD)
        out[f"{blk}.ffn_gate.weight"] = mat(N_FF, N_EMBD)
        out[f"{blk}.ffn_up.weight"] = mat(N_FF, N_EMBD)
        out[f"{blk}.ffn_down.weight"] = mat(N_EMBD, N_FF)
    out["output_norm.weight"] = ones(N_EMBD)
    out["output.weight"] = mat(n_vocab, N_EMBD)
    return out


def build_tiny_gguf(path: Path, seed: int = 0, *, token_types: bool = True) -> Path:
    """Write the tiny model to ``path`` (parents created) and return the path.

    Args:
        path: Output file.
        seed: Seed of the random weights.
        token_types: ``False`` leaves out ``tokenizer.ggml.token_type``. That file loads
            and generates, but llama.cpp *aborts the process* ("Unexpected empty grammar
            stack") on its first grammar-constrained sample: a real crash for the tests
            of the supervised worker, with no test hook in production code.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = _vocabulary()

    writer = gguf.GGUFWriter(str(path), ARCH)
    try:
        writer.add_name("edgetwin-tiny-random")
        writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
        writer.add_context_length(N_CTX_TRAIN)
        writer.add_embedding_length(N_EMBD)
        writer.add_block_count(N_LAYERS)
        writer.add_feed_forward_length(N_FF)
        writer.add_head_count(N_HEAD)
        writer.add_head_count_kv(N_HEAD_KV)
        writer.add_rope_dimension_count(N_EMBD // N_HEAD)
        writer.add_rope_freq_base(10000.0)
        writer.add_layer_norm_rms_eps(RMS_EPS)
        writer.add_vocab_size(len(tokens))

        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        if token_types:
            writer.add_token_types(types)
        writer.add_unk_token_id(UNK_ID)
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOS_ID)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_chat_template(CHAT_TEMPLATE)

        for name, tensor in _tensors(seed, len(tokens)).items():
            writer.add_tensor(name, tensor)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to write the .gguf")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    args = parser.parse_args(argv)
    out = build_tiny_gguf(args.out, seed=args.seed)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
