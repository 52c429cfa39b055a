#!/usr/bin/env python3
"""NVIDIA's kvpress (training-free KV-cache compression) as a peer of ComprExIT, on our QA protocol.

Why a script of its own, in an environment of its own: kvpress 0.5.5 requires
transformers >= 4.56, < 5.3, and comprexit pins transformers >= 5.23, so the two cannot share
one environment (scripts/peers/setup_kvpress_venv.sh builds kvpress's). This script runs there,
against the dense Gemma-3-270M folder that comprexit's backbone cache writes, so the model and
its tokenizer are exactly ours.

What stays ours: reading the MRQA files, keeping the last 512 context tokens, the prompt
template, the answer cut and SQuAD EM/F1, and the results file. They are imported from
comprexit's own source tree (modules that need only the standard library; see
`import_comprexit_parts`), not rewritten, and each (press, budget) pair is written as a
`comprexit eval` results file, so `comprexit table` puts it beside our methods as a peer row.

What kvpress does: the decoder's key/value cache of `[BOS] + context` is pruned once by a
question-agnostic press during that prefill (the same contract as ComprExIT: compress once,
then ask); each question is then read after the pruned cache, at the positions that follow the
full context, and answered greedily. Budgets, each per document: `positions` keeps as many
cache positions as ComprExIT has slots (+1 for the [BOS] its decoder also reads); `bytes`
keeps as many as fit in the bytes of those slots (a KV position of Gemma-3-270M holds
18 layers x 2 x 1 head x 256 = 9,216 values, a slot 640: 14.4x). README.md beside this file
gives the arithmetic and the commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import logging
import math
import os
import re
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KVPRESS_VERSION = "0.5.5"  # the release this script was written and checked against
REPO_SRC = Path(__file__).resolve().parents[2] / "src"
SLOT_WINDOW = 128  # ComprExIT's transport window (METHOD.md): slots are counted per window
MIN_TRANSFORMERS = (5, 23)  # comprexit's pin: a dense folder converted by an older release is not ours

# Gemma-3-270M token ids of PROBE_TEXT, from comprexit's tokenizer (Backbone.tokenize); a folder
# whose tokenizer disagrees (e.g. converted by transformers 5.17, which mis-tokenizes Gemma GGUF
# files) is refused. tests/test_kvpress_peer.py checks them against comprexit's tokenizer.
PROBE_TEXT = "Zürich naïve café — “quotes” 12,345.67 \t tabs\n\nnewlines   spaces"
PROBE_IDS = [236953, 105214, 120362, 33443, 2192, 999, 52231, 236919, 236743, 236770, 236778, 236764, 236800,
             236812, 236810, 236761, 236825, 236832, 236743, 255968, 42364, 108, 208697, 139, 35220]


@dataclasses.dataclass(frozen=True)
class PressSpec:
    """One press we run: kvpress's class name and why it fits the question-agnostic contract."""

    name: str
    class_name: str | None  # None: no press, the full cache (a check of this harness)
    why: str


