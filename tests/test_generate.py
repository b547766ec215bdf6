"""``vllm-planner generate``: files written, executable script, overwrite protection, profile round trip."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import yaml

from clients.cli.main import main

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
ALL_FILES = {"serve_command.sh", "profile.yaml", "docker-compose.yaml", "kubernetes.yaml", "helm-values.yaml"}


def generate(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["generate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_writes_every_artifact(capsys, tmp_path):
    out_dir = tmp_path / "deploy"
    code, out, err = generate(capsys, "-m", LLAMA_8B, "--gpu", "H100", "--max-model-len", "16k", "--output-dir",
                              str(out_dir))
    assert code == 0, err
    assert {p.name for p in out_dir.iterdir()} == ALL_FILES
    # the plan report first (as `plan` prints it), then one line per file written
    assert "will start" in out and "Launch command" in out
    assert out.splitlines()[-5:] == [f"wrote {out_dir / name}" for name in
                                     ("serve_command.sh", "profile.yaml", "docker-compose.yaml", "kubernetes.yaml",
                                      "helm-values.yaml")]
    yaml.safe_load((out_dir / "docker-compose.yaml").read_text())
    assert len([d for d in yaml.safe_load_all((out_dir / "kubernetes.yaml").read_text()) if d]) == 3
    yaml.safe_load((out_dir / "helm-values.yaml").read_text())


def test_serve_script_is_executable_and_valid_bash(capsys, tmp_path):
    generate(capsys, "-m", LLAMA_8B, "--gpu", "H100", "--max-model-len", "16k", "--emit", "command", "-o",
             str(tmp_path))
    script = tmp_path / "serve_command.sh"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)  # parses as bash
    # The exec line, joined, is the plan's serve command plus "$@" passthrough.
    exec_line = text[text.index("exec "):].replace("\\\n", " ")
    argv = shlex.split(exec_line)
    assert argv[:4] == ["exec", "vllm", "serve", LLAMA_8B]
    assert argv[argv.index("--max-model-len") + 1] == "16000"
    assert argv[-1] == "$@"


def test_refuses_to_overwrite_without_force(capsys, tmp_path):
    (tmp_path / "kubernetes.yaml").write_text("keep me\n")
    code, out, err = generate(capsys, "-m", LLAMA_8B, "--gpu", "H100", "--emit", "k8s,helm", "-o", str(tmp_path))
    assert code == 2 and "wrote" not in out
    assert err.count("\n") == 1 and "kubernetes.yaml" in err and "--force" in err
    assert (tmp_path / "kubernetes.yaml").read_text() == "keep me\n"
    assert not (tmp_path / "helm-values.yaml").exists()  # nothing is written when anything would be overwritten
    code, _, _ = generate(capsys, "-m", LLAMA_8B, "--gpu", "H100", "--emit", "k8s,helm", "-o", str(tmp_path),
                          "--force")
    assert code == 0
    assert (tmp_path / "kubernetes.yaml").read_text() != "keep me\n"


def test_emit_subset_and_unknown_kind(capsys, tmp_path):
    code, _, _ = generate(capsys, "-m", LLAMA_8B, "--gpu", "H100", "--emit", "compose,profile", "-o",
                          str(tmp_path / "a"))
    assert code == 0
    assert {p.name for p in (tmp_path / "a").iterdir()} == {"docker-compose.yaml", "profile.yaml"}
    code, _, err = generate(capsys, "-m", LLAMA_8B, "--gpu", "H100", "--emit", "compose,pdf", "-o",
                            str(tmp_path / "b"))
    assert code == 2 and err.startswith("error: --emit:") and "pdf" in err
    assert not (tmp_path / "b").exists()


def test_output_dir_is_required(capsys):
    code, _, err = generate(capsys, "-m", LLAMA_8B)
    assert code == 2 and err.startswith("error: --output-dir: is required")


def test_saved_profile_reproduces_the_plan(capsys, tmp_path):
    first = tmp_path / "first"
    code, _, _ = generate(capsys, "-m", LLAMA_8B, "--gpu", "H100", "-c", "16", "--max-num-seqs", "128",
                          "--kv-cache-dtype", "fp8", "-o", str(first))
    assert code == 0
    saved = yaml.safe_load((first / "profile.yaml").read_text())
    assert saved["model"] == {"model": LLAMA_8B, "kv_cache_dtype": "fp8"}
    assert saved["hardware"] == {"gpu": "H100"} and saved["workload"] == {"concurrency": 16}
    assert saved["engine"] == {"max_num_seqs": 128}
    assert saved["outputs"] == {"output_dir": str(first)}

    # Planning from the saved profile gives the same plan, and generating again gives the same files.
    assert main(["plan", "-p", str(first / "profile.yaml"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["config"]["max_num_seqs"] == 128 and plan["config"]["kv_cache_dtype"] == "fp8"
    second = tmp_path / "second"
    code, _, _ = generate(capsys, "-p", str(first / "profile.yaml"), "-o", str(second))
    assert code == 0
    for name in ALL_FILES - {"profile.yaml"}:
        assert (second / name).read_text() == (first / name).read_text(), name
