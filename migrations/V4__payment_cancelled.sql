-- A queued payment whose connection the user removed is cancelled, never sent.

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN (
    'received', 'queued', 'initiating', 'unknown', 'pending_sca',
    'completed', 'rejected', 'expired', 'failed', 'cancelled'));
