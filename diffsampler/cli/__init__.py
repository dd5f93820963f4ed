"""The command lines: ``diffsampler-train`` (``cli.train``) and ``diffsampler-benchmark`` (``cli.benchmark``).

Both check their arguments against ``cli.schema`` before torch is imported.
"""
