"""Fixtures for the integration tests of the local stack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest


@pytest.fixture(scope="session")
def emulator_client() -> Callable[[str, str], Any]:
    """A factory: ``emulator_client(service, endpoint)`` is a plain boto3 client for an emulator.

    Region us-east-1 and the emulators' dummy credentials; botocore's default retries.
    """
    return _emulator_client


def _emulator_client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
