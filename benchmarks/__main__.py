"""``python -m benchmarks``: run the benchmarks and write JSON and Markdown results."""

from __future__ import annotations

import argparse
import shlex
import sys

from .common import Settings, environment, render_markdown, write_results
from .gpu_suite import DEFAULT_BUDGET, PART_LETTERS, run_suite

BENCHMARKS = (
    "group_building",
    "group_building_bound",
    "throughput",
    "frozen_body",
    "optimizer_step",
    "logging_cost",
    "staged_start",
    "diagnostics_cost",
    "muon_step",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_true", help="CPU-sized run, a few minutes on 2 cores (default)")
    scale.add_argument("--full", action="store_true", help="BERT-base sizes and more repetitions")
    scale.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (what the tests run)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=BENCHMARKS,
        default=list(BENCHMARKS),
        metavar="NAME",
        help=f"benchmarks to run: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--output-dir", default="benchmarks/results", help="where to write the results")
    parser.add_argument(
        "--suite",
        choices=("cpu", "gpu"),
        default="cpu",
        help="cpu: the benchmarks above (default); gpu: the GPU suite of benchmarks/gpu_suite.py, about 8 "
        "minutes on one H200 with --device cuda, seconds with --smoke",
    )
    parser.add_argument(
        "--parts", nargs="+", choices=PART_LETTERS, default=list(PART_LETTERS), help="GPU suite: the parts to run"
    )
    parser.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET, help="GPU suite: seconds after which no part starts"
    )
    arguments = parser.parse_args(argv)
    command = "python -m benchmarks " + " ".join(
        shlex.quote(item) for item in (argv if argv is not None else sys.argv[1:])
    )
    if arguments.suite == "gpu":
        if arguments.quick or arguments.full:
            parser.error("the GPU suite has two sizes: the real one (no flag) and --smoke")
        if arguments.device != "cuda" and not arguments.smoke:
            parser.error("the GPU suite at full size needs --device cuda; on a CPU, run it with --smoke")
        scale = "smoke" if arguments.smoke else "full"
        return run_suite(
            scale, arguments.device, arguments.output_dir, arguments.parts, arguments.budget, command.strip()
        )
    settings = Settings(
        scale="full" if arguments.full else "smoke" if arguments.smoke else "quick", device=arguments.device
    )

    import importlib

    results = []
    for name in arguments.only:
        print(f"running {name} ({settings.scale}, {settings.device}) ...", file=sys.stderr, flush=True)
        results.append(importlib.import_module(f".{name}", __package__).run(settings))
    env = environment(settings.device, settings.scale)
    json_path, markdown_path = write_results(results, env, command.strip(), arguments.output_dir)
    print(render_markdown(results, env, command.strip()))
    print(f"written: {json_path}, {markdown_path}", file=sys.stderr)
    missed = [target.name for result in results for target in result.targets if not target.met]
    return 1 if missed and settings.scale != "smoke" else 0


if __name__ == "__main__":
    sys.exit(main())
