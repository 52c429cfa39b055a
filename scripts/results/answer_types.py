"""Where the compressed context loses answers: F1 per kind of gold answer and per answer position, and what
the predictions for year questions hold (the gold year, another year of the context, a year it never names), for
several evaluations of the same questions (e.g. the shipped compressor, prompt tuning over the full
context, the frozen model reading the full context).

Usage:
  python scripts/results/answer_types.py RESULTS.json [RESULTS.json ...] --data QA_FILE [QA_FILE ...] -o OUT.json

Every RESULTS.json comes from `comprexit eval --predictions` on the same questions; --data names the QA files
they were scored on (their contexts give the answer positions). Writes OUT.json and OUT.md.

The rules are RULES below. Token positions come from the bundled backbone's tokenizer (--backbone: another).
"""

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from comprexit.data.qa import load_qa  # noqa: E402
from comprexit.evaluation.report import environment, load_results, write_json_and_markdown  # noqa: E402

YEAR_DIGITS = r"(1\d{3}|20\d{2})"  # a year 1000-2099
YEAR = re.compile(rf"^\s*{YEAR_DIGITS}\s*$")  # an answer that is a year alone
YEARS_IN = re.compile(rf"(?<!\d){YEAR_DIGITS}(?!\d)")  # every year a text names
NUMBER_WORDS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million", "billion", "dozen", "half"}
KINDS = ("year", "number", "name", "other")
POSITIONS = ("first third", "middle third", "last third", "absent")
WINDOWS = ("window 1 (tokens 0-127)", "window 2 (128-255)", "windows 3+ (256-)", "absent")
YEAR_OUTCOMES = ("the gold year", "another year of the context", "a year not in the context, within 10 of the gold",
                 "a year not in the context, further", "no year")
RULES = ("Kinds, from the gold answers, first rule that holds: year (a gold answer is a year 1000-2099 alone), "
         "number (one holds a digit or a number word), name (the first gold answer is one to four words, each "
         "capitalised), other. Position: where the first gold answer first appears in the context (case-folded), "
         "in thirds of the context's characters; window: the optimal-transport window (128 tokens, `[BOS]` not "
         "counted) of the context token where it starts; absent when it does not appear verbatim. F1 in percent, "
         "each question weighing the same.")


def answer_kind(answers: list[str]) -> str:
    if any(YEAR.match(a) for a in answers):
        return "year"
    if any(re.search(r"\d", a) or NUMBER_WORDS & set(re.findall(r"[a-z]+", a.lower())) for a in answers):
        return "number"
    words = answers[0].split()
    if 1 <= len(words) <= 4 and all(w[:1].isupper() for w in words):
        return "name"
    return "other"


