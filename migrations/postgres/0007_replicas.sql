-- Several replicas on one database. A pulse is published by the replica that claims it:
-- the one that committed it, or, once that claim lapses (the replica died), whichever
-- claims it next. Claims are row updates, so two replicas never hold the same pulse.
ALTER TABLE pulses ADD COLUMN claimed_by TEXT;
ALTER TABLE pulses ADD COLUMN claimed_until TEXT;

-- One holder at a time for work that must not run twice at once (the wallet expiry pass,
-- the embedded broker): a row per job, taken over once `until` has passed.
CREATE TABLE leases (
    name    TEXT PRIMARY KEY NOT NULL,
    holder  TEXT NOT NULL,
    until   TEXT NOT NULL,
    -- Where the holder can be reached to check it is alive (host:port), if anywhere.
    probe   TEXT
);
