"""Where the test data lives: the read-only ``shared/`` folder and the repo's own ``tests/fixtures``."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# /work/shared on the build machines; a checkout may instead sit beside shared/.
SHARED = next((p for p in (Path("/work/shared"), REPO.parent / "shared") if p.is_dir()), Path("/work/shared"))
MODEL_CONFIGS = SHARED / "model-configs"
QWEN3_8B_CONFIG = MODEL_CONFIGS / "Qwen" / "Qwen3-8B" / "config.json"
H100_CAPTURE = SHARED / "fixtures" / "nvidia" / "h100-80gb-hbm3"
H100_UUID = "GPU-d772cfa7-b213-5aff-beb9-abaa615bb009"  # the GPU of that capture

FIXTURES = REPO / "tests" / "fixtures"
CAPTURES = FIXTURES / "captures"
ENGINE_CONFIGS = FIXTURES / "engine" / "model-configs"

MIB = 1 << 20
