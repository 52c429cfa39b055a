"""The figures results/explain/README.md and the README quote about the shipped compressor on a document.

Usage: python scripts/results/explain_stats.py [DOCUMENT] [-o OUT_PREFIX]
(default: examples/lighthouse.txt -> results/explain/stats.json and .md)

From `comprexit.reporting.explain_text` (the compressor's own diagnostics, CPU float32): each
slot's share drawn from its own field of r tokens, the sender capacity of name tokens against
function words and punctuation, and the mean layer weights of depth-wise transmission.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from comprexit.evaluation.report import environment
from comprexit.reader import Reader
from comprexit.reporting import explain_text

ROOT = Path(__file__).resolve().parents[2]
# the lighthouse's name tokens, and the function words and punctuation they are set against
NAMES = {" Harrow", " Keel", " Bay", " Thomas", " Reed", " Paris", " Agnes", " Mallory", " Fresnel"}
FUNCTION_WORDS = {" the", " of", " a", " and", " in", " to", ".", ",", " by", " is", " was", "The", " that"}


def stats(reader: Reader, text: str) -> dict:
    explanation = explain_text(reader, text)
    capacity = explanation.relative_capacity()
    names = [float(capacity[i]) for i, token in enumerate(explanation.tokens) if token in NAMES]
    function = [float(capacity[i]) for i, token in enumerate(explanation.tokens) if token in FUNCTION_WORDS]
    field = explanation.slot_field - explanation.slot_start[:, None]
    own = np.array([explanation.draws[s, a:b].sum() for s, (a, b) in enumerate(field)])
    layers = explanation.layer_weights.mean(0)
    return {
        "tokens": explanation.num_tokens, "slots": explanation.num_slots,
        "own_field_share": {"mean": round(float(own.mean()), 3), "min": round(float(own.min()), 3),
                            "median": round(float(np.median(own)), 3)},
        "capacity_names": {"count": len(names), "mean": round(float(np.mean(names)), 3), "min": round(min(names), 3)},
        "capacity_function_words": {"count": len(function), "mean": round(float(np.mean(function)), 3),
                                    "max": round(max(function), 3)},
        "mean_layer_weights": [round(float(w), 3) for w in layers],  # embeddings, layers 1.., the final state
    }


def markdown(result: dict) -> str:
    s, env = result["stats"], result["environment"]
    weights = ", ".join(f"{i}: {w}" for i, w in enumerate(s["mean_layer_weights"]))
    return "\n".join([
        f"# Explain figures: {result['document']}, {s['tokens']} tokens -> {s['slots']} slots", "",
        f"Compressor `{result['compressor']}`, {env['device']}, float32, commit {env['commit']}, {env['date']}.", "",
        "| figure | value |", "|---|---:|",
        f"| slot's share from its own field: mean / min / median | {s['own_field_share']['mean']} / "
        f"{s['own_field_share']['min']} / {s['own_field_share']['median']} |",
        f"| capacity of {s['capacity_names']['count']} name tokens: mean / lowest | {s['capacity_names']['mean']} / "
        f"{s['capacity_names']['min']} |",
        f"| capacity of {s['capacity_function_words']['count']} function-word tokens: mean / highest | "
        f"{s['capacity_function_words']['mean']} / {s['capacity_function_words']['max']} |",
        "", f"Mean layer weights (0 = embeddings, last = final state): {weights}", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("document", nargs="?", type=Path, default=ROOT / "examples" / "lighthouse.txt")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "results" / "explain" / "stats")
    parser.add_argument("--compressor", type=Path, help="weights folder (default: the shipped one)")
    parser.add_argument("--label", help="how the results name the compressor (default: its folder)")
    args = parser.parse_args()
    if not args.document.is_file():
        parser.error(f"no such document: {args.document}")
    reader = Reader.load(device="cpu", dtype="float32", compressor=args.compressor)
    folder = Path(reader.compressor_name)
    name = args.label or (str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else folder.name)
    result = {"document": args.document.name, "compressor": name,
              "stats": stats(reader, args.document.read_text()), "environment": environment("cpu")}
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(result))
    print(f"{args.output}.json\n{args.output}.md")


if __name__ == "__main__":
    main()
