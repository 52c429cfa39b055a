"""Greedy decoding of the frozen model, as interchangeable strategies behind one `Decoder` protocol.

    decoder = EagerDecoder(backbone)                      # or StaticDecoder(...), GraphDecoder(...)
    decoder.answers(prefixes, prompts, max_new_tokens)    # left-padded `[BOS] + prefix + prompt`
    cache = decoder.prefill(slots)                        # a document's `[BOS] + slots`, once
    decoder.cached_answers(cache, prompts)                # each question then prefills only itself
    get_answer_rule("sentence")(text)                     # cut the text into an answer ("paper": eval's)

Modules: base.py (the protocol and what every strategy shares), eager.py, static.py, graph.py
(the strategies), generate.py (what the two generate-based ones share), static_caches.py
(preallocated caches), cache.py (a prefilled prefix), prefill.py (a long prefix read in chunks),
answers.py (stop tokens, answer rules).
How the rows are laid out is assembly.py's, one level up: training reads the same layouts.
"""

from .answers import PAPER, SENTENCE, answer_rule, answer_rules, cut_at_stop, default_stops, get_answer_rule
from .base import Decoder
from .cache import PrefixCache
from .eager import EagerDecoder
from .graph import GraphDecoder
from .prefill import PREFILL_CHUNK
from .static import StaticDecoder

__all__ = [
    "PAPER",
    "PREFILL_CHUNK",
    "SENTENCE",
    "Decoder",
    "EagerDecoder",
    "GraphDecoder",
    "PrefixCache",
    "StaticDecoder",
    "answer_rule",
    "answer_rules",
    "cut_at_stop",
    "default_stops",
    "get_answer_rule",
]
