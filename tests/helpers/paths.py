"""Where the test data lives: the read-only ``shared/`` folder and the repo's own ``tests/fixtures``."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# shared/ sits beside the checkout (in CI too); /work/shared on the build machines.
SHARED = next((p for p in (REPO.parent / "shared", Path("/work/shared")) if p.is_dir()), REPO.parent / "shared")
MODEL_CONFIGS = SHARED / "model-configs"
QWEN3_8B_CONFIG = MODEL_CONFIGS / "Qwen" / "Qwen3-8B" / "config.json"
H100_CAPTURE = SHARED / "fixtures" / "nvidia" / "h100-80gb-hbm3"
H100_UUID = "GPU-d772cfa7-b213-5aff-beb9-abaa615bb009"  # the GPU of that capture

FIXTURES = REPO / "tests" / "fixtures"
CAPTURES = FIXTURES / "captures"
ENGINE_CONFIGS = FIXTURES / "engine" / "model-configs"

MIB = 1 << 20
