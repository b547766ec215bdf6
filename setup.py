"""Build hook: generate the gRPC/protobuf Python stubs from protos/ at build and install time.

The proto tree mirrors the Python import path (protos/vllm_planner/v1/*.proto -> vllm_planner.v1),
so protoc's imports need no rewriting. Generated files are gitignored and never edited by hand;
tests/test_protos_fresh.py fails when they do not match the protos.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def generate_protos(out_dir: Path = ROOT) -> list[Path]:
    """Run grpc_tools.protoc over every .proto under protos/ and write stubs below out_dir."""
    from grpc_tools import protoc  # build requirement
    import grpc_tools

    proto_root = ROOT / "protos"
    protos = sorted(proto_root.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see the messages above")
    # Vendored protos carry their license: it travels with the stubs generated from them (as LICENSE.txt,
    # which the package data of every package includes).
    for license_file in proto_root.rglob("LICENSE"):
        target = out_dir / license_file.parent.relative_to(proto_root) / "LICENSE.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(license_file.read_bytes())
    for directory in generated_packages(protos, out_dir, proto_root):
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from protos/ at build time. Do not edit."""\n')
    return protos


def generated_packages(protos: list[Path], out_dir: Path, proto_root: Path) -> set[Path]:
    """Every folder the stubs land in, and each folder between it and the top package (vllm_planner
    itself is a real package): vendored protos sit deeper (vllm_planner/third_party/kubelet/...)."""
    out: set[Path] = set()
    for proto in protos:
        parts = proto.parent.relative_to(proto_root).parts
        for depth in range(2, len(parts) + 1):
            out.add(out_dir.joinpath(*parts[:depth]))
    return out


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        protos = generate_protos(ROOT)
        # Packages were discovered before the stubs existed: add the generated ones explicitly,
        # or a wheel / non-editable install from a clean checkout would ship without them.
        generated = {".".join(d.relative_to(ROOT).parts) for d in generated_packages(protos, ROOT, ROOT / "protos")}
        self.packages = sorted(set(self.packages or ()) | generated)
        super().run()


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import generate_protos
    setup(cmdclass={"build_py": BuildPyWithProtos})
