-- Why a payment failed, as a closed set the gateway matches on (the client's answer differs:
-- a consent problem asks the user to renew the connection). `last_error` keeps the provider's
-- own words for people; `failure` is for the code.

ALTER TABLE payments ADD COLUMN failure text
    CHECK (failure IN ('refused', 'consent_expired'));

UPDATE payments SET failure = 'consent_expired'
    WHERE status = 'failed' AND last_error LIKE 'consent%';
UPDATE payments SET failure = 'refused'
    WHERE status = 'failed' AND failure IS NULL;
