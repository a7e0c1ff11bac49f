"""Tests for storage/: the database, migrations, repositories, backups and crash safety."""
