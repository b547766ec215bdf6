"""Command-line flags <-> PlanRequest, shared by ``plan`` and ``generate``.

Every flag defaults to None (argparse) so that "not given" is distinguishable from any value: only
the flags a user actually passed override the profile, and everything unset stays None in the
request, where the planner recommends a value and says so. Value parsing mirrors ``vllm serve``
(``32k``/``128K`` lengths, ``20G``/``20g`` byte counts) so a user can paste their own flags.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Callable

from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.models import GIB, MAX_MEMORY_BYTES_PER_GPU, BatchingMode, Interconnect, VllmInstall
from planner_service.engine.profile_yaml import Profile, load_profile
from vllm_planner.bounded import MAX_PROFILE_BYTES, InputError, read_text

_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

# (section, request field, argparse dest): flags that copy a value straight into the request.
_DIRECT_FLAGS: list[tuple[str, str, str]] = [
    ("model", "model", "model"),
    ("model", "revision", "revision"),
    ("model", "trust_remote_code", "trust_remote_code"),
    ("model", "dtype", "dtype"),
    ("model", "quantization", "quantization"),
    ("model", "kv_cache_dtype", "kv_cache_dtype"),
    ("model", "max_model_len", "max_model_len"),
    ("model", "params_b", "params_b"),
    ("hardware", "gpu", "gpu"),
    ("hardware", "num_gpus", "gpus"),
    ("hardware", "vram_gb", "vram_gb"),
    ("hardware", "interconnect", "interconnect"),
    ("hardware", "tensor_parallel_size", "tensor_parallel_size"),
    ("hardware", "pipeline_parallel_size", "pipeline_parallel_size"),
    ("hardware", "data_parallel_size", "data_parallel_size"),
    ("hardware", "enable_expert_parallel", "enable_expert_parallel"),
    ("workload", "prompt_tokens", "prompt_tokens"),
    ("workload", "gen_tokens", "gen_tokens"),
    ("workload", "concurrency", "concurrency"),
    ("workload", "batching_mode", "batching_mode"),
    ("policy", "gpu_memory_utilization", "gpu_memory_utilization"),
    ("policy", "overhead_gb", "overhead_gb"),
    ("policy", "fragmentation_factor", "fragmentation_factor"),
    ("policy", "headroom_gb", "headroom_gb"),
    ("engine", "vllm_version", "vllm_version"),
    ("engine", "max_num_seqs", "max_num_seqs"),
    ("engine", "max_num_batched_tokens", "max_num_batched_tokens"),
    ("engine", "enable_prefix_caching", "enable_prefix_caching"),
    ("engine", "enforce_eager", "enforce_eager"),
    ("engine", "kv_cache_memory_bytes", "kv_cache_memory_bytes"),
    ("engine", "block_size", "block_size"),
    ("engine", "vllm_install", "vllm_install"),
]


# Request fields set by other flags than the _DIRECT_FLAGS (and the profile's ``outputs:`` section).
_OTHER_FIELD_FLAGS = {
    "hardware.free_memory_bytes": "--free-memory-gb",
    "outputs.json": "--json",
    "outputs.explain": "--explain",
    "outputs.emit": "--emit",
    "outputs.output_dir": "--output-dir",
}
# Dotted request field -> the flag that sets it: how errors name a field to a command-line user.
FIELD_FLAGS: dict[str, str] = {
    **{f"{section}.{field}": "--" + dest.replace("_", "-") for section, field, dest in _DIRECT_FLAGS},
    **_OTHER_FIELD_FLAGS,
}
_FLAG_DESTS = {**{f"{section}.{field}": dest for section, field, dest in _DIRECT_FLAGS},
               "hardware.free_memory_bytes": "free_memory_gb", "outputs.json": "json", "outputs.explain": "explain",
               "outputs.emit": "emit", "outputs.output_dir": "output_dir"}
MAX_GIB = MAX_MEMORY_BYTES_PER_GPU / GIB


def request_field_namer(args: argparse.Namespace) -> Callable[[str], str]:
    """How errors name a request field for this command line: the flag when the user passed it (or
    when no profile could have set it), else ``PROFILE: section.field``."""
    profile = getattr(args, "profile", None)

    def name(field: str) -> str:
        if field.startswith("-"):  # already a flag
            return field
        key = "model.model" if field == "model" else field  # the whole model section missing: no --model
        flag = FIELD_FLAGS.get(key)
        passed = flag is not None and getattr(args, _FLAG_DESTS[key], None) is not None
        if flag is not None and (passed or not profile):
            return flag
        return f"{profile}: {field}" if profile else field

    name.flags = FIELD_FLAGS  # type: ignore[attr-defined]  (for field paths a message mentions in passing)
    return name


def parse_human_int(text: str) -> int:
    """vLLM's ``human_readable_int``: ``1k``=1000, ``1K``=1024, ``25.6k``=25600; no decimals with K/M/G/T."""
    value = text.strip()
    if not value:
        raise argparse.ArgumentTypeError("empty number")
    suffix = value[-1]
    try:
        if suffix in _DECIMAL:
            number = float(value[:-1]) * _DECIMAL[suffix]
            if number != int(number):
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
            return int(number)
        if suffix in _BINARY:
            return int(value[:-1]) * _BINARY[suffix]
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an integer (suffixes: k/m/g/t = 10^3.., K/M/G/T = 2^10..; no decimals with K/M/G/T)"
        ) from None


