"""ext.saas-stub passes the extension contract suite shipped to authors."""

from __future__ import annotations

from typing import Any

import pytest

from sandboxer.testing.contract import ExtensionContract
from sandboxer_saas_stub.extension import SaasStubExtension


class TestSaasStubContract(ExtensionContract):
    @pytest.fixture
    def extension(self) -> Any:
        return SaasStubExtension()

    @pytest.fixture
    def extension_id(self) -> str:
        return "ext.saas-stub"

    @pytest.fixture
    def settings(self) -> dict[str, Any]:
        return {"provision_delay": 0.01}