PRESSES = {
    spec.name: spec
    for spec in (
        PressSpec("knorm", "KnormPress", "keeps the keys of smallest norm; reads neither queries nor the question"),
        PressSpec("snapkv", "SnapKVPress", "attention of the context's last tokens (its observation window); "
                  "the question is not in the prefill"),
        PressSpec("expected_attention", "ExpectedAttentionPress",
                  "attention expected from future queries, estimated from the context's own queries "
                  "(kvpress's flagship press)"),
        PressSpec("streaming_llm", "StreamingLLMPress", "keeps the first 4 and the most recent positions"),
        PressSpec("none", None, "no compression: the full cache, a check that this harness reproduces "
                  "comprexit's zero-shot row"),
    )
}
DEFAULT_PRESSES = "knorm,snapkv,expected_attention"
BUDGETS = ("positions", "bytes")


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvpress_eval.py",
        description="Evaluate kvpress presses on QA files with comprexit's protocol (prompt, greedy decoding, "
        "answer cut, EM/F1) and write one `comprexit eval` results file per press and budget. Run it with the "
        "python of kvpress's own environment (scripts/peers/setup_kvpress_venv.sh).",
    )
    parser.add_argument("--data", nargs="+", required=True, metavar="FILE",
                        help="MRQA .jsonl(.gz) or SQuAD .json files, as for `comprexit eval --data`")
    parser.add_argument("--output-dir", "-o", required=True, metavar="DIR",
                        help="results folder: kvpress-PRESS-BUDGET.json (+ .md) per run")
    parser.add_argument("--presses", default=DEFAULT_PRESSES,
                        help=f"comma-separated, of: {', '.join(PRESSES)} (default: {DEFAULT_PRESSES}); "
                        "'none' is the uncompressed check")
    parser.add_argument("--budgets", default=",".join(BUDGETS),
                        help="comma-separated: positions (as many cache positions as ComprExIT slots) and/or bytes "
                        "(as many as fit in the slots' bytes); default both")
    parser.add_argument("--ratio", type=int, default=4,
                        help="ComprExIT's compression ratio the budgets match (default 4)")
    parser.add_argument("--model", default=None, metavar="DIR",
                        help="dense model folder (default: the Gemma-3-270M copy in comprexit's cache, "
                        "$COMPREXIT_CACHE or ~/.cache/comprexit)")
    parser.add_argument("--limit", type=int, default=None, help="first N questions of each file")
    parser.add_argument("--batch-size", type=int, default=64, help="questions decoded together")
    parser.add_argument("--context-budget", type=int, default=512, help="context tokens kept (the tail)")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="auto: bfloat16 on a GPU, float32 on a CPU (as comprexit eval)")
    parser.add_argument("--skip-malformed", action="store_true", help="skip and count malformed data lines")
    parser.add_argument("--predictions", action="store_true", help="store every prediction in the results files")
    parser.add_argument("--overwrite", action="store_true", help="redo runs whose results file exists (default: skip)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before anything heavy is imported."""
    args.presses = _names(args.presses, PRESSES, "--presses")
    args.budgets = _names(args.budgets, BUDGETS, "--budgets")
    for name in ("ratio", "batch_size", "context_budget", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    for spec in args.data:
        if not spec.startswith("hf:") and not Path(spec).is_file():
            raise UsageError(f"no such data file: {spec}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {args.device!r}")
    if args.model is not None and not (Path(args.model) / "config.json").is_file():
        raise UsageError(f"--model {args.model} is not a model folder (no config.json)")


def _names(text: str, known: Sequence[str], option: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise UsageError(f"{option}: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------- environment


def require_kvpress():
    """kvpress and a transformers it supports, or a UsageError saying how to get them."""
    try:
        import kvpress
        import transformers
    except ImportError as error:
        raise UsageError(
            f"kvpress is not importable by {sys.executable} ({error}); it is not a comprexit dependency: build its "
            "environment with scripts/peers/setup_kvpress_venv.sh and run this script with that environment's python"
        ) from None
    version = _version_tuple(transformers.__version__)
    if not (4, 56) <= version[:2] < (5, 3):
        raise UsageError(
            f"kvpress {KVPRESS_VERSION} needs transformers >= 4.56, < 5.3, but {transformers.__version__} was "
            f"imported from {Path(transformers.__file__).parent} (is PYTHONPATH putting comprexit's site first?)"
        )
    if kvpress_version() != KVPRESS_VERSION:
        print(f"kvpress_eval.py: warning: kvpress {kvpress_version()} is installed; this script was checked "
              f"against {KVPRESS_VERSION} (scripts/peers/kvpress-requirements.txt)", file=sys.stderr)
    return kvpress


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def import_comprexit_parts(src: Path = REPO_SRC) -> dict[str, types.ModuleType]:
    """comprexit's reader, prompt, scorer and results writer, imported without the package's __init__.

    The package's __init__ loads the backbone and expects comprexit's own transformers; these
    modules import only the standard library (report.environment imports torch and transformers
    when called, and so records this environment's versions). An empty package module stands in
    for `comprexit`, so `comprexit.data.qa` and the others load from the source tree unchanged.
    """
    init = src / "comprexit" / "__init__.py"
    if not init.is_file():
        raise UsageError(f"comprexit's source tree is not at {src} (this script reads it from its own checkout)")
    if "comprexit" not in sys.modules:
        package = types.ModuleType("comprexit")
        package.__path__ = [str(init.parent)]
        package.__file__ = str(init)
        match = re.search(r'^__version__ = "([^"]+)"', init.read_text(), re.MULTILINE)
        package.__version__ = match.group(1) if match else "unknown"
        sys.modules["comprexit"] = package
    if "comprexit.decoding" not in sys.modules:  # its __init__ brings the decoders (torch): only answers.py is read
        decoding = types.ModuleType("comprexit.decoding")
        decoding.__path__ = [str(init.parent / "decoding")]
        sys.modules["comprexit.decoding"] = decoding
    names = {"qa": "comprexit.data.qa", "prompting": "comprexit.prompting", "metrics": "comprexit.evaluation.metrics",
             "report": "comprexit.evaluation.report", "errors": "comprexit.errors",
             "answers": "comprexit.decoding.answers"}
    return {key: importlib.import_module(name) for key, name in names.items()}


def dataset_key(spec: str) -> str:
    """The dataset name `comprexit eval` gives a data spec (the file name without data suffixes)."""
    if spec.startswith("hf:"):
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec[3:])
    return re.sub(r"(\.jsonl|\.json)?(\.gz)?$", "", Path(spec).name)


def find_dense_model() -> Path:
    """The dense Gemma-3-270M copy comprexit's backbone cache wrote (bundled.ensure_dense_copy).

    Folders are named `gemma-3-270m-<gguf sha>-transformers<version>`; only a conversion by
    comprexit's pinned transformers (>= 5.23) is ours, and of several the newest version wins.
    """
    root = Path(os.environ.get("COMPREXIT_CACHE", Path.home() / ".cache" / "comprexit"))
    found = []
    for config in root.glob("gemma-3-270m-*-transformers*/config.json"):
        folder = config.parent
        version = _version_tuple(folder.name.rpartition("-transformers")[2])
        if version[:2] >= MIN_TRANSFORMERS and (folder / "model.safetensors").is_file():
            found.append((version, folder))
    if not found:
        raise UsageError(
            f"no dense Gemma-3-270M copy under {root}: write it once in comprexit's environment with "
            "python -c 'from comprexit.bundled import ensure_dense_copy; print(ensure_dense_copy())', or pass --model"
        )
    return max(found)[1]


# --------------------------------------------------------------------------- model


@dataclasses.dataclass
class Model:
    """The causal LM as kvpress sees it, plus what the budgets and decoding need from its config."""

    model: Any
    tokenizer: Any
    folder: Path
    device: Any
    dtype: Any

    @property
    def config(self):
        return self.model.config

    @property
    def bos_ids(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None else []

    @property
    def stop_ids(self) -> list[int]:
        """The tokenizer's EOS, then the generation config's (as comprexit's Backbone)."""
        ids = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        for token in configured if isinstance(configured, (list, tuple)) else [configured]:
            if token is not None and int(token) not in ids:
                ids.append(int(token))
        return ids

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else (self.stop_ids or [0])[0]

    @property
    def kv_values_per_position(self) -> int:
        """Keys and values one cache position holds over all layers: layers x 2 x kv heads x head dim."""
        c = self.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return c.num_hidden_layers * 2 * c.num_key_value_heads * head_dim

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def load_model(folder: Path, device_name: str, dtype_name: str) -> Model:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    if device_name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {device_name}: no CUDA GPU is available")
    if dtype_name == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, dtype_name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    loaded = Model(model, tokenizer, folder, device, dtype)
    if model.config.model_type == "gemma3_text" and model.config.vocab_size == 262144:
        if loaded.tokenize(PROBE_TEXT) != PROBE_IDS:
            raise UsageError(f"the tokenizer of {folder} differs from comprexit's (probe sentence); "
                             "use a folder converted by comprexit's transformers (>= 5.23)")
    return loaded


class _RotaryOfLayer:
    """`rotary(x, position_ids)` for one layer type, as kvpress calls it, over transformers 5's
    Gemma-3 rotary embedding, which needs the layer type as a third argument (see bind_layer_rotary)."""

    def __init__(self, rotary, layer_type: str):
        self.rotary, self.layer_type = rotary, layer_type

    def __call__(self, x, position_ids):
        return self.rotary(x, position_ids, self.layer_type)


def bind_layer_rotary(model) -> int:
    """Give each attention layer a rotary embedding that knows the layer's type; returns how many.

    kvpress's press context sets `self_attn.rotary_emb` to the model's shared rotary embedding
    and ExpectedAttentionPress calls it as `rotary_emb(x, position_ids)`. In transformers 5,
    Gemma-3's rotary embedding holds one frequency table per layer type (sliding layers use
    base 10,000, full ones 1,000,000) and without the type it fails ("'Gemma3RotaryEmbedding'
    object has no attribute 'None_inv_freq'"). Called inside the press context, after kvpress
    has set the attribute (it sets it again at every entry); models whose rotary embedding takes
    no layer type are left alone.
    """
    base = model.model.language_model if hasattr(model.model, "language_model") else model.model
    rotary = getattr(base, "rotary_emb", None)
    if rotary is None or "layer_type" not in inspect.signature(rotary.forward).parameters:
        return 0
    bound = 0
    for layer in base.layers:
        attention = layer.self_attn
        layer_type = getattr(attention, "layer_type", None)
        if layer_type is not None:
            attention._modules.pop("rotary_emb", None)  # a plain attribute now, not a submodule
            attention.rotary_emb = _RotaryOfLayer(rotary, layer_type)
            bound += 1
    return bound


# --------------------------------------------------------------------------- budgets


def slot_count(context_tokens: int, ratio: int) -> int:
    """ComprExIT's non-empty slots for a context: ceil(w / r) per window of 128 anchors."""
    full, rest = divmod(context_tokens, SLOT_WINDOW)
    return full * math.ceil(SLOT_WINDOW / ratio) + math.ceil(rest / ratio)


def kept_positions(context_tokens: int, budget: str, ratio: int, kv_values: int, slot_values: int) -> int:
    """Cache positions a press keeps of `[BOS] + context` (context_tokens + 1 positions).

    positions: one per slot, plus one for the [BOS] that ComprExIT's decoder reads beside its
    slots (so the kvpress cache is exactly as long as ComprExIT's decoder prefix).
    bytes: the slots' values (slots x hidden size) in whole cache positions (kv_values each),
    rounded to the nearest (halves up), plus the same one for [BOS]. The press chooses which
    positions it keeps; [BOS] is not forced.
    full: every position (no compression).
    """
    slots = slot_count(context_tokens, ratio)
    if budget == "positions":
        kept = slots + 1
    elif budget == "bytes":
        kept = math.floor(slots * slot_values / kv_values + 0.5) + 1  # nearest, halves up
    elif budget == "full":
        kept = context_tokens + 1
    else:
        raise ValueError(f"unknown budget {budget!r}")
    return min(kept, context_tokens + 1)


def compression_ratio_for(length: int, kept: int) -> float:
    """kvpress's compression_ratio that keeps exactly `kept` of `length` positions.

    kvpress keeps int(length * (1 - ratio)) positions; aiming half a position above `kept`
    makes that floor land on `kept` whatever the float rounding.
    """
    return 0.0 if kept >= length else 1.0 - (kept + 0.5) / length


# --------------------------------------------------------------------------- compression and decoding


@dataclasses.dataclass
class CompressedContext:
    """A document's pruned cache: per layer (keys, values), each (1, kv heads, kept, head dim)."""

    layers: list[tuple[Any, Any]]
    length: int  # positions of [BOS] + context before pruning: the first question position
    seconds: float  # prefill and pruning
    kept_whole: bool = False  # too short for the press: the full cache was kept

    @property
    def kept(self) -> int:
        return self.layers[0][0].shape[2]

    def stats(self) -> ContextStats:
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)
        return ContextStats(self.kept, nbytes, self.seconds, self.kept_whole)


@dataclasses.dataclass(frozen=True)
class ContextStats:
    """What a results file reports of one pruned cache (memory and time per document)."""

    kept: int
    nbytes: int
    seconds: float
    kept_whole: bool


def make_press(kvpress, spec: PressSpec):
    if spec.class_name is None:
        return None
    return getattr(kvpress, spec.class_name)()


def compress_context(lm: Model, press, ids: list[int], kept: int) -> CompressedContext:
    """Prefill `ids` ([BOS] + context) once, pruned by `press` during that pass to `kept` positions.

    SnapKV keeps its whole observation window (64 positions by default), which is larger than
    the byte budget; its window is capped at half of what is kept, so that it still chooses.
    """
    import torch
    from transformers import DynamicCache

    length = len(ids)
    cache = DynamicCache()  # one full layer per attention layer, as kvpress's own pipeline uses
    start = time.perf_counter()
    kept_whole = press is None or kept >= length or length <= getattr(press, "n_sink", 0) + 1
    with torch.no_grad():
        inputs = torch.tensor([ids], device=lm.device)
        if kept_whole:
            lm.model.model(input_ids=inputs, past_key_values=cache, use_cache=True)
        else:
            press.compression_ratio = compression_ratio_for(length, kept)
            if hasattr(press, "window_size"):
                press.window_size = min(type(press)().window_size, max(1, kept // 2))
            with press(lm.model):
                bind_layer_rotary(lm.model)
                lm.model.model(input_ids=inputs, past_key_values=cache, use_cache=True)
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)
    seconds = time.perf_counter() - start
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    expected = length if kept_whole else kept
    sizes = {k.shape[2] for k, _ in layers}
    if sizes != {expected}:
        raise RuntimeError(f"{type(press).__name__} left {sorted(sizes)} positions per layer, not {expected}")
    return CompressedContext(layers, length, seconds, kept_whole and press is not None)


def greedy_answers(lm: Model, contexts: Sequence[CompressedContext], prompts: Sequence[list[int]],
                   max_new_tokens: int) -> list[list[int]]:
    """Greedy tokens after each row's pruned cache and prompt, cut at the first stop token.

    Rows sit side by side as `[pad][cache_i][pad][prompt_i]` (pads masked); prompt tokens take
    the positions that follow the full context (kvpress keeps the original positions of the
    kept keys). A sliding-window layer (Gemma-3: 512) counts pad slots in its window: rows that
    could reach past the window (long uncompressed caches) are decoded in groups of one prompt
    length, so that no pad stands between their cache and their prompt, as in comprexit's
    left-padded decoding; the others (every pruned cache) share one batch.
    """
    window = getattr(lm.config, "sliding_window", None)
    width = max(len(p) for p in prompts)
    tight = {i for i, c in enumerate(contexts) if window and c.kept + width + max_new_tokens >= window}
    lengths = sorted({len(prompts[i]) for i in tight})
    if not tight or (len(tight) == len(prompts) and len(lengths) == 1):
        return _greedy_batch(lm, contexts, prompts, max_new_tokens)
    groups = [[i for i in range(len(prompts)) if i not in tight]]
    groups += [[i for i in sorted(tight) if len(prompts[i]) == length] for length in lengths]
    answers: dict[int, list[int]] = {}
    for rows in filter(None, groups):
        tokens = greedy_answers(lm, [contexts[i] for i in rows], [prompts[i] for i in rows], max_new_tokens)
        answers.update(zip(rows, tokens, strict=True))
    return [answers[i] for i in range(len(prompts))]


def _greedy_batch(lm: Model, contexts, prompts, max_new_tokens: int) -> list[list[int]]:
    import torch
    from transformers import DynamicCache

    device, rows = lm.device, len(prompts)
    cached, width = max(c.kept for c in contexts), max(len(p) for p in prompts)
    cache = DynamicCache()
    for index in range(len(contexts[0].layers)):
        keys, values = contexts[0].layers[index]
        shape = (rows, keys.shape[1], cached, keys.shape[3])
        batch_keys, batch_values = keys.new_zeros(shape), values.new_zeros(shape)
        for row, context in enumerate(contexts):
            k, v = context.layers[index]
            batch_keys[row, :, cached - k.shape[2]:] = k[0]
            batch_values[row, :, cached - v.shape[2]:] = v[0]
        cache.update(batch_keys, batch_values, index)
    ids = torch.full((rows, width), lm.pad_id, dtype=torch.long)
    mask = torch.zeros((rows, cached + width), dtype=torch.long)
    positions = torch.zeros((rows, width), dtype=torch.long)
    for row, (context, prompt) in enumerate(zip(contexts, prompts, strict=True)):
        mask[row, cached - context.kept: cached] = 1
        if prompt:
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, cached + width - len(prompt):] = 1
            positions[row, width - len(prompt):] = torch.arange(context.length, context.length + len(prompt))
    ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
    stops = torch.tensor(lm.stop_ids or [-1], device=device)
    out: list[Any] = []
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                              use_cache=True, logits_to_keep=1).logits[:, -1]
            token = logits.argmax(-1)
            out.append(token)
            done |= torch.isin(token, stops)
            if bool(done.all()):
                break
            ids = token[:, None]
            mask = torch.cat([mask, mask.new_ones((rows, 1))], dim=1)
            positions = positions[:, -1:] + 1
    tokens = torch.stack(out, dim=1).tolist()
    stop_set = set(lm.stop_ids)
    return [_cut_at_stop(row, stop_set) for row in tokens]


def _cut_at_stop(tokens: list[int], stops: set[int]) -> list[int]:
    for i, token in enumerate(tokens):
        if token in stops:
            return tokens[:i]
    return tokens


# --------------------------------------------------------------------------- evaluation


@dataclasses.dataclass
class PreparedDataset:
    """One dataset's questions as token ids, tokenized once for every run."""

    dataset: Any  # comprexit QADataset
    contexts: list[tuple[int, ...]]  # per question: the kept tail of its context
    cut: dict[str, bool]  # per distinct context text: was it cut? (as comprexit eval counts them)
    prompts: list[list[int]]


def prepare_datasets(args, lm: Model, parts) -> dict[str, PreparedDataset]:
    qa, prompting = parts["qa"], parts["prompting"]
    template = prompting.PromptTemplate(prompting.DEFAULT_TEMPLATE)
    prepared = {}
    for spec in args.data:
        dataset = qa.load_qa(spec, skip_malformed=args.skip_malformed)
        dataset = dataset.limit(args.limit) if args.limit else dataset
        tails: dict[str, tuple[tuple[int, ...], bool]] = {}
        contexts, prompts = [], []
        for example in dataset:
            if example.context not in tails:
                tail, cut = qa.keep_tail(lm.tokenize(example.context), args.context_budget)
                tails[example.context] = (tuple(tail), cut)
            contexts.append(tails[example.context][0])
            prompts.append(lm.tokenize(template.render(example.question)))
        cut = {text: was_cut for text, (_, was_cut) in tails.items()}
        prepared[dataset_key(spec)] = PreparedDataset(dataset, contexts, cut, prompts)
    return prepared


def evaluate_dataset(lm: Model, press, budget: str, name: str, data: PreparedDataset, args, parts):
    """One dataset's summary (as comprexit's runner writes it, plus memory and time per document)
    and its predictions. Questions go longest context first, so a batch holds similar lengths;
    each distinct context of a batch is prefilled and pruned once."""
    from tqdm.auto import tqdm

    metrics, answer = parts["metrics"], parts["answers"].get_answer_rule(parts["answers"].PAPER)
    kv_values, slot_values = lm.kv_values_per_position, lm.config.hidden_size
    start = time.perf_counter()
    order = sorted(range(len(data.contexts)), key=lambda i: (-len(data.contexts[i]), i))
    answers: dict[int, str] = {}
    stats: dict[tuple[int, ...], ContextStats] = {}
    bar = tqdm(total=len(order), desc=f"{name} ({budget})", unit="q", disable=args.no_progress)
    for first in range(0, len(order), args.batch_size):
        batch = order[first:first + args.batch_size]
        current: dict[tuple[int, ...], CompressedContext] = {}
        for context in dict.fromkeys(data.contexts[i] for i in batch):
            kept = kept_positions(len(context), budget, args.ratio, kv_values, slot_values)
            current[context] = compress_context(lm, press, lm.bos_ids + list(context), kept)
        tokens = greedy_answers(lm, [current[data.contexts[i]] for i in batch], [data.prompts[i] for i in batch],
                                args.max_new_tokens)
        for i, row in zip(batch, tokens, strict=True):
            answers[i] = answer(lm.tokenizer.decode(row, skip_special_tokens=True))
        stats.update((context, result.stats()) for context, result in current.items())
        bar.update(len(batch))
    bar.close()
    seconds = time.perf_counter() - start
    totals, rows = metrics.ScoreTotals(), []
    for i, example in enumerate(data.dataset):
        em, f1 = metrics.score(answers[i], example.answers)
        totals.add(em, f1)
        rows.append(parts["report"].prediction_row(example, answers[i], em, f1))
    documents = list(stats.values())
    element = lm.model.get_input_embeddings().weight.element_size()
    slot_bytes = sum(slot_count(len(context), args.ratio) for context in stats) * slot_values * element
    summary = totals.to_dict()
    summary.update(
        dataset=data.dataset.name, source=data.dataset.source, contexts=len(data.cut),
        contexts_cut=sum(data.cut.values()), skipped_lines=data.dataset.skipped_lines, answered_now=len(order),
        seconds=round(seconds, 2), questions_per_second=round(len(order) / seconds, 2) if seconds else None,
        kv_positions_per_context=round(sum(d.kept for d in documents) / len(documents), 2),
        kv_bytes_per_context=round(sum(d.nbytes for d in documents) / len(documents)),
        slot_bytes_per_context=round(slot_bytes / len(documents)),
        compress_seconds=round(sum(d.seconds for d in documents), 3),
        contexts_kept_whole=sum(d.kept_whole for d in documents),
        cost=document_cost(documents, kv_values),
    )
    return summary, rows


def document_cost(documents: Sequence[ContextStats], kv_values: int) -> dict[str, Any]:
    """Per document, in the fields of comprexit's `evaluation/costs.py` (so `comprexit table --costs` reads
    them): the press's time, the kept cache positions ([BOS] included), and their keys and values, which are both what is
    kept and the decoder's cache."""
    n = len(documents)
    kept = sum(d.kept for d in documents)
    return {"documents": n, "compress_ms": round(1000 * sum(d.seconds for d in documents) / n, 3),
            "positions": round(kept / n, 1), "stored_values": round(kept * kv_values / n),
            "cache_values": round(kept * kv_values / n)}


def combined_cost(summaries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The per-document means over datasets, each weighted by its documents (comprexit's own averaging)."""
    return import_comprexit_parts()["report"].combined_costs([s.get("cost") for s in summaries])


def evaluate_run(lm: Model, kvpress, spec: PressSpec, budget: str, prepared: dict[str, PreparedDataset],
                 args, parts) -> dict[str, Any]:
    """One press at one budget over every dataset, as a `comprexit eval` results dict."""
    press = make_press(kvpress, spec)
    results: dict[str, Any] = {}
    predictions: dict[str, list[dict]] = {}
    start = time.perf_counter()
    for name, data in prepared.items():
        results[name], predictions[name] = evaluate_dataset(lm, press, budget, f"{spec.name} {name}", data, args,
                                                            parts)
    answered = sum(r["answered_now"] for r in results.values())
    decode_seconds = sum(r["seconds"] for r in results.values())
    c = lm.config
    out = {
        "method": method_settings(spec, press, budget, args, lm),
        "settings": {"context_budget": args.context_budget, "max_new_tokens": args.max_new_tokens,
                     "batch_size": args.batch_size, "template": parts["prompting"].DEFAULT_TEMPLATE,
                     "answer_rule": parts["answers"].PAPER},
        "datasets": results,
        "average": parts["metrics"].average_over_datasets(results),
        "cost": combined_cost(list(results.values())),
        "wall_seconds": round(time.perf_counter() - start, 2),
        "questions_per_second": round(answered / decode_seconds, 2) if decode_seconds else None,
        "label": run_label(spec, budget, args.ratio),
        "backbone": {"name": "gemma-3-270m" if _is_bundled(lm) else str(lm.folder), "model_type": c.model_type,
                     "hidden_size": c.hidden_size, "num_layers": c.num_hidden_layers, "vocab_size": c.vocab_size,
                     "dtype": str(lm.dtype).replace("torch.", ""), "folder": str(lm.folder)},
        "environment": {**parts["report"].environment(lm.device), "kvpress": kvpress_version()},
    }
    if args.predictions:
        out["predictions"] = predictions
    return out


def _is_bundled(lm: Model) -> bool:
    return lm.folder.name.startswith("gemma-3-270m-")


def run_label(spec: PressSpec, budget: str, ratio: int) -> str:
    if budget == "full":
        return "kvpress harness, full cache (check)"
    what = f"positions of {ratio}x slots" if budget == "positions" else f"bytes of {ratio}x slots"
    return f"kvpress {spec.name}, {what} (peer)"


def method_settings(spec: PressSpec, press, budget: str, args, lm: Model) -> dict[str, Any]:
    """What the results file says the row is: `ratio` places it in the paper layout's 4x table."""
    fields = {}
    if press is not None:
        defaults = type(press)()
        fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(press)
                  if f.name != "compression_ratio" and isinstance(getattr(defaults, f.name), (int, float, str, bool))}
    return {
        "method": "kvpress",
        "peer": True,
        "press": spec.name,
        "press_class": spec.class_name,
        "press_defaults": fields,
        "budget": budget,
        "ratio": None if budget == "full" else args.ratio,
        "kv_values_per_position": lm.kv_values_per_position,
        "slot_values": lm.config.hidden_size,
        "budget_rule": {
            "positions": "ComprExIT's slots (ceil(w/r) per 128-token window) + 1 for [BOS]",
            "bytes": "nearest(slots x slot values / KV values per position) + 1 for [BOS]",
            "full": "the whole [BOS] + context cache",
        }[budget],
        "notes": spec.why + ("; SnapKV's observation window capped at half the kept positions"
                             if spec.name == "snapkv" else ""),
        "kvpress": kvpress_version(),
    }


def kvpress_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kvpress")
    except PackageNotFoundError:
        return "unknown"


def planned_runs(presses: Sequence[str], budgets: Sequence[str]) -> list[tuple[PressSpec, str]]:
    """(press, budget) pairs in order; the uncompressed check runs once, at the full budget."""
    return [(PRESSES[name], budget) for name in presses
            for budget in (["full"] if PRESSES[name].class_name is None else budgets)]


def run(args: argparse.Namespace, kvpress, parts) -> None:
    folder = Path(args.model) if args.model else find_dense_model()
    lm = load_model(folder, args.device, args.dtype)
    print(f"kvpress {kvpress_version()}, transformers {sys.modules['transformers'].__version__}; model {folder} "
          f"({type(lm.model).__name__}, {lm.dtype}, {lm.device}); KV values per position "
          f"{lm.kv_values_per_position}, slot values {lm.config.hidden_size} "
          f"({lm.kv_values_per_position / lm.config.hidden_size:.1f}x)", flush=True)
    prepared = prepare_datasets(args, lm, parts)
    for spec, budget in planned_runs(args.presses, args.budgets):
        path = Path(args.output_dir) / f"kvpress-{spec.name}-{budget}.json"
        if path.exists() and not args.overwrite:
            print(f"{path} exists: skipped (--overwrite redoes it)")
            continue
        results = evaluate_run(lm, kvpress, spec, budget, prepared, args, parts)
        json_path, _ = parts["report"].write_results(results, path)
        for name, r in results["datasets"].items():
            print(f"{results['label']:>44} {name:>12}: EM {r['em']:6.2f}  F1 {r['f1']:6.2f}  "
                  f"({r['count']} q, {r['kv_positions_per_context']} positions/context)")
        print(f"wrote {json_path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_arguments(args)
        kvpress = require_kvpress()
        parts = import_comprexit_parts()
        logging.getLogger("kvpress").setLevel(logging.ERROR)  # "model not tested" at every prefill
        try:
            run(args, kvpress, parts)
        except parts["errors"].ComprexitError as error:  # a bad data file: comprexit's one-line message
            raise UsageError(str(error)) from None
    except UsageError as error:
        print(f"kvpress_eval.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
