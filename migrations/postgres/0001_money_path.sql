-- Cabinets, Stripe events, payments, the pulse outbox and plays.
-- Timestamps are UTC text 'YYYY-MM-DDTHH:MM:SS.mmmZ'; money is integer minor units.

CREATE TABLE cabinets (
    machine_id        TEXT PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL,
    game              TEXT NOT NULL DEFAULT '',
    location          TEXT NOT NULL DEFAULT '',
    price_minor       BIGINT NOT NULL,
    currency          TEXT NOT NULL,
    enabled           BIGINT NOT NULL DEFAULT 1,
    secret_salt       TEXT NOT NULL,
    secret_hash       TEXT NOT NULL,
    online            BIGINT NOT NULL DEFAULT 0,
    last_seen_at      TEXT,
    acks_pulses       BIGINT NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE stripe_events (
    event_id     TEXT PRIMARY KEY NOT NULL,
    event_type   TEXT NOT NULL,
    livemode     BIGINT NOT NULL DEFAULT 0,
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
    amount_minor         BIGINT NOT NULL,
    discount_minor       BIGINT NOT NULL DEFAULT 0,
    currency             TEXT NOT NULL,
    credits              BIGINT NOT NULL,
    status               TEXT NOT NULL,
    review_reason        TEXT,
    refunded_minor       BIGINT NOT NULL DEFAULT 0,
    livemode             BIGINT NOT NULL DEFAULT 0,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX payments_machine ON payments (machine_id, created_at);
CREATE INDEX payments_intent ON payments (payment_intent_id);
CREATE INDEX payments_status ON payments (status, created_at);

CREATE TABLE pulses (
    id            TEXT PRIMARY KEY NOT NULL,
    machine_id    TEXT NOT NULL,
    credits       BIGINT NOT NULL,
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
    score         BIGINT,
    play_seconds  BIGINT,
    via           TEXT NOT NULL
);
CREATE INDEX plays_machine ON plays (machine_id, received_at);
