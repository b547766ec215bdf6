"""Speed of the performance twin: wall time of one ``bench`` simulation (target: 1,000 prompts <= 1 s,
10,000 prompts <= 5 s on the 2-core development machine).

Run: ``.venv/bin/python benchmarks/simulate.py [--repeat 3]``. Each row simulates one load end to end
(workload generation, the engine loop, bench's metrics) on a plan computed once beforehand (the plan
itself is ``benchmarks/plan.py``'s business). ``wall s`` is the best of ``--repeat`` runs; ``steps`` is
the number of engine steps simulated (pure-decode stretches are fast-forwarded, so wall time follows
the number of scheduling events, not of steps). No network: models from the bundled catalog.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from planner_service.api import default_resolver  # noqa: E402
from planner_service.engine.bench import PlannedEngine, simulate  # noqa: E402
from planner_service.engine.bench_models import LoadOptions  # noqa: E402
from planner_service.engine.models import HardwareOptions, ModelOptions, PlanRequest  # noqa: E402
from planner_service.engine.plan import build_plan  # noqa: E402

SCENARIOS = [
    ("Qwen3-8B, 1x H100", "Qwen/Qwen3-8B", "H100", 1, "burst 1024/128 (bench default)", {}),
    ("Qwen3-8B, 1x H100", "Qwen/Qwen3-8B", "H100", 1, "Poisson 20 req/s, 1024/512 +-50%",
     {"request_rate": 20, "random_output_len": 512, "random_range_ratio": 0.5}),
    ("Qwen3-8B, 1x H100", "Qwen/Qwen3-8B", "H100", 1, "closed loop, 64 in flight", {"max_concurrency": 64}),
    ("Qwen3-30B-A3B, 1x H100", "Qwen/Qwen3-30B-A3B", "H100", 1, "sharegpt burst", {"dataset_name": "sharegpt"}),
    ("Llama-3.1-70B, 4x H100", "meta-llama/Llama-3.1-70B-Instruct", "H100", 4, "gamma 0.5, 8 req/s",
     {"request_rate": 8, "burstiness": 0.5}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"# bench simulation speed ({os.cpu_count()} cores, {cpu}, Python {platform.python_version()})\n")
    print(f"| {'deployment':<24} | {'load':<34} | {'prompts':>7} | {'steps':>7} | {'wall s':>7} | {'target s':>8} |")
    print(f"|{'-' * 26}|{'-' * 36}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 10}|")
    failures = 0
    for label, model, gpu, tp, load_label, load_args in SCENARIOS:
        request = PlanRequest(model=ModelOptions(model=model),
                              hardware=HardwareOptions(gpu=gpu, tensor_parallel_size=tp, num_gpus=tp))
        source = default_resolver().resolve(request.model)
        engine = PlannedEngine.from_plan(source, request, build_plan(source, request))
        for prompts, target in ((1000, 1.0), (10000, 5.0)):
            load = LoadOptions(num_prompts=prompts, **load_args)
            best, steps = float("inf"), 0
            for _ in range(args.repeat):
                started = time.perf_counter()
                result = simulate(engine, load)
                best = min(best, time.perf_counter() - started)
                steps = result.engine_steps
            failures += best > target
            print(f"| {label:<24} | {load_label:<34} | {prompts:>7,} | {steps:>7,} | {best:>7.2f} | {target:>8.1f} |")
    print(f"\n{'all within target' if not failures else f'{failures} over target'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
