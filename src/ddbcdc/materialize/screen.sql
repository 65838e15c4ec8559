-- Screening a routed mapping's batch inside PostgreSQL (ddbcdc.materialize.screen):
-- temporary functions, created once per connection, that run a prepared statement (the
-- routed writer's claim and upsert over candidates lo..hi, taking (lo, hi)), each attempt in
-- a subtransaction that is always rolled back: nothing is kept, the keys refused alone are
-- returned, and the caller applies the batch with its own statements. An error whose
-- SQLSTATE class is not in `poison` is raised unchanged.
--
-- ddbcdc_screen: ranges go in key order: a range that applies is passed; a refused one is
-- searched by halves from where it starts, down to the single key at fault. Range lengths:
-- spans.sql.

CREATE OR REPLACE FUNCTION pg_temp.ddbcdc_screen(
    apply_stmt text, first integer, last integer, poison text[], gap double precision,
    spacing double precision, longest integer
) RETURNS TABLE (key_index integer) LANGUAGE plpgsql AS $$
DECLARE
    pos integer := first;
    hi integer;
    size integer;
    bad_end integer;
    found integer := 0;
    passed boolean;
BEGIN
    size := pg_temp.ddbcdc_span(spacing, gap, longest);
    WHILE pos < last LOOP
        hi := least(last, pos + size) - 1;
        BEGIN
            EXECUTE format('EXECUTE %I(%s, %s)', apply_stmt, pos, hi);
            RAISE EXCEPTION USING ERRCODE = 'DDB00';  -- roll the attempt back
        EXCEPTION WHEN SQLSTATE 'DDB00' THEN
            passed := true;
        WHEN OTHERS THEN
            IF NOT left(SQLSTATE, 2) = ANY (poison) THEN
                RAISE;
            END IF;
            passed := false;
        END;
        IF passed THEN
            pos := hi + 1;
            IF bad_end IS NOT NULL AND pos >= bad_end THEN
                bad_end := NULL;
            END IF;
            size := pg_temp.ddbcdc_next_span(
                size, pos, first, found, bad_end, gap, spacing, longest);
        ELSIF hi > pos THEN
            bad_end := hi + 1;
            size := greatest(1, (hi - pos + 1) / 2);
        ELSE
            key_index := pos;
            RETURN NEXT;
            found := found + 1;
            pos := pos + 1;
            bad_end := NULL;
            size := pg_temp.ddbcdc_span(
                spacing, (pos - first)::double precision / found, longest);
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pg_temp.ddbcdc_screen_keys(
    apply_stmt text, keys integer[], poison text[]
) RETURNS TABLE (
    key_index integer, state text, table_name text, column_name text, constraint_name text,
    datatype text
) LANGUAGE plpgsql AS $$
-- Each of keys alone: those refused are returned, with the schema objects PostgreSQL named.
DECLARE
    k integer;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        BEGIN
            EXECUTE format('EXECUTE %I(%s, %s)', apply_stmt, k, k);
            RAISE EXCEPTION USING ERRCODE = 'DDB00';  -- roll the attempt back
        EXCEPTION WHEN SQLSTATE 'DDB00' THEN
            CONTINUE;
        WHEN OTHERS THEN
            IF NOT left(SQLSTATE, 2) = ANY (poison) THEN
                RAISE;
            END IF;
            key_index := k;
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, table_name = TABLE_NAME,
                column_name = COLUMN_NAME, constraint_name = CONSTRAINT_NAME,
                datatype = PG_DATATYPE_NAME;
            RETURN NEXT;
        END;
    END LOOP;
END
$$;
