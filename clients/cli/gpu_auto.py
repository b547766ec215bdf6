"""``--gpu auto``: plan for the GPUs the user has, read the way the gpu-agent reads them.

The inventory comes from this host (the agent's NVML backend, nvidia-smi as fallback), from a running
gpu-agent (``--agent HOST:PORT``, its live inventory over ``AgentClient``) or from a recorded capture
(``--replay DIR``, the agent's replay backends: the same parsing and conversion as live NVML / nvidia-smi).
The request then carries what vLLM will see: the catalog GPU for its speed figures, the measured CUDA
total (``vram_gb``), the real free memory (``free_memory_bytes``, the smallest of the group) and the GPU
count. No GPU named and none found is a user error (exit 2), never a silent default GPU.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from types import SimpleNamespace

from gpu_agent.inventory import HostInventory, MigMode
from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.gpus import find_gpu
from planner_service.engine.models import GIB, Explanation, PlanResponse
from planner_service.engine.profile_yaml import Profile
from vllm_planner.bounded import InputError, file_label, read_token

AUTO = "auto"
DETECT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Device:
    """One CUDA device the host offers: a whole GPU, or a MIG slice of one."""

    name: str  # as nvidia-smi / NVML name it (MIG: "<parent> MIG <profile>")
    catalog_name: str  # the product name to look up in the catalog
    cuda_total_bytes: int
    free_bytes: int | None


@dataclass(frozen=True)
class Detected:
    """The GPUs a plan was made for, and where they were read."""

    name: str
    count: int
    cuda_total_bytes: int
    free_bytes: int | None
    where: str
    others: tuple[str, ...]  # devices of other kinds that were not planned for

    def explanation(self) -> Explanation:
        free = f", free {self.free_bytes / GIB:.2f} GiB (least free of the group)" if self.free_bytes is not None else ""
        rest = f"; also present, not planned for: {', '.join(self.others)}" if self.others else ""
        mig = "; a MIG slice: speed figures are the whole GPU's (an upper bound)" if " MIG " in self.name else ""
        return Explanation(setting="gpu", value=self.name, source="derived",
                           reason=f"detected {self.count} x {self.name} ({self.where}): CUDA total "
                                  f"{self.cuda_total_bytes / GIB:.2f} GiB{free}{rest}{mig}")


def wants_auto(profile: Profile, args: argparse.Namespace) -> bool:
    """True when the GPUs must be detected: --gpu auto, an agent or capture named, or no GPU given at all."""
    hw = profile.hardware
    explicit = getattr(args, "agent", None) is not None or getattr(args, "replay", None) is not None
    if hw.gpu and hw.gpu.strip().lower() != AUTO and explicit:
        source = "--agent" if getattr(args, "agent", None) else "--replay"
        raise InvalidRequestError.for_field(
            "hardware.gpu", f"{source} plans for the GPUs it reports; drop --gpu {hw.gpu} (or drop {source})")
    return explicit or (hw.gpu or "").strip().lower() == AUTO or (hw.gpu is None and hw.vram_gb is None)


def read_inventory(args: argparse.Namespace) -> tuple[HostInventory, str]:
    """The inventory --agent / --replay / this host reports, and a few words on where it came from."""
    from clients.cli.detect_cmd import _read_local

    if getattr(args, "agent", None):
        from clients.sdk.agent_client import AgentClient

        token = None
        if args.agent_token_file is not None:
            try:  # bounded, a regular file, not empty (an empty file is not "no token")
                token = read_token(args.agent_token_file, what=f"--agent-token-file {file_label(args.agent_token_file)}")
            except InputError as exc:
                raise InvalidRequestError(str(exc)) from None
        tls = args.agent_tls_ca_file is not None
        with AgentClient(args.agent, timeout_seconds=DETECT_TIMEOUT_SECONDS, token=token, tls=tls,
                         tls_ca_file=args.agent_tls_ca_file) as client:
            inventory = client.get_inventory()
        return inventory, f"gpu-agent {args.agent}, host {inventory.host.hostname}"
    local = SimpleNamespace(replay=getattr(args, "replay", None), replay_variant=getattr(args, "replay_variant", "idle"),
                            replay_source="auto", backend="auto", timeout_seconds=DETECT_TIMEOUT_SECONDS)
    inventory = _read_local(local)
    if local.replay is not None:
        return inventory, f"capture {args.replay}, {inventory.source.value}"
    if inventory.source.value == "none":
        return inventory, f"this host {inventory.host.hostname}"
    return inventory, f"this host {inventory.host.hostname}, {inventory.source.value}"


def devices(inventory: HostInventory) -> list[Device]:
    """Every CUDA device: whole GPUs, and the MIG slices of MIG-enabled GPUs (vLLM runs on a slice)."""
    out: list[Device] = []
    for gpu in inventory.gpus:
        if gpu.error and gpu.memory_cuda_total_bytes is None:
            continue  # a GPU the probe could not read: nothing to plan with
        if gpu.mig_mode == MigMode.ENABLED and gpu.mig_devices:
            for mig in gpu.mig_devices:
                if mig.memory_total_bytes:
                    out.append(Device(f"{gpu.name} MIG {mig.profile}", gpu.name, mig.memory_total_bytes,
                                      mig.memory_free_bytes))
            continue
        total = gpu.memory_cuda_total_bytes or gpu.memory_total_bytes
        if total:
            out.append(Device(gpu.name, gpu.name, total, gpu.memory_free_bytes))
    return out


BUSY_FRACTION = 0.9  # a device with less than this share of its group's most free memory is "in use"


def choose(found: list[Device]) -> tuple[list[Device], list[str]]:
    """The group of identical devices with the most usable memory, and a summary of the rest.

    Devices of one kind (name and CUDA total) form a group; within it, devices other processes hold memory
    on are left out when others are free (a vLLM started on them would be limited by the busiest). The
    group whose free devices offer the most memory together wins (ties: the larger device), so a busy GPU
    loses to a free MIG slice of another, and eight idle H100s win over one.
    """
    kinds = sorted({(d.name, d.cuda_total_bytes) for d in found}, key=lambda k: (-k[1], k[0]))
    best: tuple[tuple[int, int], list[Device], list[Device]] | None = None
    for kind in kinds:
        group = [d for d in found if (d.name, d.cuda_total_bytes) == kind]
        free = [d.free_bytes for d in group if d.free_bytes is not None]
        most = max(free) if free else None
        idle = [d for d in group if most is None or d.free_bytes is None or d.free_bytes >= BUSY_FRACTION * most]
        usable = len(idle) * (min((d.free_bytes for d in idle if d.free_bytes is not None), default=kind[1]))
        if best is None or (usable, kind[1]) > best[0]:
            best = ((usable, kind[1]), idle, [d for d in group if d not in idle])
    assert best is not None
    _, chosen, busy = best
    others = [f"{n} x {name}" for (name, total), n in Counter((d.name, d.cuda_total_bytes) for d in found).items()
              if (name, total) != (chosen[0].name, chosen[0].cuda_total_bytes)]
    if busy:
        least = min(d.free_bytes or 0 for d in busy)
        others.append(f"{len(busy)} x {chosen[0].name} in use (from {least / GIB:.2f} GiB free)")
    return chosen, others


def detect(args: argparse.Namespace) -> Detected:
    inventory, where = read_inventory(args)
    found = devices(inventory)
    if not found:
        reason = f" ({inventory.status_reason})" if inventory.status_reason else ""
        raise InvalidRequestError.for_field(
            "hardware.gpu", f"--gpu auto: no NVIDIA GPU found on {where}{reason}; name the GPU to plan for "
            "(--gpu H100) or its memory (--vram-gb 80)")
    chosen, others = choose(found)
    free = [d.free_bytes for d in chosen if d.free_bytes is not None]
    return Detected(chosen[0].name, len(chosen), chosen[0].cuda_total_bytes, min(free) if free else None, where,
                    tuple(others))


def apply_detected(profile: Profile, detected: Detected, catalog_name: str) -> Profile:
    """The profile with the detected GPUs as its hardware (values the user set explicitly still win)."""
    hw = profile.hardware
    spec = find_gpu(catalog_name)
    if hw.num_gpus is not None and hw.num_gpus > detected.count:
        raise InvalidRequestError.for_field(
            "hardware.num_gpus", f"{hw.num_gpus} GPUs asked, {detected.count} x {detected.name} detected")
    update = {
        "gpu": spec.name if spec is not None else None,
        "vram_gb": detected.cuda_total_bytes / GIB,  # exact: a byte count divided by a power of two
        "num_gpus": hw.num_gpus or detected.count,
        "free_memory_bytes": hw.free_memory_bytes if hw.free_memory_bytes is not None else detected.free_bytes,
    }
    return profile.model_copy(update={"hardware": hw.model_copy(update=update)})


def resolve_auto(profile: Profile, args: argparse.Namespace) -> tuple[Profile, Detected | None]:
    """Detect the GPUs when the profile/flags ask for it; otherwise the profile unchanged."""
    if not wants_auto(profile, args):
        return profile, None
    detected = detect(args)
    catalog = detected.name.split(" MIG ")[0]
    return apply_detected(profile, detected, catalog), detected


def annotate(response: PlanResponse, detected: Detected | None) -> PlanResponse:
    """Say in the plan itself which GPUs it was made for (the gpu explanation)."""
    if detected is None:
        return response
    if detected.others:  # said once the plan exists, so an error stays the only line on stderr
        sys.stderr.write(f"note: planned for {response.gpu.num_gpus} x {detected.name}; also present: "
                         f"{', '.join(detected.others)}\n")
    notes = [detected.explanation() if e.setting == "gpu" else e for e in response.explanations]
    update: dict = {"explanations": notes}
    if " MIG " in detected.name:  # a slice: its own memory, the whole GPU's speed figures (an upper bound)
        profile = detected.name.split(" MIG ", 1)[1]
        update["gpu"] = response.gpu.model_copy(update={"name": f"{response.gpu.name} MIG {profile}"})
    return response.model_copy(update=update)
