"""What `train --compile` costs before it pays: the cold time of a first training step with the frozen
backbone's whole body compiled (the former `compiled_backbone`) against each decoder layer compiled (the
present one), the graphs each makes, and the step's time once compiled, beside eager.

Usage: python scripts/results/compile_cost.py OUT_PREFIX [--models tiny gemma] [--modes eager whole regional] [--render]

A step here is what a training step asks of the backbone: the encoder pass over padded rows with every
layer's states (no gradient), the decoder pass over [slots; tokens] with gradients back to the slots and its
backward, and the same decoder pass without gradients (validation). It runs at one width (cold: everything
compiles), at a wider one (dynamic shapes: nothing should compile) and at the first again (warm). "tiny" is
the 3-layer Gemma-3 of tests/tiny.py (batch 4, 96 tokens), "gemma" the bundled Gemma-3-270M (batch 2, 128
tokens), both float32 on the CPU. Each (model, mode) runs in a process of its own, cold: a fresh inductor cache
folder, inductor's FX graph cache and AOTAutograd's cache off. Writes OUT_PREFIX.json and OUT_PREFIX.md.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {"tiny": (4, 96), "gemma": (2, 128)}  # (rows, tokens per row)
WIDER = 24  # tokens added for the second width
SLOTS = 8


def load(model: str):
    from comprexit import Backbone

    if model == "tiny":
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the tests' tiny model, one definition
        from tiny import tiny_backbone

        return tiny_backbone("gemma3-hybrid")
    return Backbone.load(device="cpu")


class Graphs:
    """Inductor behind a counter: each graph dynamo hands over, as its node count and the parameters it reads."""

    def __init__(self):
        from torch._dynamo.backends.registry import lookup_backend

        self.inductor = lookup_backend("inductor")
        self.graphs: list[dict] = []

    def __call__(self, graph_module, example_inputs):
        import torch

        self.graphs.append({"nodes": len(graph_module.graph.nodes), "grad": torch.is_grad_enabled(),
                            "parameters": sum(isinstance(x, torch.nn.Parameter) for x in example_inputs)})
        return self.inductor(graph_module, example_inputs)


def step(backbone, rows: int, width: int, seed: int) -> float:
    """One training step's backbone work (module docstring); returns its seconds."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    high = min(backbone.identity.vocab_size, 20000)
    ids = torch.randint(10, high, (rows, width), generator=generator)
    lengths = [width - 9 if r == 0 else width for r in range(rows)]  # one row shorter: padding and a mask
    start = time.perf_counter()
    with torch.no_grad():
        encoded = backbone.frozen_pass([ids[r, : lengths[r]].tolist() for r in range(rows)], all_layers=True)
    slots = encoded.layers()[:, :SLOTS].mean(dim=2).detach().requires_grad_()  # (rows, SLOTS, hidden)
    embeds = torch.cat([slots, backbone.embed(ids)], dim=1)  # (rows, SLOTS + width, hidden)
    mask = torch.ones(rows, SLOTS + width, dtype=torch.long)
    mask[0, SLOTS + lengths[0]:] = 0
    positions = torch.arange(SLOTS + width).expand(rows, -1)
    hidden = backbone.final_hidden(embeds, mask, positions)
    probe = torch.randn(hidden.shape, generator=generator)
    (hidden * probe).sum().backward()
    with torch.no_grad():
        backbone.final_hidden(embeds, mask, positions)
    return time.perf_counter() - start


def one(model: str, mode: str) -> dict:
    """The three steps of one (model, mode) in this process, cold."""
    import torch
    from torch._dynamo.utils import counters

    torch._inductor.config.fx_graph_cache = False
    torch._functorch.config.enable_autograd_cache = False
    torch._dynamo.reset()
    backbone = load(model)
    rows, width = SHAPES[model]
    graphs = Graphs()
    if mode == "whole":  # the former compiled_backbone: the whole body under one torch.compile
        import copy

        view = copy.copy(backbone)
        view.body = torch.compile(backbone.body, dynamic=True, backend=graphs)
    elif mode == "regional":
        from comprexit.training.compiled import compiled_backbone

        view = compiled_backbone(backbone, backend=graphs)
    else:
        view = backbone
    first = step(view, rows, width, seed=0)
    after_first = len(graphs.graphs)
    wider = step(view, rows, width + WIDER, seed=1)
    warm = step(view, rows, width, seed=2)
    return {"model": model, "mode": mode, "rows": rows, "tokens": width, "first_step_s": round(first, 2),
            "wider_step_s": round(wider, 2), "warm_step_s": round(warm, 2), "graphs_first_step": after_first,
            "graphs": len(graphs.graphs), "graph_nodes": [g["nodes"] for g in graphs.graphs],
            "graph_parameters": [g["parameters"] for g in graphs.graphs],
            "graph_grad": [g["grad"] for g in graphs.graphs], "layer_count": backbone.identity.num_layers,
            "dynamo_unique_graphs": counters["stats"]["unique_graphs"], "threads": torch.get_num_threads()}


