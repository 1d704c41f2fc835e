"""Celery workers: fetch from the PACS, call the model, record the outcome. Never imports broker."""