def parse_positive_human_int(text: str) -> int:
    """``parse_human_int`` that refuses 0 and negatives (token and byte counts)."""
    value = parse_human_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def parse_max_model_len(text: str) -> int | str:
    """``auto`` or ``-1`` -> 'auto' (vLLM's auto-fit); otherwise a positive human-readable int."""
    if text.strip().lower() in ("auto", "-1"):
        return "auto"
    value = parse_human_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of tokens, or -1/auto (vLLM auto-fit)")
    return value


def parse_int_at_least(text: str, low: int) -> int:
    """A plain int >= ``low``."""
    try:
        value = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}")
    return value


def parse_positive_int(text: str) -> int:
    """A plain int >= 1 (GPU counts, parallel sizes, token counts, block size)."""
    return parse_int_at_least(text, 1)


def _finite_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    # float() accepts 'nan'/'inf', which would slip past every range check downstream.
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def parse_positive_float(text: str) -> float:
    """A finite float > 0 (sizes in GiB, parameter counts, the utilization fraction)."""
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def parse_non_negative_float(text: str) -> float:
    """A finite float >= 0 (overheads, headroom, the fragmentation fraction)."""
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


MAX_SECONDS = 86_400.0


def parse_seconds(text: str) -> float:
    """A duration: finite, > 0 and at most a day (thread and socket timeouts overflow on huge values)."""
    value = parse_positive_float(text)
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_SECONDS:g} seconds")
    return value


