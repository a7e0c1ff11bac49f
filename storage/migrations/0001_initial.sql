-- brushfire schema version 1: guild settings, quota policy, the usage ledger, jobs, generations, audit.
-- Times are unix seconds (REAL); Discord ids are INTEGER snowflakes; lists are JSON text.

CREATE TABLE guild_settings (
    guild_id            INTEGER PRIMARY KEY,
    allowed_channel_ids TEXT    NOT NULL DEFAULT '[]',
    blocked_words       TEXT    NOT NULL DEFAULT '[]',
    nsfw_mode           TEXT    NOT NULL DEFAULT 'spoiler' CHECK (nsfw_mode IN ('spoiler', 'refuse')),
    relax_enabled       INTEGER NOT NULL DEFAULT 1 CHECK (relax_enabled IN (0, 1)),
    default_style       TEXT,
    max_images_per_job  INTEGER NOT NULL DEFAULT 4 CHECK (max_images_per_job >= 1),
    updated_at          REAL    NOT NULL
);

-- The guild's default share; a guild without a row uses the configured default.
CREATE TABLE quota_guild (
    guild_id      INTEGER PRIMARY KEY,
    limit_credits INTEGER NOT NULL CHECK (limit_credits > 0),
    window_s      INTEGER NOT NULL CHECK (window_s > 0),
    updated_at    REAL    NOT NULL,
    updated_by    INTEGER NOT NULL
);

CREATE TABLE quota_role_tier (
    guild_id      INTEGER NOT NULL,
    role_id       INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    limit_credits INTEGER NOT NULL CHECK (limit_credits > 0),
    updated_at    REAL    NOT NULL,
    updated_by    INTEGER NOT NULL,
    PRIMARY KEY (guild_id, role_id)
);

-- One row per user with an override: a fixed limit, unlimited, and/or blocked.
CREATE TABLE quota_user_override (
    guild_id      INTEGER NOT NULL,
    user_id       INTEGER NOT NULL,
    limit_credits INTEGER CHECK (limit_credits IS NULL OR limit_credits > 0),
    unlimited     INTEGER NOT NULL DEFAULT 0 CHECK (unlimited IN (0, 1)),
    blocked       INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1)),
    reason        TEXT,
    updated_at    REAL    NOT NULL,
    updated_by    INTEGER NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE quota_bonus (
    bonus_id   INTEGER PRIMARY KEY,
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    credits    INTEGER NOT NULL CHECK (credits > 0),
    expires_at REAL,
    reason     TEXT,
    granted_at REAL    NOT NULL,
    granted_by INTEGER NOT NULL
);
CREATE INDEX quota_bonus_user ON quota_bonus (guild_id, user_id);

-- The usage ledger: one row per job. `cost` is what the job was charged; `bonus_cost` is the part paid
-- from bonus grants (it does not count against the window). `voided` rows were forgiven by a reset.
CREATE TABLE ledger (
    job_id     TEXT    PRIMARY KEY,
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    cost       INTEGER NOT NULL CHECK (cost >= 0),
    bonus_cost INTEGER NOT NULL DEFAULT 0 CHECK (bonus_cost >= 0 AND bonus_cost <= cost),
    lane       TEXT    NOT NULL CHECK (lane IN ('fast', 'relax')),
    state      TEXT    NOT NULL CHECK (state IN ('reserved', 'committed', 'refunded')),
    voided     INTEGER NOT NULL DEFAULT 0 CHECK (voided IN (0, 1)),
    created_at REAL    NOT NULL,
    updated_at REAL    NOT NULL
);
CREATE INDEX ledger_user_window ON ledger (guild_id, user_id, created_at);
CREATE INDEX ledger_created ON ledger (created_at);

-- Which bonus grants paid for which job, so a refund gives the credits back to the same grants.
CREATE TABLE bonus_spend (
    job_id   TEXT    NOT NULL REFERENCES ledger (job_id) ON DELETE CASCADE,
    bonus_id INTEGER NOT NULL REFERENCES quota_bonus (bonus_id) ON DELETE CASCADE,
    credits  INTEGER NOT NULL CHECK (credits > 0),
    PRIMARY KEY (job_id, bonus_id)
);
CREATE INDEX bonus_spend_bonus ON bonus_spend (bonus_id);

CREATE TABLE jobs (
    job_id               TEXT    PRIMARY KEY,
    guild_id             INTEGER,
    channel_id           INTEGER NOT NULL,
    user_id              INTEGER NOT NULL,
    kind                 TEXT    NOT NULL CHECK (kind IN ('generate', 'img2img', 'edit')),
    parameters           TEXT    NOT NULL CHECK (json_valid(parameters)),
    lane                 TEXT    NOT NULL DEFAULT 'fast' CHECK (lane IN ('fast', 'relax')),
    cost                 INTEGER NOT NULL DEFAULT 0 CHECK (cost >= 0),
    status               TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN
                             ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'refunded')),
    error                TEXT,
    application_id       INTEGER,
    interaction_token    TEXT,
    token_expires_at     REAL,
    progress_message_id  INTEGER,
    result_message_id    INTEGER,
    worker_job_id        TEXT,
    idempotency_key      TEXT UNIQUE,
    parent_job_id        TEXT REFERENCES jobs (job_id) ON DELETE SET NULL,
    parent_generation_id TEXT,
    created_at           REAL    NOT NULL,
    updated_at           REAL    NOT NULL,
    finished_at          REAL
);
CREATE INDEX jobs_user ON jobs (guild_id, user_id, created_at);

-- One row per result image, with everything needed to replay a button from the database alone.
CREATE TABLE generations (
    generation_id        TEXT    PRIMARY KEY,
    job_id               TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    idx                  INTEGER NOT NULL CHECK (idx >= 0),
    prompt               TEXT    NOT NULL,
    negative_prompt      TEXT    NOT NULL DEFAULT '',
    style                TEXT,
    seed                 INTEGER NOT NULL,
    width                INTEGER NOT NULL CHECK (width > 0),
    height               INTEGER NOT NULL CHECK (height > 0),
    steps                INTEGER NOT NULL CHECK (steps > 0),
    guidance             REAL    NOT NULL,
    model                TEXT    NOT NULL,
    kind                 TEXT    NOT NULL CHECK (kind IN ('generate', 'img2img', 'edit')),
    parent_generation_id TEXT REFERENCES generations (generation_id) ON DELETE SET NULL,
    nsfw                 INTEGER NOT NULL DEFAULT 0 CHECK (nsfw IN (0, 1)),
    png                  BLOB    NOT NULL,
    deleted              INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    created_at           REAL    NOT NULL,
    UNIQUE (job_id, idx)
);
CREATE INDEX generations_parent ON generations (parent_generation_id);

CREATE TABLE audit (
    audit_id   INTEGER PRIMARY KEY,
    guild_id   INTEGER,
    actor_id   INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    target_id  INTEGER,
    detail     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail)),
    created_at REAL    NOT NULL
);
CREATE INDEX audit_guild ON audit (guild_id, created_at);
