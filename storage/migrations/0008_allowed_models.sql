-- brushfire schema version 8: which of the worker's models members may pick per job (/imagine model).
-- A JSON list of served model names; NULL: every model the worker serves.
ALTER TABLE guild_settings ADD COLUMN allowed_models TEXT CHECK (allowed_models IS NULL OR json_valid(allowed_models));