def parse_memory_gib(text: str) -> float:
    """GiB of GPU memory: finite, >= 0 and no more than any GPU has (the request models' bound)."""
    value = parse_non_negative_float(text)
    if value > MAX_GIB:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_GIB:g} GiB, more than any GPU has")
    return value


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """Every request flag, grouped like the request and the YAML profile."""
    model = parser.add_argument_group("model")
    model.add_argument("--model", "-m", default=None, help="HF repo id, local folder or catalog name.")
    model.add_argument("--revision", default=None, help="Model revision (branch, tag or commit).")
    model.add_argument("--trust-remote-code", action="store_true", default=None,
                       help="Pass --trust-remote-code to vLLM (the planner never runs model code).")
    model.add_argument("--dtype", default=None,
                       choices=["auto", "bfloat16", "float16", "float32", "half", "float", "bf16", "fp16", "fp32"],
                       help="vLLM --dtype (bf16/fp16/fp32: the vllm-wizard spellings).")
    model.add_argument("--quantization", "-q", default=None,
                       help="vLLM --quantization (default: from the checkpoint; none = no quantization). awq, gptq "
                            "or int8 on an unquantized checkpoint is sized as that quantized checkpoint (what-if).")
    model.add_argument("--kv-cache-dtype", default=None,
                       help="vLLM --kv-cache-dtype (default: recommended; fp16/bf16/fp8_e4m3fn accepted).")
    model.add_argument("--max-model-len", type=parse_max_model_len, default=None, metavar="N|auto",
                       help="Context length: an int, 32k/128K, or auto (vLLM auto-fit).")
    model.add_argument("--params-b", type=parse_positive_float, default=None,
                       help="Override the parameter count (billions).")

    hw = parser.add_argument_group("hardware")
    hw.add_argument("--gpu", default=None,
                    help="GPU name (catalog name, nvidia-smi name or alias), or auto: this host's GPUs with their "
                         "real free memory (the default when neither --gpu nor --vram-gb is given).")
    hw.add_argument("--gpus", type=parse_positive_int, default=None, metavar="N", help="Number of GPUs available.")
    hw.add_argument("--vram-gb", type=parse_positive_float, default=None,
                    help="CUDA total memory per GPU, GiB (unknown GPUs).")
    hw.add_argument("--interconnect", default=None, choices=[*(i.value for i in Interconnect), "unknown"],
                    help="GPU-to-GPU link (unknown: the catalog's usual link for the GPU).")
    hw.add_argument("--tensor-parallel-size", "--tp", type=parse_positive_int, default=None,
                    dest="tensor_parallel_size")
    hw.add_argument("--pipeline-parallel-size", "--pp", type=parse_positive_int, default=None,
                    dest="pipeline_parallel_size")
    hw.add_argument("--data-parallel-size", "--dp", type=parse_positive_int, default=None, dest="data_parallel_size",
                    help="vLLM --data-parallel-size: replicas of the TP x PP engine (TP x PP x DP GPUs).")
    hw.add_argument("--enable-expert-parallel", action="store_true", default=None)
    hw.add_argument("--free-memory-gb", type=parse_memory_gib, default=None,
                    help="Free memory per GPU at startup (GiB), when other processes hold memory.")

    wl = parser.add_argument_group("workload")
    wl.add_argument("--prompt-tokens", type=parse_positive_int, default=None)
    wl.add_argument("--gen-tokens", type=parse_positive_int, default=None)
    wl.add_argument("--concurrency", "-c", type=parse_positive_int, default=None)
    wl.add_argument("--batching-mode", default=None, choices=[m.value for m in BatchingMode])

    pol = parser.add_argument_group("policy")
    pol.add_argument("--gpu-memory-utilization", type=parse_positive_float, default=None)
    pol.add_argument("--overhead-gb", type=parse_non_negative_float, default=None,
                     help="Extra non-KV GiB per GPU to assume.")
    pol.add_argument("--fragmentation-factor", type=parse_non_negative_float, default=None,
                     help="Fraction of KV memory assumed unusable (0-1), or vllm-wizard's multiplier form (>= 1: "
                          "1.15 means the KV cache needs 15%% more, i.e. 1 - 1/1.15 unusable).")
    pol.add_argument("--headroom-gb", type=parse_non_negative_float, default=None,
                     help="GiB per GPU to keep free when recommending.")

    eng = parser.add_argument_group("engine")
    eng.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    eng.add_argument("--max-num-seqs", type=parse_positive_int, default=None)
    eng.add_argument("--max-num-batched-tokens", type=parse_positive_human_int, default=None)
    eng.add_argument("--enforce-eager", action="store_true", default=None)
    eng.add_argument("--kv-cache-memory-bytes", type=parse_positive_human_int, default=None, metavar="BYTES",
                     help="Fixed KV cache size per GPU (20G = 20 GiB, 20g = 20e9 bytes).")
    eng.add_argument("--vllm-version", default=None, help="Target vLLM version X.Y[.Z] (default: current profile).")
    eng.add_argument("--block-size", type=parse_positive_int, default=None)
    eng.add_argument("--vllm-install", default=None, choices=[i.value for i in VllmInstall],
                     help="How vLLM is installed: pip (default) or image (vllm/vllm-openai, bundles FlashInfer); "
                          "on 0.10-0.11 the image's FlashInfer sampler leaves more KV cache.")

    out = parser.add_argument_group("output")
    out.add_argument("--profile", "-p", default=None, metavar="FILE",
                     help="YAML profile (this tool's or a vllm-wizard one); flags override it.")

    det = parser.add_argument_group("GPU detection (--gpu auto)")
    det.add_argument("--agent", default=None, metavar="HOST:PORT",
                     help="Plan against this gpu-agent's live inventory instead of this host's GPUs.")
    det.add_argument("--agent-token-file", type=Path, default=None, metavar="PATH",
                     help="File holding the agent's bearer token.")
    det.add_argument("--agent-tls-ca-file", type=Path, default=None, metavar="PEM",
                     help="CA that signed the agent's certificate (TLS to the agent).")
    det.add_argument("--replay", type=Path, default=None, metavar="DIR",
                     help="Plan against a recorded capture folder (as `detect --replay`), through the same "
                          "code path as live NVML / nvidia-smi.")
    det.add_argument("--replay-variant", choices=("idle", "busy"), default="idle", help="Capture variant.")
    parser.set_defaults(field_namer=request_field_namer)


def overrides_from_args(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The request values the user passed as flags, by section (unset flags are absent)."""
    sections: dict[str, dict[str, Any]] = {}
    for section, field, dest in _DIRECT_FLAGS:
        value = getattr(args, dest, None)
        if value is not None:
            sections.setdefault(section, {})[field] = value
    free_gb = getattr(args, "free_memory_gb", None)
    if free_gb is not None:
        sections.setdefault("hardware", {})["free_memory_bytes"] = int(free_gb * GIB)
    return sections


def output_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI output flags the user passed (``--json``, ``--explain``, ``--emit``, ``--output-dir``)."""
    values: dict[str, Any] = {}
    for dest, key in (("json", "json"), ("explain", "explain"), ("emit", "emit"), ("output_dir", "output_dir")):
        value = getattr(args, dest, None)
        if value is not None:
            values[key] = value
    return values


def read_profile_text(path: str | None) -> str:
    """The profile file's text ('' when no profile is given): bounded, a regular file, UTF-8."""
    if path is None:
        return ""
    try:
        return read_text(path, max_bytes=MAX_PROFILE_BYTES, what=f"--profile {path}")
    except InputError as exc:
        raise InvalidRequestError(str(exc)) from None


def profile_from_args(args: argparse.Namespace) -> Profile:
    """Profile file (if any) + flags -> a validated Profile; errors name the dotted field."""
    overrides = overrides_from_args(args)
    outputs = output_overrides(args)
    if outputs:
        overrides["outputs"] = outputs
    path = getattr(args, "profile", None)
    return load_profile(read_profile_text(path), overrides, what=f"--profile {path}" if path else "profile")

