-- Rows leave audit_events only through the retention sweep, which marks its
-- transaction with `SET LOCAL authsvc.audit_retention_sweep = 'on'`. Anything else
-- (a stray DELETE, a TRUNCATE from the application role) is refused. A superuser
-- can still disable triggers: this guards against mistakes, not against the DBA.
CREATE FUNCTION audit_events_leave_only_by_retention() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('authsvc.audit_retention_sweep', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'audit_events rows leave only by the retention sweep';
    END IF;
    RETURN CASE WHEN TG_LEVEL = 'ROW' THEN OLD END;
END;
$$;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_leave_only_by_retention();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_leave_only_by_retention();
