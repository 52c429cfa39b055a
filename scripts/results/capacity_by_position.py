"""Does the compressor send the start of a context more than the rest? The sender capacity and each slot's
draws, by position in the context, over the held-out contexts of TRAIN files.

Usage:
  python scripts/results/capacity_by_position.py --data QA_FILE [QA_FILE ...] -o OUT.json
      [--held-out 30] [--limit 300] [--compressor DIR]

Each distinct context of the first --limit held-out questions per file (the questions of
`comprexit eval --held-out 30 --limit 300`) is compressed as `comprexit explain` compresses a document (the
512-token tail, `Reader`). Per third of each context's tokens: the mean relative sender capacity (1 = a uniform
sender), and, for the slots whose own field lies in that third, the share of their value drawn from their own
field, and how far (in tokens) the draw-weighted centre of their sources lies from their field's centre.
Contexts weigh the same. Writes OUT.json and OUT.md.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from comprexit.data.qa import load_qa  # noqa: E402
from comprexit.data.token_cache import is_held_out  # noqa: E402
from comprexit.evaluation.report import environment, write_json_and_markdown  # noqa: E402

THIRDS = ("first third", "middle third", "last third")


def third(positions: np.ndarray, length: int) -> np.ndarray:
    """(n,) index 0/1/2 of the third of a `length`-token context each position lies in."""
    return np.minimum(2, 3 * positions // max(length, 1))


def context_rows(explanation) -> dict[str, list[float]]:
    """Per third of one context: its mean relative capacity, own-field share and source offset of its slots."""
    n = explanation.num_tokens
    capacity = explanation.relative_capacity()
    token_third = third(np.arange(n), n)
    fields = explanation.slot_field
    centre = (fields[:, 0] + fields[:, 1] - 1) / 2  # the middle of tokens start..end-1
    slot_third = third(fields[:, 0], n)
    width = explanation.draws.shape[1]
    sources = explanation.slot_start[:, None] + np.arange(width)[None, :]
    own = ((sources >= fields[:, :1]) & (sources < fields[:, 1:])) * explanation.draws
    drawn_from = (explanation.draws * sources).sum(1)
    out = {}
    for k, name in enumerate(THIRDS):
        slots = slot_third == k
        if not (token_third == k).any() or not slots.any():
            continue
        out[name] = [float(capacity[token_third == k].mean()), float(own[slots].sum(1).mean()),
                     float(np.abs(drawn_from[slots] - centre[slots]).mean())]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--held-out", type=int, default=30)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--compressor", default=None, help="weights folder (default: the shipped one)")
    parser.add_argument("--backbone", default=None, help="default: the bundled one")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    contexts = []
    for spec in args.data:
        held = [qa for qa in load_qa(spec) if is_held_out(qa.context, args.held_out)][: args.limit]
        contexts.extend(dict.fromkeys(qa.context for qa in held))
    from comprexit.reader import Reader
    from comprexit.reporting.explain import explain_text

    reader = Reader.load(args.compressor, args.backbone, device="cpu", dtype="float32")
    found = {name: [] for name in THIRDS}
    for text in tqdm(contexts, desc="contexts", disable=not sys.stderr.isatty()):
        for name, values in context_rows(explain_text(reader, text)).items():
            found[name].append(values)
    rows = [{"third": name, "contexts": len(found[name]),
             **dict(zip(("relative_capacity", "own_field_share", "source_offset_tokens"),
                        np.round(np.mean(found[name], axis=0), 4).tolist()))} for name in THIRDS if found[name]]
    data = {"kind": "capacity_by_position", "compressor": reader.compressor_name, "data": args.data,
            "held_out": args.held_out, "limit": args.limit, "contexts": len(contexts), "rows": rows,
            "summarized_on": environment()}
    lines = [f"# Sender capacity and slot draws by position ({len(contexts)} held-out train contexts)", "",
             f"Compressor `{reader.compressor_name}`. Relative capacity: rho_t times its window's real tokens "
             "(1 = uniform). Own-field share: of a slot's value, the share drawn from its own field of r tokens. "
             "Source offset: tokens between the draw-weighted centre of a slot's sources and its field's centre. "
             "Means over contexts, each weighing the same.", "",
             "| third of the context | contexts | relative capacity | own-field share | source offset (tokens) |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['third']} | {r['contexts']} | {r['relative_capacity']:.3f} | {r['own_field_share']:.3f} "
              f"| {r['source_offset_tokens']:.2f} |" for r in rows]
    env = data["summarized_on"]
    lines += ["", f"{env['device']}, float32, commit {env['commit']}, {env['date']}."]
    for path in write_json_and_markdown(data, "\n".join(lines) + "\n", args.output):
        print(path)


if __name__ == "__main__":
    main()
