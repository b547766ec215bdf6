"""The human-readable plan report (Rich): feasibility, per-GPU memory bar, settings, speed, fixes, command.

Rendering never needs a terminal: pass a ``Console`` (tests record one; the CLI gives a fixed width when
stdout is not a TTY so piped output wraps the same everywhere).
"""

from __future__ import annotations

import io
import sys

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from planner_service.engine.models import GIB, PerGpuMemory, PlanResponse, Range

BAR_WIDTH = 60
PIPE_WIDTH = 100

# (label, field of PerGpuMemory or None for "unused", colour, bar character)
_SEGMENTS = (
    ("weights", "weights_bytes", "blue", "█"),
    ("activation peak", "activation_peak_bytes", "magenta", "█"),
    ("non-torch", "non_torch_bytes", "yellow", "█"),
    ("CUDA graphs", "cuda_graph_bytes", "cyan", "█"),
    ("KV cache", "kv_cache_bytes", "green", "█"),
    ("unused", None, "bright_black", "░"),
)


def make_console(file=None) -> Console:
    out = file or sys.stdout
    width = None if out.isatty() else PIPE_WIDTH
    return Console(file=out, width=width, soft_wrap=False)


def gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def _segment_bytes(mem: PerGpuMemory) -> list[tuple[str, int, str, str]]:
    parts = []
    used = 0
    for label, field, colour, char in _SEGMENTS:
        if field is None:
            size = max(0, mem.total_bytes - used)
        else:
            size = max(0, getattr(mem, field))
        used += size
        parts.append((label, size, colour, char))
    return parts


def memory_bar(mem: PerGpuMemory, width: int = BAR_WIDTH) -> Text:
    """A bar of the GPU's total memory; a '|' marks the vLLM budget (total x utilization)."""
    parts = _segment_bytes(mem)
    scale = max(mem.total_bytes, sum(size for _, size, _, _ in parts), 1)
    cells: list[tuple[str, str]] = []
    for _, size, colour, char in parts:
        cells += [(char, colour)] * round(size / scale * width)
    cells = (cells + [("░", "bright_black")] * width)[:width]
    budget_cell = min(width - 1, round(mem.budget_bytes / scale * width))
    cells[budget_cell] = ("|", "bold white")
    bar = Text()
    for char, colour in cells:
        bar.append(char, style=colour)
    return bar


def _memory_section(response: PlanResponse) -> Group:
    mem = response.feasibility.per_gpu
    legend = Table.grid(padding=(0, 2))
    legend.add_column()
    legend.add_column(justify="right")
    for label, size, colour, char in _segment_bytes(mem):
        legend.add_row(Text(f"{char} {label}", style=colour), gib(size))
    legend.add_row(Text("| budget", style="bold"), gib(mem.budget_bytes))
    legend.add_row("total", gib(mem.total_bytes))
    if mem.kv_cache_bytes < 0:
        legend.add_row(Text("KV cache (short by)", style="red"), gib(-mem.kv_cache_bytes))
    title = Text(f"Per-GPU memory ({response.gpu.name}, worst rank)", style="bold")
    return Group(title, memory_bar(mem), legend)


def _feasibility_section(response: PlanResponse) -> Group:
    f = response.feasibility
    if f.fits:
        head = Text(f"✓ vLLM {response.vllm_version} will start (OOM risk: {f.oom_risk.value})", style="bold green")
    else:
        head = Text(f"✗ vLLM {response.vllm_version} will not start", style="bold red")
    lines: list = [head]
    if f.error:
        lines.append(Text(f.error, style="red"))
    kv = Table.grid(padding=(0, 2))
    kv.add_column()
    kv.add_column(justify="right")
    kv.add_row("KV cache tokens", f"{f.kv_cache_tokens:,}")
    kv.add_row("GPU blocks × block size", f"{f.num_gpu_blocks:,} × {f.block_size}")
    kv.add_row(f"max concurrency at {f.max_concurrency_at_tokens:,} tokens", f"{f.max_concurrency:.2f}x")
    if f.fits:
        kv.add_row("max context at target concurrency", f"{f.max_context_at_concurrency:,}")
    if response.config.data_parallel_size > 1:
        kv.add_row("data-parallel replicas (KV figures are per replica)", str(response.config.data_parallel_size))
    if f.estimated_max_model_len is not None:
        kv.add_row("estimated max model len", f"{f.estimated_max_model_len:,}")
    lines.append(kv)
    return Group(*lines)


