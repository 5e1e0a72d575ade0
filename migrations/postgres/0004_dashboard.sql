-- The owner's dashboard: people who sign in, what they did, failed sign-ins (for
-- throttling that holds across replicas), and a few installation-wide facts.

CREATE TABLE users (
    id              TEXT PRIMARY KEY NOT NULL,
    email           TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    -- Bumped on every password change: a session carrying an older epoch is over.
    session_epoch   BIGINT NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE TABLE audit_log (
    id        TEXT PRIMARY KEY NOT NULL,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    ip        TEXT,
    action    TEXT NOT NULL,
    subject   TEXT,
    detail    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);

-- One row per throttled key ('account:<email>' or 'ip:<address>').
CREATE TABLE login_failures (
    key             TEXT PRIMARY KEY NOT NULL,
    failures        BIGINT NOT NULL,
    last_failure_at TEXT NOT NULL
);

CREATE TABLE meta (
    name   TEXT PRIMARY KEY NOT NULL,
    value  TEXT NOT NULL
);

ALTER TABLE cabinets ADD COLUMN archived_at TEXT;
ALTER TABLE payments ADD COLUMN email TEXT;
ALTER TABLE payments ADD COLUMN review_note TEXT;
CREATE INDEX payments_email ON payments (email);
-- Newest-first lists page by (created_at, id), filtered by status or not.
DROP INDEX payments_status;
CREATE INDEX payments_status ON payments (status, created_at, id);
CREATE INDEX payments_created ON payments (created_at, id);
CREATE INDEX stripe_events_object ON stripe_events (object_id);
CREATE INDEX stripe_events_payment ON stripe_events (payment_id);
CREATE INDEX pulses_acked ON pulses (acked_at);
-- "Waiting for ack" per cabinet on the overview.
CREATE INDEX pulses_unacked ON pulses (machine_id) WHERE acked_at IS NULL;
CREATE INDEX payments_updated ON payments (updated_at);
CREATE INDEX plays_received ON plays (received_at);

-- A form's one-time nonce, claimed when it is submitted: a double click on "send credits"
-- or "refund" acts once.
CREATE TABLE form_nonces (
    nonce    TEXT PRIMARY KEY NOT NULL,
    used_at  TEXT NOT NULL
);
CREATE INDEX form_nonces_used ON form_nonces (used_at);
