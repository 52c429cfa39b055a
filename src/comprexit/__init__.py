"""comprexit: soft context compression of frozen LLMs by explicit information transmission."""

__version__ = "0.1.0"

from .backbone import Backbone, BackboneIdentity, EncodedContexts  # noqa: E402
from .compressor import ComprExIT, Slots  # noqa: E402
from .config import ComprExITConfig  # noqa: E402
from .errors import CheckpointError, ComprexitError, ConfigError, DataError, InputError  # noqa: E402

__all__ = [
    "Backbone",
    "BackboneIdentity",
    "CheckpointError",
    "ComprExIT",
    "ComprExITConfig",
    "ComprexitError",
    "ConfigError",
    "DataError",
    "EncodedContexts",
    "InputError",
    "Slots",
    "__version__",
]
