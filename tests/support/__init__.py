"""Test-only parts: the deployment under test, the token server, the TLS front, a contract model.

The real servers (Orthanc, Redis, processes, generated DICOM) live in ``devtools/``, which the
benchmark and the demo use as well.
"""
