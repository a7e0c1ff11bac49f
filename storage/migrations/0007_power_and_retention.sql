-- brushfire schema version 7: per-server job limits for power users, the results' format, and image retention.
-- max_steps / max_pixels NULL: the configured limits (the worker's) apply. A retention policy row is
-- optional: a server without one keeps its images for good. generations_created orders pruning by age.

ALTER TABLE guild_settings ADD COLUMN max_steps INTEGER CHECK (max_steps IS NULL OR max_steps >= 1);
ALTER TABLE guild_settings ADD COLUMN max_pixels INTEGER CHECK (max_pixels IS NULL OR max_pixels >= 4096);
-- A JSON list of the sampler names members may pick; NULL: every one brushfire offers.
ALTER TABLE guild_settings ADD COLUMN allowed_samplers TEXT CHECK (allowed_samplers IS NULL OR json_valid(allowed_samplers));
-- The format results are posted in; stored images stay PNG (buttons replay from them).
ALTER TABLE guild_settings ADD COLUMN output_format TEXT NOT NULL DEFAULT 'png' CHECK (output_format IN ('png', 'webp'));

CREATE TABLE retention_policy (
    guild_id     INTEGER PRIMARY KEY,
    max_age_days INTEGER CHECK (max_age_days IS NULL OR max_age_days >= 1),
    max_bytes    INTEGER CHECK (max_bytes IS NULL OR max_bytes >= 0),
    updated_at   REAL    NOT NULL
);

CREATE INDEX generations_created ON generations (created_at);
