-- A payment's SCA return carries an unguessable state, sent with its SCA link and used up by
-- the browser's return, so that no one else can move the payment or see its status there;
-- and the app's address the browser then goes back to, if the app gave one.

ALTER TABLE payments ADD COLUMN callback_state text, ADD COLUMN redirect_url text;
