"""Mock source and target systems for the demo, the tests and the benchmarks.

``start_erp()`` and ``start_shop()`` serve on an ephemeral loopback port from a
background thread; ``Erp``/``Shop`` plus ``AsyncMockServer`` do the same inside a
running event loop. Failures are switchable at start and at runtime (see ``failures``).
"""

from crossdock.mock.erp import AUTH_MODES, AuthConfig, Catalogue, Erp
from crossdock.mock.failures import FailureConfig, Failures
from crossdock.mock.server import (
    AsyncMockServer,
    MockServer,
    RunningErp,
    RunningShop,
    start_erp,
    start_shop,
)
from crossdock.mock.shop import ReceivedRequest, Shop

__all__ = [
    "AUTH_MODES",
    "AsyncMockServer",
    "AuthConfig",
    "Catalogue",
    "Erp",
    "FailureConfig",
    "Failures",
    "MockServer",
    "ReceivedRequest",
    "RunningErp",
    "RunningShop",
    "Shop",
    "start_erp",
    "start_shop",
]
