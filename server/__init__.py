"""The boltzgen service, in three parts under the app factory (``server.app.create_app``) and
its settings (``server.settings.Settings``):

- ``server.http``: the HTTP side -- routes per resource, dependencies, auth, problem+json
  errors, pagination, body limits, idempotency, the OpenAPI document, downloads, metrics;
- ``server.storage``: the store (tables, migrations), the job queue and the on-disk layout;
- ``server.runner``: the worker pool and the executors that run jobs.

``http`` and ``runner`` both use ``storage`` and never each other
(``tests/test_server_structure.py``).
"""
