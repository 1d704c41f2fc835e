"""Real parts for the tests: Orthanc, Redis, the example model, workers, generated DICOM."""
