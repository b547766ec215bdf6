"""Calibrated models of what vLLM measures rather than computes: activation peak, non-torch, CUDA graphs.

vLLM profiles these at startup (internals §1.4-§1.6). The planner predicts them from the stated inputs
only (never from max_model_len, which the V1 profile run does not touch):

* activation peak = max(sampler peak, forward peak). The profile run samples ``min(MNBT, MNS)`` rows of
  full-vocabulary logits with top-k/top-p (fp32 logits, probabilities, a sort with int64 indices...):
  the bytes per logit are a profile field. 0.10-0.20 (V1 runner): 38.5, from the cases that print the
  activation peak (Llama-3.1-8B and Qwen3-0.6B on H100 at MNS 1024: 38.9 and 38.4 B/logit; gpt-oss-120b's
  -2.14 GiB KV implies 38.1; Qwen2.5-14B-AWQ and Qwen3-30B-AWQ at MNS 256 imply 33-36). 0.21+ (Model
  Runner V2): 28.7, from the one printed breakdown (Qwen2.5-7B-AWQ, 1.04 GiB at 256 x 152064).
  Environments with the FlashInfer top-k/top-p sampler (no sort) use far less; see the Qwen2-7B A100
  cases in benchmarks/accuracy.py. The forward peak of an MNBT-token batch (no attention: the profile skips it) is the
  largest live set of one layer: hidden states, fused QKV, gate/up + activation or the fused-MoE caches.
* non-torch: CUDA/NCCL growth after the baseline snapshot; 0.13 GiB on one GPU (printed by the H100
  cases), plus custom all-reduce / NCCL buffers under TP (the Qwen2-7B TP2 runs show ~0.15 GiB more).
* CUDA graphs: a per-layer size from the profile plus the TP all-reduce buffers captured per graph.
  0.10-0.20 only log the capture (after the KV cache is sized): about 18 MiB per decoder layer for the
  default capture sizes (0.50 GiB for 28 layers in the Qwen2-7B logs). 0.21+ subtract an *estimate*
  instead; the two 0.21+ cases imply a much smaller one (Qwen2.5-7B-AWQ on 0.26 closes with ~0 GiB
  subtracted although capture took 0.48 GiB; Qwen3-8B on an RTX 5090 implies ~0.2 GiB): 6 MiB per layer.
"""

from __future__ import annotations

from planner_service.engine.architecture import ModelArchitecture

MIB = 1 << 20
GIB = 1 << 30

NON_TORCH_BASE_BYTES = int(0.13 * GIB)
NON_TORCH_TP_BYTES = int(0.15 * GIB)
NON_TORCH_PP_BYTES = int(0.05 * GIB)
CUDA_GRAPH_TP_BYTES = int(0.15 * GIB)
FORWARD_FIXED_BYTES = 64 * MIB  # cuBLAS / attention-metadata workspaces of the dummy run


def sampler_peak_bytes(
    arch: ModelArchitecture, max_num_batched_tokens: int, max_num_seqs: int, bytes_per_logit: float
) -> int:
    rows = min(max_num_batched_tokens, max_num_seqs)
    return int(bytes_per_logit * rows * arch.vocab_size)


def forward_peak_bytes(
    arch: ModelArchitecture, tp: int, max_num_batched_tokens: int, dtype_bytes: int, expert_parallel: bool
) -> int:
    """Largest per-layer live set of one MNBT-token forward pass on one rank."""
    h = arch.hidden_size
    tokens = max_num_batched_tokens
    qkv = (arch.num_attention_heads + 2 * max(1, arch.num_kv_heads // tp)) * arch.head_dim // tp
    per_token = 3 * h + qkv  # residual + hidden + normed input, and the fused QKV output
    if arch.intermediate_size:
        per_token = max(per_token, 3 * h + 3 * arch.intermediate_size // tp)  # gate_up (2I) + act (I)
    if arch.moe is not None:
        moe = arch.moe
        inter = moe.moe_intermediate_size if expert_parallel and tp > 1 else moe.moe_intermediate_size // tp
        # fused_moe caches: (M, topk, 2I), (M, topk, I), (M, topk, H), plus router logits.
        per_token = max(per_token, 3 * h + moe.experts_per_token * (3 * inter + h) + moe.num_experts)
    return tokens * per_token * dtype_bytes + FORWARD_FIXED_BYTES


def activation_peak_bytes(
    arch: ModelArchitecture,
    tp: int,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    dtype_bytes: int,
    last_stage: bool,
    sampler_bytes_per_logit: float,
    expert_parallel: bool = False,
) -> int:
    forward = forward_peak_bytes(arch, tp, max_num_batched_tokens, dtype_bytes, expert_parallel)
    if not last_stage:  # only the last PP stage computes logits and samples
        return forward
    return max(forward, sampler_peak_bytes(arch, max_num_batched_tokens, max_num_seqs, sampler_bytes_per_logit))


def non_torch_bytes(tp: int, pp: int) -> int:
    return NON_TORCH_BASE_BYTES + (NON_TORCH_TP_BYTES if tp > 1 else 0) + (NON_TORCH_PP_BYTES if pp > 1 else 0)


def cuda_graph_bytes(layers_on_rank: int, tp: int, enforce_eager: bool, bytes_per_layer: int) -> int:
    if enforce_eager:
        return 0
    return layers_on_rank * bytes_per_layer + (CUDA_GRAPH_TP_BYTES if tp > 1 else 0)
