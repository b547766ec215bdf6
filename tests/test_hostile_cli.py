"""The CLI against hostile input: every answer is an exit code of README's table (0-3) and, for bad input,
exactly one ``error:`` line (one JSON object with ``--json``) naming the flag; never a traceback, a usage
dump, a hang over 10 s or a silent rewrite.

Two parts: a table of the classes issue 13 found (each row is what a user typed, and what must come
back), and hypothesis over the whole argument space (every sub-command, every flag, hostile values, files
that are bombs or not files at all). The fleet commands talk to a real planner process watching two
replayed agents (an 8x H100 host and an A100 host with one GPU in MIG mode); everything runs offline,
from a temporary working directory, so nothing generated can touch the checkout.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from clients.cli.main import build_parser
from clients.cli.main import main as cli_main
from clients.sdk.fleet_client import FleetClient
from reliability.helpers import (
    CAPTURES,
    H100_CAPTURE,
    VENV_BIN,
    agent_process,
    planner_process,
    qwen3_8b_config,
)
from reliability.hostile import (
    HANG_SECONDS,
    assert_cli_answer,
    hostile_captures,
    hostile_deployment_texts,
    hostile_files,
    model_folder,
    offline_scratch,
)

MODEL = "Qwen/Qwen3-8B"
MIG_CAPTURE = CAPTURES / "a100-80gb-mig"
EXAMPLES = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Offline env, a scratch working directory, hostile files and captures, and a planner with two agents."""
    if not H100_CAPTURE.is_dir() or not MIG_CAPTURE.is_dir():
        pytest.skip("replay captures not present")
    base = tmp_path_factory.mktemp("hostile-cli")
    work = base / "cwd"
    patch = offline_scratch(base, work)
    files = hostile_files(base / "profiles")
    deployments = {name: base / "deployments" / f"{name}.yaml" for name in hostile_deployment_texts()}
    (base / "deployments").mkdir()
    for name, text in hostile_deployment_texts().items():
        deployments[name].write_bytes(text)
    captures = hostile_captures(base / "captures", H100_CAPTURE)
    plain_file = base / "plain-file"
    plain_file.write_text("x\n")
    (base / "good-deployments.yaml").write_text(f"deployments:\n  - {{name: chat, model: {MODEL}, replicas: 2}}\n")
    awq0 = model_folder(base / "models", "awq-group-0", {
        **qwen3_8b_config(), "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 0}})
    agents = [agent_process("--replay", str(H100_CAPTURE), "--hostname", "hostile-h100", "--interval-seconds", "1"),
              agent_process("--replay", str(MIG_CAPTURE), "--hostname", "hostile-a100-mig", "--interval-seconds", "1")]
    planner = planner_process("--agents", ",".join(a.address for a in agents), "--hub-timeout-seconds", "2",
                              log_path=base / "planner.log")
    try:
        _wait_for_hosts(planner.address, 2)
        yield {"base": base, "work": work, "files": files, "deployments": deployments, "captures": captures,
               "planner": planner.address, "agent": agents[0].address, "plain_file": plain_file, "awq0": awq0,
               "planner_log": base / "planner.log"}
    finally:
        planner.stop()
        for agent in agents:
            agent.stop()
        patch.undo()


def _wait_for_hosts(address: str, count: int) -> None:
    from clients.sdk.fleet_client import FleetClient
    from reliability.helpers import wait_until

    with FleetClient(address) as client:
        wait_until(lambda: sum(h.state.value == "ready" for h in client.list_hosts()) >= count, 30)


def run(capsys, argv: list[str]) -> tuple[int, str, str, float]:
    capsys.readouterr()
    start = time.monotonic()
    code = cli_main(argv)
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    return code, out, err, elapsed


# ---------------------------------------------------------------------------------------------------
# The classes of issue 13, one row each
# ---------------------------------------------------------------------------------------------------

# (id, argv with {placeholders}, exit code, fragment the error line must contain)
CLASSES = [
    # tracebacks with exit 1
    ("generate-onto-existing-file", ["generate", "-m", MODEL, "--gpu", "H100", "-o", "{plain_file}"], 2, "--output-dir"),
    ("generate-under-a-file", ["generate", "-m", MODEL, "--gpu", "H100", "-o", "{plain_file}/sub"], 2, "--output-dir"),
    ("generate-uncreatable", ["generate", "-m", MODEL, "--gpu", "H100", "-o", "/proc/no-such-dir/x"], 2, "--output-dir"),
    ("generate-too-long", ["generate", "-m", MODEL, "--gpu", "H100", "-o", "{base}/" + "a" * 300], 2, "too long"),
    ("generate-nul-in-profile", ["generate", "--profile", "{nul_output_dir}"], 2, "output_dir"),
    ("profile-not-utf8", ["plan", "--profile", "{files[not-utf8]}"], 2, "not UTF-8"),
    ("deployments-not-utf8", ["fleet", "plan", "{deployments[not-utf8]}", "--planner", "{planner}"], 2, "not UTF-8"),
    ("hosts-min-free-1e308", ["fleet", "hosts", "--min-free-gib", "1e308", "--planner", "{planner}"], 2, "--min-free-gib"),
    ("detect-corrupted-capture", ["detect", "--replay", "{captures[xml-not-utf8]}"], 2, "--replay"),
    ("detect-truncated-capture", ["detect", "--replay", "{captures[xml-truncated]}"], 2, "--replay"),
    ("detect-entity-bomb", ["detect", "--replay", "{captures[xml-entity-bomb]}"], 2, "--replay"),
    # unbounded reads and YAML bombs
    ("profile-billion-laughs", ["plan", "--profile", "{files[billion-laughs]}"], 2, "aliases"),
    ("deployments-billion-laughs", ["fleet", "plan", "{deployments[billion-laughs]}", "--planner", "{planner}"], 2,
     "aliases"),
    ("profile-too-large", ["plan", "--profile", "{files[too-large]}"], 2, "too large"),
    ("profile-dev-zero", ["plan", "--profile", "/dev/zero"], 2, "not a regular file"),
    ("profile-fifo", ["plan", "--profile", "{files[fifo]}"], 2, "not a regular file"),
    ("profile-directory", ["plan", "--profile", "{base}"], 2, "directory"),
    ("token-file-dev-zero", ["fleet", "hosts", "--planner", "{planner}", "--token-file", "/dev/zero"], 2, "--token-file"),
    # errors a user cannot act on
    ("unknown-flag-no-usage-dump", ["plan", "-m", MODEL, "--bogus"], 2, "unrecognized arguments: --bogus"),
    ("bad-choice", ["plan", "-m", MODEL, "--dtype", "int3"], 2, "--dtype"),
    ("missing-model-names-the-flag", ["plan", "--gpu", "H100"], 2, "--model: is required"),
    ("detect-agent-is-a-planner", ["detect", "--agent", "{planner}"], 2, "does not serve"),
    ("bad-ca-file", ["plan", "-m", MODEL, "--gpu", "H100", "--planner", "{planner}", "--tls-ca-file", "{plain_file}"], 2, "no PEM"),
    ("pp-beyond-layers-names-pp", ["plan", "-m", MODEL, "--gpu", "H100", "--pp", "64"], 2, "--pipeline-parallel-size"),
    # silent meaning
    ("empty-gpu", ["plan", "-m", MODEL, "--gpu", ""], 2, "--gpu: empty value"),
    ("empty-emit", ["generate", "-m", MODEL, "--emit", "", "-o", "{base}/g"], 2, "--emit: empty value"),
    ("emit-names-nothing", ["generate", "-m", MODEL, "--emit", ",", "-o", "{base}/g"], 2, "--emit"),
    ("empty-fleet-file", ["fleet", "plan", "", "--planner", "{planner}"], 2, "must not be empty"),
    ("boolean-as-number", ["plan", "--profile", "{files[boolean-as-number]}"], 2, "true/false"),
    ("empty-string-in-profile", ["plan", "--profile", "{files[empty-strings]}"], 2, "must not be empty"),
    ("duplicate-yaml-keys", ["plan", "--profile", "{files[duplicate-keys]}"], 2, "duplicate key"),
    ("awq-group-size-0", ["plan", "-m", "{awq0}", "--gpu", "H100"], 2, "group_size"),
    ("free-memory-above-total", ["plan", "-m", MODEL, "--gpu", "H100", "--free-memory-gb", "1000"], 2,
     "--free-memory-gb"),
    ("replicas-as-boolean", ["fleet", "plan", "{deployments[replicas-bool]}", "--planner", "{planner}"], 2,
     "true/false"),
]


def _fill(argv: list[str], world: dict) -> list[str]:
    nul = world["base"] / "nul-output-dir.yaml"
    if not nul.exists():
        nul.write_text('model: {model: Qwen/Qwen3-8B}\noutputs: {output_dir: "a\\0b"}\n')
    values = {**world, "nul_output_dir": nul}
    return [a.format(**values) if "{" in a else a for a in argv]


@pytest.mark.parametrize("case_id, argv, code, fragment", CLASSES, ids=[c[0] for c in CLASSES])
def test_each_class_of_the_issue_is_answered_the_documented_way(world, capsys, case_id, argv, code, fragment):
    got, out, err, elapsed = run(capsys, _fill(argv, world))
    assert_cli_answer(got, err, case_id)
    assert got == code, f"{case_id}: exit {got}: {err}"
    assert fragment in err, f"{case_id}: {err!r}"
    assert elapsed < HANG_SECONDS, f"{case_id}: {elapsed:.1f}s"


def test_json_errors_are_one_json_object_on_stderr(world, capsys):
    code, out, err, _ = run(capsys, ["plan", "--gpu", "H100", "--json"])
    assert code == 2 and out == ""
    error = json.loads(err)["error"]
    assert error["exit_code"] == 2 and error["violations"][0]["field"] == "--model"
    code, _, err, _ = run(capsys, ["fleet", "hosts", "--json", "--min-free-gib", "x"])
    assert code == 2 and json.loads(err)["error"]["kind"] == "usage"


def test_a_closed_stdout_ends_the_command_quietly(world):
    """``fleet watch --json | head -1``: exit 141 (SIGPIPE's status), nothing on stderr."""
    proc = subprocess.Popen([str(VENV_BIN / "vllm-planner"), "fleet", "watch", "--json", "--planner", world["planner"],
                             "--timeout-seconds", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # what head does after one line
    # The next line the watch writes must meet the closed pipe: a new (unreachable) host is such a line,
    # whatever the two replayed agents did meanwhile.
    with FleetClient(world["planner"]) as fleet:
        fleet.register_agent(f"127.0.0.1:{_unused_port()}", host="closed-stdout-probe")
    try:
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    err = proc.stderr.read().decode()
    assert json.loads(first)["initial"] is True
    assert code == 141 and err == "", (code, err)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_mig_enabled_gpu_is_one_gpu_in_the_hosts_table(world, capsys):
    code, out, _, _ = run(capsys, ["fleet", "hosts", "--planner", world["planner"]])
    assert code == 0
    row = next(line for line in out.splitlines() if "hostile-a100-mig" in line)
    assert "2x NVIDIA A100-SXM4-80GB (1 in MIG mode: 3 instance(s))" in row and "4x" not in row


def test_fleet_plan_shows_every_change_and_strict_refuses_them(world, capsys, tmp_path):
    path = tmp_path / "chat.yaml"
    path.write_text(f"deployments:\n  - {{name: chat, model: {MODEL}, replicas: 2}}\n")
    code, out, _, _ = run(capsys, ["fleet", "plan", str(path), "--planner", world["planner"]])
    assert code == 0 and "context" in out and "KV dtype" in out
    warnings = [line for line in out.splitlines() if line.startswith("warning: chat replica")]
    assert warnings and all("instead of" in w for w in warnings), out
    code, out, _, _ = run(capsys, ["fleet", "plan", str(path), "--planner", world["planner"], "--json"])
    plan = json.loads(out)
    changed = [a for a in plan["assignments"] if a["placement"]["adjustments"]]
    assert changed and all(a["placement"]["max_model_len"] < 40960 or a["placement"]["kv_cache_dtype"] != "auto"
                           for a in changed)
    code, out, _, _ = run(capsys, ["fleet", "plan", str(path), "--planner", world["planner"], "--strict", "--json"])
    strict = json.loads(out)
    assert code == 0 and len(strict["assignments"]) == 2
    for a in strict["assignments"]:
        assert a["placement"]["adjustments"] == [] and a["placement"]["max_model_len"] == 40960
        assert a["placement"]["kv_cache_dtype"] == "auto"


def test_strict_place_refuses_a_lower_utilization_than_asked(world, capsys):
    argv = ["fleet", "place", "--model", MODEL, "--gpu-memory-utilization", "0.99", "--planner", world["planner"], "--json"]
    code, out, _, _ = run(capsys, argv)
    answer = json.loads(out)
    lowered = [p for p in answer["placements"] if p["gpu_memory_utilization"] < 0.985]
    assert all(any("gpu_memory_utilization" in a for a in p["adjustments"]) for p in lowered)
    code, out, _, _ = run(capsys, [*argv, "--strict"])
    strict = json.loads(out)
    assert all(p["gpu_memory_utilization"] >= 0.985 and not p["adjustments"] for p in strict["placements"])
    assert all(r["reason"] != "would_change_request" or "strict" in r["message"] for r in strict["rejections"])


def test_the_recommended_max_num_seqs_is_never_warned_against(world, capsys):
    code, out, _, _ = run(capsys, ["plan", "-m", "meta-llama/Llama-3.1-70B-Instruct", "--gpu", "H100", "--gpus", "2",
                                   "--json"])
    plan = json.loads(out)
    assert not [w for w in plan["feasibility"]["warnings"] if "max_num_seqs" in w], plan["feasibility"]["warnings"]
    assert f"--max-num-seqs {plan['config']['max_num_seqs']}" in plan["artifacts"]["serve_command"]
    code, out, _, _ = run(capsys, ["plan", "-m", "meta-llama/Llama-3.1-70B-Instruct", "--gpu", "H100", "--gpus", "2",
                                   "--max-num-seqs", "1024", "--json"])
    assert [w for w in json.loads(out)["feasibility"]["warnings"] if "max_num_seqs 1024" in w]  # the user's own value


# ---------------------------------------------------------------------------------------------------
# Hypothesis over the whole argument space
# ---------------------------------------------------------------------------------------------------

_NUMBERS = ["0", "-1", "1", "2", "3", "8", "64", "1e308", "-1e308", "nan", "inf", "32k", "1K", "2G", "0.5", "1.5",
            "abc", "", " ", "1_000", "0x10", "9" * 40]
_NAMES = [MODEL, "meta-llama/Llama-3.1-70B-Instruct", "H100", "A100", "L4", "auto", "fp8", "awq", "bfloat16",
          "0.11.0", "99.0", "../../etc", "/", "~", "", " ", "é" * 50, "a" * 3000, "-", "--", "x=y", "=x"]
# Values a user would plausibly type, so that many examples get past parsing into the engine and the fleet.
_PLAUSIBLE = {
    "--gpu": ["H100", "A100", "L40S", "L4", "RTX 4090"], "--quantization": ["fp8", "awq"], "-q": ["fp8"],
    "--kv-cache-dtype": ["auto", "fp8"], "--vllm-version": ["0.11.0", "0.33.0", "0.10"], "--max-model-len": [
        "4096", "32k", "auto", "-1", "131072"], "--label": ["a=b"], "--gpu-type": ["H100", "A100"],
    "--host": ["hostile-h100"], "--model": [MODEL], "--token": ["t"], "--name": ["hostile-h100"],
    "--gpu-memory-utilization": ["0.5", "0.9", "0.99"], "--vram-gb": ["24", "80"], "--free-memory-gb": ["10", "70"],
    "--params-b": ["8", "70"], "--overhead-gb": ["1"], "--headroom-gb": ["2"], "--fragmentation-factor": ["0.1"],
    "--kv-cache-memory-bytes": ["20G"], "--max-num-batched-tokens": ["8k"], "--emit": ["command,k8s", "helm"],
    "--min-free-gib": ["10", "0"], "--max-ttft-ms": ["500"], "--max-itl-ms": ["50"],
}
_PLAUSIBLE_INTS = ["1", "2", "4", "8", "16", "64", "256"]
_PATH_FLAGS = {"--profile", "-p", "--output-dir", "-o", "--replay", "--tls-ca-file", "--tls-cert-file",
               "--tls-key-file", "--token-file"}
_ADDRESS_FLAGS = {"--planner", "--agent"}


def _commands() -> list[tuple[list[str], object]]:
    """(sub-command path, parser) for every leaf command of the real parser."""
    import argparse

    out = []

    def walk(path: list[str], parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append((path, parser))
            return
        for name, child in subs[0].choices.items():
            walk([*path, name], child)

    walk([], build_parser())
    return out


COMMANDS = _commands()


@st.composite
def argvs(draw, world: dict) -> list[str]:  # noqa: ANN001
    import argparse

    path, parser = draw(st.sampled_from(COMMANDS))
    files = [str(p) for p in world["files"].values()] + [str(p) for p in world["deployments"].values()]
    paths = files + [str(p) for p in world["captures"].values()] + [str(world["plain_file"]), "/dev/zero",
                                                                   str(world["base"] / "out"), "/proc/nope", "a" * 300]
    addresses = [world["planner"], world["agent"], "127.0.0.1:1", "not-an-address", "[::1]:0", ":", ""]
    argv = list(path)
    if path in (["plan"], ["generate"], ["fleet", "place"]) and draw(st.integers(0, 9)) < 7:
        argv += ["--model", draw(st.sampled_from([MODEL, str(world["awq0"]), "meta-llama/Llama-3.1-8B-Instruct"]))]
    if path in (["plan"], ["generate"]) and draw(st.integers(0, 9)) < 7:  # this host has no GPU to detect
        argv += ["--gpu", draw(st.sampled_from(["H100", "A100", "L4"]))]
    options = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    positionals = [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    for action in draw(st.lists(st.sampled_from(options), max_size=4)) if options else []:
        flag = draw(st.sampled_from(action.option_strings))
        argv.append(flag)
        if action.nargs == 0:
            continue
        if set(action.option_strings) & _PATH_FLAGS or action.type is Path:
            argv.append(draw(st.sampled_from(paths)))
        elif set(action.option_strings) & _ADDRESS_FLAGS:
            argv.append(draw(st.sampled_from(addresses)))
        elif action.choices:
            argv.append(draw(st.sampled_from([*map(str, action.choices), "", "bogus"])))
        elif draw(st.integers(0, 9)) < 6:  # plausible: reaches the engine and the fleet
            type_name = getattr(action.type, "__name__", "")
            pool = _PLAUSIBLE.get(flag) or (_PLAUSIBLE_INTS if "int" in type_name else ["0.5", "1", "24"])
            argv.append(draw(st.sampled_from(pool)))
        else:
            argv.append(draw(st.sampled_from(_NUMBERS + _NAMES) | st.text(max_size=12)))
    for action in positionals:
        if action.dest == "file":
            good = str(world["base"] / "good-deployments.yaml")
            argv.append(draw(st.sampled_from([good, good, *paths])))
        else:
            argv.append(draw(st.sampled_from(["hostile-h100", "hostile-a100-mig", *_NAMES])))
    if draw(st.integers(0, 9)) == 0:
        argv.append(draw(st.sampled_from(["--bogus", "-x", "extra", "--json", "--"])))
    if path[0] == "fleet":  # the fleet lives in a planner; a stream must end on its own
        argv += ["--planner", world["planner"]]
        if path[1] == "watch":
            argv += ["--count", "1", "--timeout-seconds", "2"]
    if path[0] == "detect":
        argv += ["--timeout-seconds", "5"]
    return argv


@pytest.fixture(scope="module")
def argv_strategy(world):
    return argvs(world)


def test_any_command_line_gets_a_documented_answer(world, capsys, argv_strategy):
    @EXAMPLES
    @given(argv=argv_strategy)
    def check(argv: list[str]) -> None:
        code, _, err, elapsed = run(capsys, argv)
        event(f"{' '.join(argv[:2]) if argv[0] == 'fleet' else argv[0]} -> exit {code}")
        assert_cli_answer(code, err, argv)
        assert elapsed < HANG_SECONDS, f"{argv}: {elapsed:.1f}s"

    check()


def test_the_planner_logged_no_traceback_for_any_of_it(world):
    """Runs after the module's CLI traffic (definition order): the service never crashed on it."""
    log = world["planner_log"].read_text()
    assert "Traceback" not in log, log[-3000:]
