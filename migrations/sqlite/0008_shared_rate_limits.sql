-- Rate limits on public endpoints, shared by every replica (a player's phone may reach any
-- of them). One row per key, a keyed hash of an address, a page cookie or an email: `tat`
-- is when its allowance is next whole again (GCRA's theoretical arrival time, Unix ms).
CREATE TABLE rate_limits (
    key  TEXT PRIMARY KEY NOT NULL,
    tat  BIGINT NOT NULL
);
