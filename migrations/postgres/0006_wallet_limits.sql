-- What the owner allows per currency: the smallest and largest top-up (packages and an
-- amount the player types), and an optional ceiling on a wallet's balance (NULL: none).
CREATE TABLE wallet_settings (
    currency           TEXT PRIMARY KEY NOT NULL,
    min_topup_minor    BIGINT NOT NULL,
    max_topup_minor    BIGINT NOT NULL,
    max_balance_minor  BIGINT,
    CHECK (min_topup_minor > 0 AND max_topup_minor >= min_topup_minor)
);

-- The Stripe Customer a wallet with an email pays as (receipts go to that address), and
-- when its owner was last told that an unused balance is about to expire.
ALTER TABLE wallets ADD COLUMN stripe_customer_id TEXT;
ALTER TABLE wallets ADD COLUMN expiry_reminded_at TEXT;

-- A charge.refunded that arrived before its top-up was completed (Stripe does not promise
-- order): kept here and applied when the top-up is credited. amount_refunded is Stripe's
-- running total, so the largest seen wins.
CREATE TABLE early_refunds (
    payment_intent_id  TEXT PRIMARY KEY NOT NULL,
    charge_id          TEXT NOT NULL,
    amount_refunded    BIGINT NOT NULL,
    received_at        TEXT NOT NULL
);
