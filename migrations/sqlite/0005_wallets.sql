-- Player wallets: a prepaid balance per phone, kept as an append-only ledger. The balance
-- column is a cache of the ledger's sum, changed only in the transaction that appends.

CREATE TABLE wallets (
    id             TEXT PRIMARY KEY NOT NULL,
    currency       TEXT NOT NULL,
    email          TEXT,
    balance_minor  INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    CHECK (balance_minor >= 0)
);
CREATE INDEX wallets_email ON wallets (email);

-- kind: topup, bonus, play, refund, adjustment, expiry. amount_minor is signed: a top-up
-- adds, a play takes. (kind, reference) is unique: a Stripe session tops up once, a pulse
-- is paid for once.
CREATE TABLE wallet_ledger (
    id            TEXT PRIMARY KEY NOT NULL,
    wallet_id     TEXT NOT NULL REFERENCES wallets (id),
    kind          TEXT NOT NULL,
    amount_minor  INTEGER NOT NULL,
    reason        TEXT NOT NULL DEFAULT '',
    reference     TEXT NOT NULL,
    machine_id    TEXT,
    created_at    TEXT NOT NULL,
    UNIQUE (kind, reference)
);
CREATE INDEX wallet_ledger_wallet ON wallet_ledger (wallet_id, created_at);

-- A top-up as coinpulse created it: what the player pays and what the wallet gets are
-- decided here, never by the session's (editable) metadata.
CREATE TABLE wallet_topups (
    checkout_session_id  TEXT PRIMARY KEY NOT NULL,
    wallet_id            TEXT NOT NULL REFERENCES wallets (id),
    pay_minor            INTEGER NOT NULL,
    credit_minor         INTEGER NOT NULL,
    currency             TEXT NOT NULL,
    url                  TEXT NOT NULL,
    status               TEXT NOT NULL DEFAULT 'open',
    payment_intent_id    TEXT,
    created_at           TEXT NOT NULL,
    -- Refunded through Stripe so far, and why a refund needs the owner's eye.
    refunded_minor       INTEGER NOT NULL DEFAULT 0,
    note                 TEXT
);
CREATE INDEX wallet_topups_wallet ON wallet_topups (wallet_id, created_at);
CREATE INDEX wallet_topups_intent ON wallet_topups (payment_intent_id);

-- What the owner offers: pay this, get that (a bonus when credit > pay).
CREATE TABLE topup_packages (
    currency      TEXT NOT NULL,
    position      INTEGER NOT NULL,
    pay_minor     INTEGER NOT NULL,
    credit_minor  INTEGER NOT NULL,
    label         TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (currency, position)
);

-- The single-use token of each "Play now" form: a double tap spends once and finds the
-- first tap's pulse.
CREATE TABLE wallet_spends (
    token      TEXT PRIMARY KEY NOT NULL,
    wallet_id  TEXT NOT NULL,
    pulse_id   TEXT NOT NULL,
    used_at    TEXT NOT NULL
);

-- One-time links sent by email (only the token's hash): 'signin' brings a wallet to
-- another phone, 'verify' confirms the address a wallet asked to use.
CREATE TABLE wallet_signins (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    wallet_id   TEXT NOT NULL REFERENCES wallets (id),
    email       TEXT NOT NULL,
    purpose     TEXT NOT NULL DEFAULT 'signin',
    expires_at  TEXT NOT NULL,
    used_at     TEXT
);
