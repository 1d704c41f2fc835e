"""Real parts for development: the tests, the benchmark and the demo all start them from here.

Processes with their output in a log file (:mod:`devtools.processes`), a private Orthanc with
DICOMweb (:mod:`devtools.orthanc`), a Redis server (:mod:`devtools.redis_server`) and generated
DICOM (:mod:`devtools.dicom`). Not part of the installed wheel, which ships only ``model_proxy``;
this package imports neither pytest nor ``tests``.
"""

__all__: list[str] = []
