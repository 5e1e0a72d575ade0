-- Cabinets, Stripe events, payments, the pulse outbox and plays.
-- Timestamps are UTC text 'YYYY-MM-DDTHH:MM:SS.mmmZ'; money is integer minor units.

CREATE TABLE cabinets (
    machine_id        TEXT PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL,
    game              TEXT NOT NULL DEFAULT '',
    location          TEXT NOT NULL DEFAULT '',
    price_minor       INTEGER NOT NULL,
    currency          TEXT NOT NULL,
    enabled           INTEGER NOT NULL DEFAULT 1,
    secret_salt       TEXT NOT NULL,
    secret_hash       TEXT NOT NULL,
    online            INTEGER NOT NULL DEFAULT 0,
    last_seen_at      TEXT,
    acks_pulses       INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE stripe_events (
    event_id     TEXT PRIMARY KEY NOT NULL,
    event_type   TEXT NOT NULL,
    livemode     INTEGER NOT NULL DEFAULT 0,
    object_id    TEXT,
    outcome      TEXT NOT NULL,
    payment_id   TEXT,
    received_at  TEXT NOT NULL
);

CREATE TABLE payments (
    id                   TEXT PRIMARY KEY NOT NULL,
    checkout_session_id  TEXT UNIQUE,
    payment_intent_id    TEXT,
    machine_id           TEXT,
    amount_minor         INTEGER NOT NULL,
    discount_minor       INTEGER NOT NULL DEFAULT 0,
    currency             TEXT NOT NULL,
    credits              INTEGER NOT NULL,
    status               TEXT NOT NULL,
    review_reason        TEXT,
    refunded_minor       INTEGER NOT NULL DEFAULT 0,
    livemode             INTEGER NOT NULL DEFAULT 0,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX payments_machine ON payments (machine_id, created_at);
CREATE INDEX payments_intent ON payments (payment_intent_id);
CREATE INDEX payments_status ON payments (status, created_at);

CREATE TABLE pulses (
    id            TEXT PRIMARY KEY NOT NULL,
    machine_id    TEXT NOT NULL,
    credits       INTEGER NOT NULL,
    source        TEXT NOT NULL,
    payment_id    TEXT UNIQUE,
    reason        TEXT,
    payload       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    published_at  TEXT,
    acked_at      TEXT
);
CREATE INDEX pulses_unpublished ON pulses (created_at) WHERE published_at IS NULL;
CREATE INDEX pulses_machine ON pulses (machine_id, created_at);

CREATE TABLE plays (
    id            TEXT PRIMARY KEY NOT NULL,
    machine_id    TEXT NOT NULL,
    dedupe_key    TEXT NOT NULL UNIQUE,
    ended_at      TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    score         INTEGER,
    play_seconds  INTEGER,
    via           TEXT NOT NULL
);
CREATE INDEX plays_machine ON plays (machine_id, received_at);
