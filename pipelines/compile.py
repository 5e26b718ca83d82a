"""`python -m pipelines.compile [--out FILE]`: write the pipeline's YAML (checked in, diffed by a test)."""

from __future__ import annotations

import argparse
from pathlib import Path

COMPILED = Path(__file__).resolve().parent / "compiled" / "training_pipeline.yaml"


def compile_pipeline(out: Path = COMPILED) -> Path:
    """Compile `training_pipeline` to `out` (kfp's IR YAML, what `kfp.Client` uploads)."""
    from kfp import compiler

    from pipelines.training_pipeline import training_pipeline

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, str(out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.compile", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=COMPILED, help=f"default: {COMPILED}")
    args = parser.parse_args(argv)
    print(f"wrote {compile_pipeline(args.out)}")


if __name__ == "__main__":
    main()
