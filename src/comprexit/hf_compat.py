"""What differs between the transformers versions we support (see pyproject.toml), in one place.

transformers 5.24 renamed the key/value cache argument of every model's `forward` and of
`generate` from `past_key_values` to `cache`; the old name still works there but warns that it
goes away (in 5.40 for `forward`, 6.0 for `generate`), and model outputs carry the cache under
`cache`. transformers 5.23 knows only `past_key_values`. The name is read once from the
installed library's own signature (`prepare_inputs_for_generation`, which every generating
model inherits), so our calls are right on both without comparing version numbers, and the
test suite turns the deprecation back into an error should a call slip through.
"""

from __future__ import annotations

import inspect
from typing import Any

from transformers import GenerationMixin

CACHE_ARGUMENT = (
    "cache" if "cache" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    else "past_key_values"
)


def cache_argument(cache: Any) -> dict[str, Any]:
    """`{name: cache}` under the name this transformers reads: spread it into a model or generate call."""
    return {CACHE_ARGUMENT: cache}


def returned_cache(output: Any) -> Any:
    """The cache a model call returned (`use_cache=True`), read under this transformers' name
    (reading the other name warns on 5.24)."""
    return output[CACHE_ARGUMENT]
