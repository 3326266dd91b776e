"""Regenerate the externaljwt modules from their ``.proto`` files (needs grpcio-tools).

``python -m keyrotd.kubernetes.codegen [OUTPUT_ROOT]`` writes ``api_pb2.py``, ``api_pb2.pyi`` and
``api_pb2_grpc.py`` beside each ``api.proto`` (below OUTPUT_ROOT when given: the staleness test
generates into a temporary directory and compares).
"""

from __future__ import annotations

import sys
from pathlib import Path

VERSIONS = ("v1", "v1alpha1")
ROOT = Path(__file__).resolve().parents[2]
"""The directory that holds the ``keyrotd`` package: protos are named relative to it."""


def protos() -> list[str]:
    return [f"keyrotd/kubernetes/externaljwt/{version}/api.proto" for version in VERSIONS]


def generate(output_root: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    includes = Path(grpc_tools.__file__).parent / "_proto"
    for proto in protos():
        (output_root / proto).parent.mkdir(parents=True, exist_ok=True)
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{ROOT}",
                f"-I{includes}",
                f"--python_out={output_root}",
                f"--pyi_out={output_root}",
                f"--grpc_python_out={output_root}",
                str(ROOT / proto),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {proto} (exit {code})")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
