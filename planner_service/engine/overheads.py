"""Calibrated models of what vLLM measures rather than computes: activation peak, non-torch, CUDA graphs.

vLLM profiles these at startup (internals §1.4-§1.6). The planner predicts them from the stated inputs
only (never from max_model_len, which the V1 profile run does not touch):

* activation peak = max(sampler peak, forward peak). The profile run samples ``min(MNBT, MNS)`` rows of
  full-vocabulary logits with top-k = vocab-1, top-p 0.9 and temperature 0.5 (``_dummy_sampler_run``);
  its bytes per logit depend on the sampler (``VersionProfile.sampler_bytes_per_logit``):
  - V1 runner, PyTorch top-k/top-p (``apply_top_k_top_p``): at the sort, the caller's bf16 logits (2),
    the sampler's fp32 copy (4), the sorted values (4) and int64 indices (8), and the sort's own
    temporaries (int64 iota 8, radix double buffers 4 + 8) = 38 B; calibrated 38.5 on the cases that
    print it (Llama-3.1-8B and Qwen3-0.6B on H100 at MNS 1024: 38.9 and 38.4 B/logit; gpt-oss-120b's
    -2.14 GiB KV implies 38.1).
  - V1 runner, FlashInfer (``flashinfer_sample`` -> ``top_k_top_p_sampling_from_logits``): bf16 logits
    (2) + fp32 copy (4) + top-k-masked logits (4) + softmax probabilities (4) = 14 B, no sort. The
    default from 0.21; in 0.10-0.11 whenever the ``flashinfer`` package imports (the Qwen2-7B A100 runs
    in benchmarks/accuracy.py behave so); opt-in in 0.12-0.20.
  - Model Runner V2: 28.7, from the one printed breakdown (Qwen2.5-7B-AWQ on 0.26, 1.04 GiB at
    256 x 152064).
  The forward peak of an MNBT-token batch (no attention: the profile skips it) is the largest live set
  of one layer: hidden states, fused QKV, gate/up + activation or the fused-MoE caches. It is
  calibrated on compiled runs: there the profile run is torch.compile's first call at MNBT tokens, so
  Inductor compiles the graph and benchmarks its generated Triton kernels (cloning the buffers each
  kernel mutates, plus Triton's cache-flush buffer) inside the profiling window. With
  ``--enforce-eager`` nothing is compiled and vLLM's fused in-place custom ops run instead: the 0.10.x
  startup logs behind issue 14 (not in the repository) show the eager peak at about half the compiled one
  at the same MNBT, so the forward part (not the sampler, which is never compiled) is halved.
* non-torch: CUDA/NCCL growth after the baseline snapshot; 0.13 GiB on one GPU (printed by the H100
  cases), plus custom all-reduce / NCCL buffers under TP (the Qwen2-7B TP2 runs show ~0.15 GiB more).
  vLLM 0.10.x takes the baseline snapshot *before* initialising NCCL (``Worker.init_device``; 0.11 moves
  it after), so the communicators' buffers count too (``nvlink``: the user's --interconnect, else a
  data-centre GPU type with NVLink). Over NVLink NCCL opens many channels with
  device-memory buffers per peer: the PR #10511 sanity check (same before-NCCL accounting, an 80 GB
  NVLink GPU) printed 1.79 GiB more non-torch memory at TP2 than at TP1, i.e. 1.64 GiB beyond the TP
  term; Qwen3-235B-FP8 at TP4 on H100 (~0.10.0, excluded: version not stated) sits 2.16 GiB below the
  twin without it. Over PCIe NCCL uses few channels or host memory (the 0.10.1 TP2 runs: ~0.12 GiB).
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
NCCL_INIT_NVLINK_BYTES = int(1.64 * GIB)  # 0.10.x only: NCCL buffers of an NVLink TP group (see above)
EAGER_FORWARD_FRACTION = 0.5  # --enforce-eager: forward peak / compiled forward peak (0.10.x logs)
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
    enforce_eager: bool = False,
) -> int:
    forward = forward_peak_bytes(arch, tp, max_num_batched_tokens, dtype_bytes, expert_parallel)
    if enforce_eager:  # no torch.compile in the profiling window
        forward = int(forward * EAGER_FORWARD_FRACTION)
    if not last_stage:  # only the last PP stage computes logits and samples
        return forward
    return max(forward, sampler_peak_bytes(arch, max_num_batched_tokens, max_num_seqs, sampler_bytes_per_logit))


def non_torch_bytes(tp: int, pp: int, nccl_buffers_counted: bool = False, nvlink: bool = False) -> int:
    """Non-torch growth after the baseline; ``nccl_buffers_counted``: the profile's baseline precedes NCCL."""
    total = NON_TORCH_BASE_BYTES + (NON_TORCH_TP_BYTES if tp > 1 else 0) + (NON_TORCH_PP_BYTES if pp > 1 else 0)
    if nccl_buffers_counted and nvlink and (tp > 1 or pp > 1):  # a PyNccl communicator made at init
        total += NCCL_INIT_NVLINK_BYTES
    return total


def cuda_graph_bytes(layers_on_rank: int, tp: int, enforce_eager: bool, bytes_per_layer: int) -> int:
    if enforce_eager:
        return 0
    return layers_on_rank * bytes_per_layer + (CUDA_GRAPH_TP_BYTES if tp > 1 else 0)
