-- Each provider's SCA callback carries an unguessable state bound to its consent; it is used
-- up when that provider's step concludes, so a callback cannot be forged or replayed.

ALTER TABLE provider_consents ADD COLUMN callback_state text;
