-- Login attempts admitted but not yet settled (their password is being checked).
-- An attempt is admitted only while failures + pending is under the limit, so guesses
-- sent in parallel cannot all pass the check before any of them is counted; the
-- others wait for a slot. The column resets with the window, so an attempt whose
-- process died before settling holds its slot for one window at most.
ALTER TABLE login_failures ADD COLUMN pending integer NOT NULL DEFAULT 0;
