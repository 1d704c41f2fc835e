"""The ``model-proxy`` command: runs the API, the workers, or everything in one process."""
