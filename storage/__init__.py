"""SQLite storage for brushfire: connection, migrations and one repository module per table group."""