def _config_table(response: PlanResponse, explain: bool) -> Table:
    table = Table(title="vLLM configuration", title_justify="left", expand=False)
    table.add_column("setting")
    table.add_column("value", justify="right")
    table.add_column("source")
    if explain:
        table.add_column("why", overflow="fold")
    explained = {e.setting: e for e in response.explanations}
    for setting, value in response.config.model_dump(mode="json").items():
        if value is None:
            continue
        note = explained.get(setting)
        row = [setting, str(value), note.source if note else ""]
        if explain:
            row.append(note.reason if note else "")
        table.add_row(*row)
    if explain:  # explanations of settings that are not vLLM config fields (e.g. the GPU count)
        fields = set(type(response.config).model_fields)
        for note in response.explanations:
            if note.setting not in fields:
                table.add_row(note.setting, note.value, note.source, note.reason)
    return table


def _range_row(table: Table, label: str, r: Range, fmt: str) -> None:
    table.add_row(label, format(r.low, fmt), format(r.expected, fmt), format(r.high, fmt))


def _performance_table(response: PlanResponse, explain: bool) -> Table | Group | Text:
    perf = response.performance
    if perf is None:
        return Text("Performance: not estimated (the plan does not start, or the GPU's speed is unknown).", style="dim")
    table = Table(title=f"Performance at concurrency {perf.concurrency} (roofline estimate)", title_justify="left")
    table.add_column("metric")
    for column in ("low", "expected", "high"):
        table.add_column(column, justify="right")
    _range_row(table, "decode tok/s per request", perf.decode_tokens_per_second_per_request, ",.1f")
    _range_row(table, "decode tok/s aggregate", perf.decode_tokens_per_second_aggregate, ",.0f")
    _range_row(table, "prefill tok/s", perf.prefill_tokens_per_second, ",.0f")
    _range_row(table, "TTFT (s)", perf.ttft_seconds, ".3f")
    _range_row(table, "ITL (ms)", Range(low=perf.itl_seconds.low * 1e3, expected=perf.itl_seconds.expected * 1e3,
                                          high=perf.itl_seconds.high * 1e3), ".2f")
    table.caption = f"memory-bound up to a decode batch of ~{perf.memory_bound_until_concurrency:,}"
    table.caption_justify = "left"
    if explain and perf.assumptions:  # full width below the table, not squeezed into its caption
        notes = Text("Assumptions:\n", style="bold")
        notes.append("\n".join(f"• {note}" for note in perf.assumptions), style="dim")
        return Group(table, notes)
    return table


def _warnings_and_fixes(response: PlanResponse) -> list:
    parts: list = []
    for warning in response.feasibility.warnings:
        parts.append(Text(f"⚠ {warning}", style="yellow"))
    if response.fixes:
        fixes = Table(title="Fixes (verified by re-running the twin)", title_justify="left")
        fixes.add_column("change")
        fixes.add_column("KV tokens", justify="right")
        fixes.add_column("max conc.", justify="right")
        fixes.add_column("headroom", justify="right")
        for fix in response.fixes:
            changes = ", ".join(f"{k}={v}" for k, v in fix.changes.items())
            fixes.add_row(f"{fix.description} ({changes})", f"{fix.kv_cache_tokens:,}", f"{fix.max_concurrency:.2f}x",
                          gib(fix.headroom_bytes))
        parts.append(fixes)
    return parts


def render_report(response: PlanResponse, *, explain: bool = False, console: Console | None = None) -> None:
    console = console or make_console()
    model = response.model
    header = (
        f"{model.model}  ({model.architecture}, {model.num_params / 1e9:.2f} B params, {model.checkpoint_dtype}"
        + (f", {model.quantization}" if model.quantization else "")
        + (" what-if" if model.quantization_what_if else "")
        + f")\n{response.gpu.num_gpus} × {response.gpu.name} · vLLM {response.vllm_version} "
        f"(profile {response.version_profile})"
    )
    console.print(Panel(header, title="vllm-planner", expand=False))
    console.print(_feasibility_section(response))
    console.print()
    console.print(_memory_section(response))
    console.print()
    console.print(_config_table(response, explain))
    console.print(_performance_table(response, explain))
    for part in _warnings_and_fixes(response):
        console.print(part)
    if response.artifacts is not None:
        console.print(Text("Launch command", style="bold"))
        # soft_wrap keeps the command copy-pasteable (no hard line breaks inserted).
        console.print(response.artifacts.serve_command, soft_wrap=True, markup=False, highlight=False)


def report_text(response: PlanResponse, *, explain: bool = False, width: int = PIPE_WIDTH) -> str:
    """The report as plain text (no colour codes), e.g. for tests and logs."""
    buffer = io.StringIO()
    render_report(response, explain=explain, console=Console(file=buffer, width=width, color_system=None))
    return buffer.getvalue()
