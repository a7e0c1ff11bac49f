-- brushfire schema version 4: guild style presets and community style challenges.
-- Fairness rules live in the schema so that a double click, two processes or a race cannot break them:
-- one live challenge per channel (partial unique index), at most max_entries per member and a vote budget
-- per member (triggers that count inside the inserting transaction), one vote per member per entry
-- (primary key), and no vote for one's own entry (trigger).

CREATE TABLE guild_styles (
    guild_id      INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    description   TEXT    NOT NULL DEFAULT '',
    prompt        TEXT    NOT NULL CHECK (instr(prompt, '{prompt}') > 0),
    negative      TEXT    NOT NULL DEFAULT '',
    steps         INTEGER CHECK (steps IS NULL OR steps >= 1),
    guidance      REAL    CHECK (guidance IS NULL OR guidance >= 0),
    aspect        TEXT,
    adapter       TEXT,
    adapter_scale REAL    NOT NULL DEFAULT 1.0 CHECK (adapter_scale >= 0),
    created_by    INTEGER NOT NULL,
    created_at    REAL    NOT NULL,
    PRIMARY KEY (guild_id, name)
);

-- A recurring challenge: every `period_s` from `next_start_at`, a challenge on the next theme starts itself.
CREATE TABLE challenge_schedules (
    schedule_id   INTEGER PRIMARY KEY,
    guild_id      INTEGER NOT NULL,
    channel_id    INTEGER NOT NULL,
    style         TEXT    NOT NULL,
    themes        TEXT    NOT NULL CHECK (json_valid(themes) AND json_array_length(themes) >= 1),
    period_s      INTEGER NOT NULL CHECK (period_s > 0),
    submit_s      INTEGER NOT NULL CHECK (submit_s > 0),
    vote_s        INTEGER NOT NULL CHECK (vote_s > 0 AND submit_s + vote_s <= period_s),
    max_entries   INTEGER NOT NULL CHECK (max_entries >= 1),
    next_theme    INTEGER NOT NULL DEFAULT 0 CHECK (next_theme >= 0),
    next_start_at REAL    NOT NULL,
    active        INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_by    INTEGER NOT NULL,
    created_at    REAL    NOT NULL
);
CREATE UNIQUE INDEX challenge_schedules_channel ON challenge_schedules (channel_id) WHERE active = 1;

-- `announced` is the phase whose announcement reached Discord; a start after a crash posts the rest.
CREATE TABLE challenges (
    challenge_id    INTEGER PRIMARY KEY,
    guild_id        INTEGER NOT NULL,
    channel_id      INTEGER NOT NULL,
    theme           TEXT    NOT NULL,
    style           TEXT    NOT NULL,
    phase           TEXT    NOT NULL DEFAULT 'submissions'
                        CHECK (phase IN ('submissions', 'voting', 'closed', 'cancelled')),
    announced       TEXT,
    opens_at        REAL    NOT NULL,
    voting_at       REAL    NOT NULL CHECK (voting_at > opens_at),
    closes_at       REAL    NOT NULL CHECK (closes_at > voting_at),
    max_entries     INTEGER NOT NULL CHECK (max_entries >= 1),
    vote_budget     INTEGER NOT NULL CHECK (vote_budget >= 1),
    entries_made    INTEGER NOT NULL DEFAULT 0,  -- numbers entries, so a withdrawn number is never reused
    season          TEXT    NOT NULL,
    message_id      INTEGER,
    gallery_id      INTEGER,
    schedule_id     INTEGER REFERENCES challenge_schedules (schedule_id) ON DELETE SET NULL,
    created_by      INTEGER NOT NULL,
    created_at      REAL    NOT NULL,
    ended_at        REAL
);
CREATE UNIQUE INDEX challenges_live_channel ON challenges (channel_id) WHERE phase IN ('submissions', 'voting');
CREATE INDEX challenges_guild ON challenges (guild_id, phase);

CREATE TABLE challenge_entries (
    entry_id      INTEGER PRIMARY KEY,
    challenge_id  INTEGER NOT NULL REFERENCES challenges (challenge_id) ON DELETE CASCADE,
    number        INTEGER NOT NULL CHECK (number >= 1),
    user_id       INTEGER NOT NULL,
    generation_id TEXT    NOT NULL REFERENCES generations (generation_id) ON DELETE CASCADE,
    message_id    INTEGER,
    created_at    REAL    NOT NULL,
    UNIQUE (challenge_id, generation_id),
    UNIQUE (challenge_id, number)
);
CREATE INDEX challenge_entries_user ON challenge_entries (challenge_id, user_id);

CREATE TRIGGER challenge_entry_cap BEFORE INSERT ON challenge_entries
WHEN (SELECT COUNT(*) FROM challenge_entries WHERE challenge_id = NEW.challenge_id AND user_id = NEW.user_id)
     >= (SELECT max_entries FROM challenges WHERE challenge_id = NEW.challenge_id)
BEGIN
    SELECT RAISE(ABORT, 'challenge entry cap reached');
END;

CREATE TABLE challenge_votes (
    entry_id     INTEGER NOT NULL REFERENCES challenge_entries (entry_id) ON DELETE CASCADE,
    voter_id     INTEGER NOT NULL,
    challenge_id INTEGER NOT NULL REFERENCES challenges (challenge_id) ON DELETE CASCADE,
    created_at   REAL    NOT NULL,
    PRIMARY KEY (entry_id, voter_id)
);
CREATE INDEX challenge_votes_voter ON challenge_votes (challenge_id, voter_id);

CREATE TRIGGER challenge_vote_budget BEFORE INSERT ON challenge_votes
WHEN (SELECT COUNT(*) FROM challenge_votes WHERE challenge_id = NEW.challenge_id AND voter_id = NEW.voter_id)
     >= (SELECT vote_budget FROM challenges WHERE challenge_id = NEW.challenge_id)
BEGIN
    SELECT RAISE(ABORT, 'challenge vote budget spent');
END;

CREATE TRIGGER challenge_no_self_vote BEFORE INSERT ON challenge_votes
WHEN (SELECT user_id FROM challenge_entries WHERE entry_id = NEW.entry_id) = NEW.voter_id
BEGIN
    SELECT RAISE(ABORT, 'no vote for one''s own entry');
END;

-- The final ranking, written with the phase change to 'closed'; points count towards the season.
CREATE TABLE challenge_results (
    challenge_id INTEGER NOT NULL REFERENCES challenges (challenge_id) ON DELETE CASCADE,
    entry_id     INTEGER NOT NULL REFERENCES challenge_entries (entry_id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL,
    rank         INTEGER NOT NULL CHECK (rank >= 1),
    votes        INTEGER NOT NULL CHECK (votes >= 0),
    points       INTEGER NOT NULL CHECK (points >= 0),
    bonus        INTEGER NOT NULL DEFAULT 0 CHECK (bonus >= 0),
    bonus_id     INTEGER,
    PRIMARY KEY (challenge_id, entry_id),
    UNIQUE (challenge_id, rank)
);
CREATE INDEX challenge_results_user ON challenge_results (user_id);
