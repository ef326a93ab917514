-- Sessions are signed cookies, held by the browser and not by the console, so one cannot be deleted on the server.
-- Each carries the generation of its user's credentials at sign-in instead; changing or resetting the password
-- moves the generation on, and every session signed in before (a stolen cookie, another browser) stops working.
ALTER TABLE console_users ADD COLUMN session_generation integer NOT NULL DEFAULT 0;
