"""LLenergyMeasure: energy measurement campaigns for LLM inference.

The layers and the sides the package's modules belong to: docs/architecture.md.
`run_campaign` (what `lem run` does, through ansible-runner) is in
`llenergymeasure.commands.drive`, with the other entry points.
"""

__version__ = "0.1.0"
