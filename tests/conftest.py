import os
import sys

from tests.train_helpers import xla_flags  # noqa: E402 (imports no jax)

# Eight simulated CPU devices for the sharding tests; must be set before jax is imported.
os.environ.setdefault("XLA_FLAGS", xla_flags(8))

import jax  # noqa: E402
import pytest  # noqa: E402

# Compiles dominate a CPU test suite and many tests build the same programs (each training run jits its step
# anew): a persistent cache makes every program after the first a lookup.
_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache")
jax.config.update("jax_compilation_cache_dir", os.environ.get("ZOO_TEST_JAX_CACHE", _CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True)
def _same_torch_weights_in_any_order():
    """torch's global generator restarts at every test, so the random reference weights a test draws do not depend
    on which tests ran before it in the same worker."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(0)


@pytest.fixture
def key():
    return jax.random.key(0)


def pytest_collection_modifyitems(items):
    """The slow tests first: two workers then finish together instead of one running a long test at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
