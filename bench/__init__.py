"""model-proxy's benchmark suite: ``python -m bench`` (``--smoke`` for a quick run).

Every row is a ratio against a baseline measured in the same run on the same machine, so the
numbers travel between machines better than absolute times do. The suite starts real parts
(Orthanc, Redis, the API under uvicorn, worker processes, a sink model) in a temporary directory;
see :mod:`bench.suite` for the sizes and :mod:`bench.rows` for what each row measures.
"""

__all__: list[str] = []