def answer_position(context: str, answer: str) -> str:
    at = context.lower().find(answer.lower().strip())
    if at < 0 or not answer.strip():
        return "absent"
    return POSITIONS[min(2, 3 * at // max(len(context), 1))]


def answer_window(context: str, answer: str, tokenizer, window: int = 128) -> str:
    at = context.lower().find(answer.lower().strip())
    if at < 0 or not answer.strip():
        return "absent"
    start = len(tokenizer(context[:at], add_special_tokens=False)["input_ids"])
    return WINDOWS[min(2, start // window)]


def year_outcome(prediction: str, answers: list[str], context: str) -> str:
    """What a prediction for a year question holds: a year of the gold answers, another year the context names
    (the right digits bound to the wrong event), a year the context never names (digits lost: near the gold year
    when only its last digits went), or no year."""
    said = YEARS_IN.findall(prediction)
    if not said:
        return "no year"
    gold = {y for a in answers for y in YEARS_IN.findall(a)}
    if gold & set(said):
        return "the gold year"
    if set(said) & set(YEARS_IN.findall(context)):
        return "another year of the context"
    near = any(abs(int(s) - int(g)) <= 10 for s in said for g in gold)
    return "a year not in the context, " + ("within 10 of the gold" if near else "further")


def mean_f1(rows: dict, keys) -> float:
    """Mean F1 in percent (prediction rows hold it as a fraction)."""
    return round(100 * sum(rows[k]["f1"] for k in keys) / len(keys), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--backbone", default=None, help="whose tokenizer counts token positions (default: bundled)")
    args = parser.parse_args()
    contexts = {qa.qid: qa.context for spec in args.data for qa in load_qa(spec)}
    runs = [load_results(path) for path in args.results]
    rows = [{(name, row["qid"]): row for name, found in run.get("predictions", {}).items() for row in found}
            for run in runs]
    if not all(rows):
        sys.exit("every results file needs its predictions (comprexit eval --predictions)")
    questions = sorted(set.intersection(*(set(r) for r in rows)))
    if len(questions) != len(rows[0]) or any(len(r) != len(questions) for r in rows):
        sys.exit("the results files do not hold the same questions")
    missing = [qid for _, qid in questions if qid not in contexts]
    if missing:
        sys.exit(f"{len(missing)} question(s) not in --data, e.g. {missing[0]}")
    from comprexit import Backbone

    tokenizer = Backbone.load(args.backbone, device="cpu").tokenizer
    groups: dict[str, dict[str, list]] = {"kind": {}, "position": {}, "window": {}}
    for key in questions:
        first, context = rows[0][key], contexts[key[1]]
        groups["kind"].setdefault(answer_kind(first["answers"]), []).append(key)
        groups["position"].setdefault(answer_position(context, first["answers"][0]), []).append(key)
        groups["window"].setdefault(answer_window(context, first["answers"][0], tokenizer), []).append(key)
    order = {"kind": KINDS, "position": POSITIONS, "window": WINDOWS}
    labels = [run.get("label") or run["method"]["method"] for run in runs]
    table = {by: [{"group": name, "questions": len(groups[by].get(name, [])),
                   "f1": [mean_f1(r, groups[by][name]) if groups[by].get(name) else None for r in rows]}
                  for name in order[by]] for by in groups}
    overall = [mean_f1(r, questions) for r in rows]
    years = groups["kind"].get("year", [])
    counts = [Counter(year_outcome(r[k]["prediction"], r[k]["answers"], contexts[k[1]]) for k in years) for r in rows]
    year_outcomes = [{"outcome": outcome, "questions": [found[outcome] for found in counts]} for outcome in YEAR_OUTCOMES]
    data = {"kind": "answer_types", "results": args.results, "labels": labels, "data": args.data,
            "questions": len(questions), "f1": overall, "groups": table, "year_outcomes": year_outcomes, "rules": RULES,
            "summarized_on": environment()}
    lines = [f"# F1 by kind of answer and by answer position ({len(questions)} questions)", "",
             RULES, ""]
    for by, title in (("kind", "kind of gold answer"), ("position", "position of the gold answer in the context"),
                      ("window", "transport window of the gold answer's first token")):
        lines += [f"## By {title}", "", "| " + " | ".join([by, "questions", *labels]) + " |",
                  "|---|---:|" + "---:|" * len(labels)]
        for row in table[by]:
            f1 = ["-" if v is None else f"{v:.2f}" for v in row["f1"]]
            lines.append(f"| {row['group']} | {row['questions']} | " + " | ".join(f1) + " |")
        lines.append(f"| all | {len(questions)} | " + " | ".join(f"{v:.2f}" for v in overall) + " |")
        lines.append("")
    lines += [f"## What the predictions for the {len(years)} year questions hold", "",
              "A prediction's years (1000-2099) against the gold answers' and the context's; first rule that holds.", "",
              "| outcome | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    lines += [f"| {row['outcome']} | " + " | ".join(str(n) for n in row["questions"]) + " |" for row in year_outcomes]
    lines.append("")
    env = data["summarized_on"]
    lines.append(f"Summarised with commit {env.get('commit')} on {env.get('date')}; "
                 "the evaluations' own devices and commits are in their files.")
    for path in write_json_and_markdown(data, "\n".join(lines) + "\n", args.output):
        print(path)


if __name__ == "__main__":
    main()
