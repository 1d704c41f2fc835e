"""Names of the Celery tasks: the broker enqueues by name and never imports worker code."""

__all__ = ["RUN_INFERENCE"]

RUN_INFERENCE = "model_proxy.run_inference"
