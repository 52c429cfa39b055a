"""Where a backbone named by a Hugging Face id comes from, decided in about a second, before transformers tries.

Why: asked for a model that is neither a local folder nor in the local cache, transformers
retries the Hub with exponential backoff; offline, `--backbone org/typo` spent 48 s in HTTP
retries before its error. `hub_source` decides first, without transformers:

* a local path is read as it is; something that looks like a path but does not exist is refused;
* offline mode (HF_HUB_OFFLINE=1, read by huggingface_hub at import) reads the local cache only,
  and refuses at once a model that is not in it;
* otherwise one HEAD request to the Hub's endpoint (through the environment's proxies, at most
  `PROBE_SECONDS`) tells whether it can be reached: if it can, transformers loads as usual
  (downloading what is missing); if not, the cached copy is read without any request, and a
  model that is not cached is refused in one line.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from .errors import CheckpointError

PROBE_SECONDS = 3.0


def hub_source(name: str) -> dict:
    """Keyword arguments for transformers' `from_pretrained(name, ...)`: {} to load as usual, or
    {"local_files_only": True} to read the Hugging Face cache without a request. Raises a one-line
    `CheckpointError` for a missing path or an id that can be neither found in the cache nor fetched."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(name).expanduser().exists():
        return {}
    if looks_like_a_path(name):
        raise CheckpointError(f"no such backbone folder or file: {name}")
    try:
        validate_repo_id(name)
    except HFValidationError as error:
        raise CheckpointError(f"{name!r} is neither a local folder nor a Hugging Face model id ({error})") from error
    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    if constants.HF_HUB_OFFLINE:
        if cached:
            return {"local_files_only": True}
        raise CheckpointError(f"backbone {name!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                              "download it once online, or give a local folder")
    problem = hub_unreachable(constants.ENDPOINT)
    if problem is None:
        return {}
    if cached:
        return {"local_files_only": True}
    raise CheckpointError(f"backbone {name!r} is neither a local folder nor in the Hugging Face cache, and "
                          f"{constants.ENDPOINT} cannot be reached ({problem})")


def looks_like_a_path(name: str) -> bool:
    """A name a person meant as a path (a hub id is `name` or `owner/name`)."""
    return (name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name
            or (os.sep != "/" and os.sep in name))


def hub_unreachable(endpoint: str, timeout: float = PROBE_SECONDS) -> str | None:
    """None when `endpoint` answers one HEAD request (any HTTP status counts), else why it did not."""
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as error:
        return str(error.reason)
    except OSError as error:  # a timeout while reading, a reset connection
        return str(error) or type(error).__name__
    return None
