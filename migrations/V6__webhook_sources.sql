-- A webhook comes from a source with a secret of its own: Neonomics for every bank, or one
-- bank's own PSD2 API. Deliveries are remembered per source, by the event id in their signed
-- body; a provider's payment id is unique only at one bank (two banks' APIs may issue the same).

ALTER TABLE webhook_events RENAME COLUMN provider TO source;

DROP INDEX payments_provider_idx;
CREATE UNIQUE INDEX payments_provider_idx ON payments (provider, bank, provider_payment_id)
    WHERE provider_payment_id IS NOT NULL;
