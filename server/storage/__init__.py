"""What the service keeps: the store (``store``, ``tables``, Alembic ``migrations``), the job
queue over it (``queue``) and where job and model files live under ``state_dir`` (``layout``)."""
