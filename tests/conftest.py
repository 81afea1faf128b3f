import pytest
from hypothesis import HealthCheck, settings

import blocksparse_utils as bsu

settings.register_profile("default", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile("default")


@pytest.fixture(autouse=True)
def _seed():
    bsu.set_seed(0)
