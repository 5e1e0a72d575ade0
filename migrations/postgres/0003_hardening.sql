-- An owner can mark a cabinet as always available when its broker cannot tell whether it
-- is connected (an external broker and a seed cabinet that never reports its status).
ALTER TABLE cabinets ADD COLUMN always_available BIGINT NOT NULL DEFAULT 0;

-- Who opened a checkout (a keyed hash of the pay page's cookie), so a player who comes back
-- to the same bundle is sent to the session already open instead of a new one.
ALTER TABLE checkout_sessions ADD COLUMN buyer TEXT;
CREATE INDEX checkout_sessions_buyer ON checkout_sessions (buyer, machine_id, created_at);
