-- bankgate's first schema: what must survive a restart.
--
-- consents            a user's consent at one bank, granted once through SCA
-- provider_consents   that consent as each provider knows it (Neonomics session, PSD2 consent id)
-- connections         the user's accounts found through a consent (user ↔ bank ↔ account)
-- connection_accounts the account's id at each provider
-- balances            last-known balance per connection, served stale when the bank fails
-- payments            every payment accepted, with its current status
-- payment_events      the append-only status history of each payment
-- idempotency_keys    the client's Idempotency-Key and the stored response to replay
-- bank_modes          per-bank degradation modes set by operators or automatically
-- provider_breakers   operator overrides of a provider's circuit breaker
-- ops_audit           who changed what, why and when
-- webhook_events      provider webhook deliveries already processed (dedupe)

CREATE TABLE consents (
    id            uuid PRIMARY KEY,
    user_id       text        NOT NULL,
    bank          text        NOT NULL CHECK (bank IN ('dnb', 'nordea', 'sparebank1')),
    status        text        NOT NULL CHECK (status IN ('pending', 'active', 'rejected', 'expired', 'revoked')),
    redirect_url  text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    expires_at    timestamptz
);
CREATE INDEX consents_user_idx ON consents (user_id, bank);

CREATE TABLE provider_consents (
    consent_id    uuid        NOT NULL REFERENCES consents (id) ON DELETE CASCADE,
    provider      text        NOT NULL CHECK (provider IN ('neonomics', 'psd2')),
    external_id   text        NOT NULL,
    session_id    text,
    sca_redirect  text,
    status        text        NOT NULL CHECK (status IN ('pending', 'active', 'rejected', 'expired', 'revoked')),
    valid_until   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consent_id, provider)
);

CREATE TABLE connections (
    id            uuid PRIMARY KEY,
    user_id       text        NOT NULL,
    bank          text        NOT NULL CHECK (bank IN ('dnb', 'nordea', 'sparebank1')),
    consent_id    uuid        NOT NULL REFERENCES consents (id),
    iban          text        NOT NULL,
    bban          text,
    account_name  text,
    currency      text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, bank, iban)
);
CREATE INDEX connections_user_idx ON connections (user_id);

CREATE TABLE connection_accounts (
    connection_id uuid NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    provider      text NOT NULL CHECK (provider IN ('neonomics', 'psd2')),
    account_id    text NOT NULL,
    PRIMARY KEY (connection_id, provider)
);

CREATE TABLE balances (
    connection_id uuid PRIMARY KEY REFERENCES connections (id) ON DELETE CASCADE,
    amount        numeric(18, 2) NOT NULL,
    currency      text           NOT NULL,
    balance_type  text           NOT NULL,
    provider      text           NOT NULL CHECK (provider IN ('neonomics', 'psd2')),
    fetched_at    timestamptz    NOT NULL
);

CREATE TABLE payments (
    id                  uuid PRIMARY KEY,
    user_id             text           NOT NULL,
    bank                text           NOT NULL CHECK (bank IN ('dnb', 'nordea', 'sparebank1')),
    debtor_connection   uuid           NOT NULL REFERENCES connections (id),
    amount              numeric(14, 2) NOT NULL CHECK (amount > 0),
    currency            text           NOT NULL,
    creditor            jsonb          NOT NULL,
    remittance_info     text,
    kind                text           NOT NULL CHECK (kind IN ('remittance', 'qr')),
    status              text           NOT NULL CHECK (status IN (
                            'received', 'queued', 'initiating', 'unknown', 'pending_sca',
                            'completed', 'rejected', 'expired', 'failed')),
    -- Sent to the provider as endToEndIdentification; how an unknown outcome is looked up.
    request_reference   text           NOT NULL UNIQUE,
    provider            text           CHECK (provider IN ('neonomics', 'psd2')),
    provider_payment_id text,
    sca_redirect        text,
    attempts            integer        NOT NULL DEFAULT 0,
    last_error          text,
    created_at          timestamptz    NOT NULL DEFAULT now(),
    updated_at          timestamptz    NOT NULL DEFAULT now(),
    queued_at           timestamptz
);
CREATE INDEX payments_user_idx ON payments (user_id, created_at DESC);
CREATE INDEX payments_queue_idx ON payments (bank, queued_at) WHERE status = 'queued';
CREATE UNIQUE INDEX payments_provider_idx ON payments (provider, provider_payment_id)
    WHERE provider_payment_id IS NOT NULL;

CREATE TABLE payment_events (
    id          bigserial PRIMARY KEY,
    payment_id  uuid        NOT NULL REFERENCES payments (id) ON DELETE CASCADE,
    from_status text,
    to_status   text        NOT NULL,
    reason      text        NOT NULL,
    provider    text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_events_payment_idx ON payment_events (payment_id, id);

CREATE TABLE idempotency_keys (
    user_id         text        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    payment_id      uuid        REFERENCES payments (id),
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

CREATE TABLE bank_modes (
    bank           text PRIMARY KEY CHECK (bank IN ('dnb', 'nordea', 'sparebank1')),
    balances_mode  text        NOT NULL CHECK (balances_mode IN ('live', 'cached', 'disabled', 'auto')),
    payments_mode  text        NOT NULL CHECK (payments_mode IN ('live', 'queue', 'disabled', 'auto')),
    set_by         text        NOT NULL,
    reason         text        NOT NULL,
    expires_at     timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE provider_breakers (
    provider    text PRIMARY KEY CHECK (provider IN ('neonomics', 'psd2')),
    state       text        NOT NULL CHECK (state IN ('open', 'closed', 'auto')),
    set_by      text        NOT NULL,
    reason      text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ops_audit (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text        NOT NULL,
    action  text        NOT NULL,
    target  text        NOT NULL,
    before  jsonb,
    after   jsonb,
    reason  text        NOT NULL
);

CREATE TABLE webhook_events (
    provider     text        NOT NULL,
    event_id     text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
