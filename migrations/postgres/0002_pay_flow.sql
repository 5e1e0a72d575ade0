-- Bundles offered on a cabinet's pay page, the checkout sessions coinpulse creates,
-- and the Stripe product/price kept per cabinet price for payment links.

CREATE TABLE bundles (
    machine_id   TEXT NOT NULL,
    position     BIGINT NOT NULL,
    credits      BIGINT NOT NULL,
    price_minor  BIGINT NOT NULL,
    label        TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (machine_id, position)
);

CREATE TABLE checkout_sessions (
    id            TEXT PRIMARY KEY NOT NULL,
    machine_id    TEXT NOT NULL,
    credits       BIGINT NOT NULL,
    amount_minor  BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    bundle_label  TEXT NOT NULL DEFAULT '',
    url           TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'open',
    created_at    TEXT NOT NULL
);
CREATE INDEX checkout_sessions_machine ON checkout_sessions (machine_id, created_at);

CREATE TABLE stripe_prices (
    machine_id   TEXT NOT NULL,
    price_minor  BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    product_id   TEXT NOT NULL,
    price_id     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (machine_id, price_minor, currency)
);
