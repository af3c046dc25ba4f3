"""Alembic migrations of the store's schema (``server.tables``).

``Store.create_all()`` runs ``upgrade head`` on open (see ``server.store``), so a store created
by an older release upgrades in place; a store created before Alembic was added (tables but no
``alembic_version``) is stamped with the initial revision first. To add a migration: change
``server/tables.py``, then ``alembic -c server/migrations/alembic.ini revision -m "..."`` and
write the ``upgrade``/``downgrade`` steps by hand (``tests/test_server_migrations.py`` checks
that the migrated schema equals the tables).
"""
