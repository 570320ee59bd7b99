-- Payments: what the durable state machine needs beyond the first schema.
--
-- connections.removed_at  a removed connection is kept (payments refer to it) but hidden
-- payments.psu_ip         the user's IP at the request, sent again when a queued payment goes out
-- payments_open_idx       the drainer's look-ups of unfinished payments per bank

ALTER TABLE connections ADD COLUMN removed_at timestamptz;

ALTER TABLE payments ADD COLUMN psu_ip text NOT NULL DEFAULT '';
ALTER TABLE payments ALTER COLUMN psu_ip DROP DEFAULT;

CREATE INDEX payments_open_idx ON payments (bank, status, updated_at)
    WHERE status IN ('received', 'initiating', 'unknown', 'pending_sca');
