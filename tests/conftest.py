import os
import sys

# Tests import their shared builders as `helpers`.
sys.path.insert(0, os.path.dirname(__file__))

import pytest
from hypothesis import HealthCheck, settings

# Property tests: a few examples each in CI (tens of seconds in all); HYPOTHESIS_PROFILE=thorough
# runs many more.
settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The shared real-data folder (``TRANSACT_DATA_DIR``, set by .ci/run and the Makefile)."""
    path = os.environ.get("TRANSACT_DATA_DIR")
    if not path:
        pytest.skip("TRANSACT_DATA_DIR is not set: no real data samples to read")
    if not os.path.isdir(path):
        pytest.skip(f"TRANSACT_DATA_DIR={path} does not exist")
    return path
