"""Alembic migrations of the store's schema (``server.storage.tables``).

``Store.create_all()`` runs ``upgrade head`` on open (see ``server.storage.store``), so a store created
by an older release upgrades in place; a store created before Alembic was added (tables but no
``alembic_version``) is stamped with the initial revision first. To add a migration: change
``server/storage/tables.py``, then ``alembic -c server/storage/migrations/alembic.ini revision -m "..."`` and
write the ``upgrade``/``downgrade`` steps by hand (``tests/test_server_migrations.py`` checks
that the migrated schema equals the tables).
"""
