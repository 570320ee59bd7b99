-- Neonomics' payment flow ends with bankgate's complete call, which must always be made: a
-- payment the user authorised waits as `authorised` until that call is answered. Its debtor's
-- name, which Neonomics requires on every payment, is the account holder's as the provider
-- lists it.

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN (
    'received', 'queued', 'initiating', 'unknown', 'pending_sca', 'authorised',
    'completed', 'rejected', 'expired', 'failed', 'cancelled'));

ALTER TABLE connections ADD COLUMN owner_name text;