def markdown(out: dict) -> str:
    """The table of OUT_PREFIX.json, with what its columns mean."""
    env = out["environment"]
    lines = ["# What --compile costs before it pays: whole body vs each decoder layer compiled", "",
             f"{env['device']}; torch {env['torch']}, transformers {env['transformers']}; commit {env['commit']}; "
             f"{env['date']}. One process per row, cold (fresh inductor cache folder, FX graph and AOTAutograd caches "
             f"off); float32, SDPA, `dynamic=True`. A step: the encoder pass with every layer's states (no grad), the "
             f"decoder pass over [{SLOTS} slots; tokens] with its backward, the decoder pass again without grad. "
             f"`check_compiler` took {out['check_compiler_s']} s.", "",
             "| model | compiled | rows x tokens | first step (s) | 2nd width, +24 tokens (s) | warm step (s) "
             "| graphs | nodes per graph | parameters per graph | load before/after |",
             "|---|---|---|---:|---:|---:|---:|---|---|---|"]
    for row in out["rows"]:
        name = "tiny Gemma-3 (3 layers)" if row["model"] == "tiny" else f"Gemma-3-270M ({row['layer_count']} layers)"
        nodes = ", ".join(map(str, row["graph_nodes"])) or "-"
        params = ", ".join(map(str, sorted(set(row["graph_parameters"])))) or "-"
        lines.append(f"| {name} | {row['mode']} | {row['rows']} x {row['tokens']} | {row['first_step_s']} | "
                     f"{row['wider_step_s']} | {row['warm_step_s']} | {row['graphs']} | {nodes} | {params} | "
                     f"{row['load_before']} / {row['load_after']} |")
    lines += ["", "First step: cold, everything compiles. 2nd width: dynamic shapes, nothing should compile. Warm: the "
              "first width again. Graphs: what dynamo handed inductor over the three steps, with the FX nodes and the "
              "model parameters each reads (one Gemma-3 layer reads 13; the whole body 18 x 13 + embedding + final "
              "norm = 236, 235 without the embedding: the decoder pass reads embeddings given). Load: the 1-minute "
              "load average before and after the row's process (it runs alone on the 2 cores when near 1-1.3)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_prefix")
    parser.add_argument("--models", nargs="+", default=["tiny", "gemma"], choices=sorted(SHAPES))
    parser.add_argument("--modes", nargs="+", default=["eager", "whole", "regional"],
                        choices=["eager", "whole", "regional"])
    parser.add_argument("--render", action="store_true", help="rewrite OUT_PREFIX.md from OUT_PREFIX.json, running nothing")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # the child process of one (model, mode)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return
    if args.render:
        Path(args.out_prefix + ".md").write_text(markdown(json.loads(Path(args.out_prefix + ".json").read_text())))
        return
    import torch

    from comprexit.evaluation.report import environment
    from comprexit.training.compiled import check_compiler

    started = time.perf_counter()
    check_compiler(torch.device("cpu"))  # a C++ compiler is there: inductor builds CPU kernels here
    probe_s = round(time.perf_counter() - started, 1)
    rows = []
    for model in args.models:
        for mode in args.modes:
            load = os.getloadavg()[0]  # another process on these 2 cores would slow every number down
            with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
                done = subprocess.run([sys.executable, __file__, args.out_prefix, "--one", model, mode],
                                      capture_output=True, text=True, env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})
            if done.returncode:
                sys.exit(f"{model} {mode} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
            rows.append({**json.loads(done.stdout.strip().splitlines()[-1]), "load_before": round(load, 2),
                         "load_after": round(os.getloadavg()[0], 2)})
            print(rows[-1], file=sys.stderr)
    out = {"kind": "compile_cost", "rows": rows, "check_compiler_s": probe_s,
           "settings": {"dtype": "float32", "attention": "sdpa", "dynamic": True, "backend": "inductor (default mode)",
                        "fx_graph_cache": False, "autograd_cache": False, "inductor_cache_dir": "fresh per process",
                        "shapes": {m: {"rows": r, "tokens": t, "slots": SLOTS, "wider_by": WIDER}
                                   for m, (r, t) in SHAPES.items()}},
           "environment": environment()}
    Path(args.out_prefix).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_prefix + ".json").write_text(json.dumps(out, indent=2) + "\n")
    Path(args.out_prefix + ".md").write_text(markdown(out))
    print(args.out_prefix + ".md")


if __name__ == "__main__":
    main()
