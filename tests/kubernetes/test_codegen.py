"""The generated externaljwt modules are what grpcio-tools makes of the .proto files today."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyrotd.kubernetes import codegen

pytest.importorskip("grpc_tools")


def test_the_generated_modules_are_not_stale(tmp_path: Path) -> None:
    codegen.generate(tmp_path)
    stale = []
    for proto in codegen.protos():
        folder = Path(proto).parent
        for name in ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"):
            fresh = (tmp_path / folder / name).read_bytes()
            if (codegen.ROOT / folder / name).read_bytes() != fresh:
                stale.append(str(folder / name))
    assert not stale, f"regenerate with `python -m keyrotd.kubernetes.codegen`: {stale}"


def test_the_protos_keep_the_kubernetes_packages_services_and_field_numbers() -> None:
    from keyrotd.kubernetes.externaljwt.v1 import api_pb2 as v1
    from keyrotd.kubernetes.externaljwt.v1alpha1 import api_pb2 as v1alpha1

    for module, package in ((v1, "v1"), (v1alpha1, "v1alpha1")):
        service = module.DESCRIPTOR.services_by_name["ExternalJWTSigner"]
        assert service.full_name == f"{package}.ExternalJWTSigner"
        assert [m.name for m in service.methods] == ["Sign", "FetchKeys", "Metadata"]
        fields = {
            name: {f.name: f.number for f in message.fields}
            for name, message in module.DESCRIPTOR.message_types_by_name.items()
        }
        assert fields == {
            "SignJWTRequest": {"claims": 1},
            "SignJWTResponse": {"header": 1, "signature": 2},
            "FetchKeysRequest": {},
            "FetchKeysResponse": {"keys": 1, "data_timestamp": 2, "refresh_hint_seconds": 3},
            "Key": {"key_id": 1, "key": 2, "exclude_from_oidc_discovery": 3},
            "MetadataRequest": {},
            "MetadataResponse": {"max_token_expiration_seconds": 1},
        }
