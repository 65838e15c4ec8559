-- Poison isolation inside PostgreSQL (ddbcdc.materialize.isolation): temporary functions,
-- created once per connection, that apply a batch's candidates through three prepared
-- statements, each attempt in a subtransaction, and return what PostgreSQL refused.
--
-- The candidates are numbered: key index k (in PostgreSQL's order of the keys) and rank r
-- (0 = the key's newest change). The prepared statements:
--   ranks_stmt   the number of candidates of each key, in key order (an array);
-- and, taking (lo, hi, r):
--   apply_stmt   claim and upsert keys lo..hi at rank r, log their changes (every rank when
--                r = 0); returns (deleted, upserted, the k refused below the prune floor);
--   delete_stmt  delete the live rows of those keys' REMOVEs;
--   log_stmt     (k, r): log that one change (NULL: the table keeps no change log).
-- An error whose SQLSTATE class is in `poison` is the candidates' fault: the attempt is
-- rolled back and reported; any other error is raised unchanged.
--
-- Rows returned: one per change not applied (key_index, rank, state: the SQLSTATE or
-- 'floor', and the schema objects PostgreSQL named), and rows with a NULL key_index that
-- carry counts to add up (deleted, upserted). Names only, never values.

-- The key index whose live row apply_stmt was writing last: setval is not rolled back with
-- a subtransaction, so after a refused range it points at the key most likely at fault.
CREATE TEMP SEQUENCE IF NOT EXISTS ddbcdc_isolate_at MINVALUE -1;

CREATE OR REPLACE FUNCTION pg_temp.ddbcdc_isolate_key(
    apply_stmt text, delete_stmt text, log_stmt text, k integer, first_rank integer,
    last_rank integer, poison text[]
) RETURNS TABLE (
    key_index integer, rank integer, state text, table_name text, column_name text,
    constraint_name text, datatype text, deleted bigint, upserted bigint
) LANGUAGE plpgsql AS $$
-- One key from rank first_rank on, newest first: each refused change is reported, until
-- one applies; the older ones are then logged (superseded by it), one by one.
DECLARE
    r integer;
    older integer;
    refused integer[];
BEGIN
    FOR r IN first_rank .. last_rank LOOP
        key_index := k;
        rank := r;
        BEGIN
            EXECUTE format('EXECUTE %I(%s, %s, %s)', apply_stmt, k, k, r)
                INTO deleted, upserted, refused;
            IF deleted > 0 THEN
                EXECUTE format('EXECUTE %I(%s, %s, %s)', delete_stmt, k, k, r);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            IF NOT left(SQLSTATE, 2) = ANY (poison) THEN
                RAISE;
            END IF;
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, table_name = TABLE_NAME,
                column_name = COLUMN_NAME, constraint_name = CONSTRAINT_NAME,
                datatype = PG_DATATYPE_NAME;
            deleted := 0;
            upserted := 0;
            RETURN NEXT;
            CONTINUE;
        END;
        IF cardinality(refused) > 0 THEN
            state := 'floor';
            table_name := NULL;
            column_name := NULL;
            constraint_name := NULL;
            datatype := NULL;
            deleted := 0;
            upserted := 0;
            RETURN NEXT;
            CONTINUE;
        END IF;
        key_index := NULL;
        state := NULL;
        RETURN NEXT;
        IF log_stmt IS NOT NULL THEN
            FOR older IN r + 1 .. last_rank LOOP
                BEGIN
                    EXECUTE format('EXECUTE %I(%s, %s)', log_stmt, k, older);
                EXCEPTION WHEN OTHERS THEN
                    IF NOT left(SQLSTATE, 2) = ANY (poison) THEN
                        RAISE;
                    END IF;
                    key_index := k;
                    rank := older;
                    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE,
                        table_name = TABLE_NAME, column_name = COLUMN_NAME,
                        constraint_name = CONSTRAINT_NAME, datatype = PG_DATATYPE_NAME;
                    deleted := 0;
                    upserted := 0;
                    RETURN NEXT;
                END;
            END LOOP;
        END IF;
        RETURN;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pg_temp.ddbcdc_isolate(
    apply_stmt text, delete_stmt text, log_stmt text, ranks_stmt text, first integer,
    last integer, settle_only boolean, poison text[], gap double precision,
    spacing double precision, longest integer
) RETURNS TABLE (
    key_index integer, rank integer, state text, table_name text, column_name text,
    constraint_name text, datatype text, deleted bigint, upserted bigint
) LANGUAGE plpgsql AS $$
-- Keys first .. last - 1, newest changes in ranges of keys, in key order: a range that
-- applies is kept; a refused one is rolled back and the key it was writing when refused
-- (ddbcdc_isolate_at) is suspected: the keys before it are tried, then it alone. A refused
-- range without a suspect (the claim, the delete, a check at the end of the statement
-- refused it) is searched by halves from where the last range ended. The key at fault is
-- then settled in place (ddbcdc_isolate_key). Keys are locked in key order, as in the fast
-- path. Range lengths: spans.sql.
-- With settle_only, every key's newest change was refused below the floor already and is
-- not among the candidates: settle each key from rank 0, its next older change.
DECLARE
    ranks integer[];
    pos integer := first;
    hi integer;
    size integer;
    bad_end integer;
    found integer := 0;
    k integer;
    refused integer[];
    failed boolean;
    suspect integer;
BEGIN
    EXECUTE format('EXECUTE %I(%s, %s)', ranks_stmt, first, last - 1) INTO ranks;
    IF settle_only THEN
        FOR k IN first .. last - 1 LOOP
            RETURN QUERY SELECT * FROM pg_temp.ddbcdc_isolate_key(
                apply_stmt, delete_stmt, log_stmt, k, 0, ranks[k - first + 1] - 1, poison);
        END LOOP;
        RETURN;
    END IF;
    size := pg_temp.ddbcdc_span(spacing, gap, longest);
    WHILE pos < last LOOP
        hi := least(last, pos + size) - 1;
        failed := false;
        PERFORM setval('pg_temp.ddbcdc_isolate_at', -1);
        BEGIN
            EXECUTE format('EXECUTE %I(%s, %s, 0)', apply_stmt, pos, hi)
                INTO deleted, upserted, refused;
            IF deleted > 0 THEN
                EXECUTE format('EXECUTE %I(%s, %s, 0)', delete_stmt, pos, hi);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            IF NOT left(SQLSTATE, 2) = ANY (poison) THEN
                RAISE;
            END IF;
            failed := true;
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, table_name = TABLE_NAME,
                column_name = COLUMN_NAME, constraint_name = CONSTRAINT_NAME,
                datatype = PG_DATATYPE_NAME;
        END;
        IF NOT failed THEN
            key_index := NULL;
            rank := NULL;
            state := NULL;
            RETURN NEXT;
            FOREACH k IN ARRAY coalesce(refused, '{}') LOOP
                key_index := k;
                rank := 0;
                state := 'floor';
                deleted := 0;
                upserted := 0;
                RETURN NEXT;
                RETURN QUERY SELECT * FROM pg_temp.ddbcdc_isolate_key(
                    apply_stmt, delete_stmt, log_stmt, k, 1, ranks[k - first + 1] - 1, poison);
            END LOOP;
            pos := hi + 1;
            IF bad_end IS NOT NULL AND pos >= bad_end THEN
                bad_end := NULL;
            END IF;
            size := pg_temp.ddbcdc_next_span(
                size, pos, first, found, bad_end, gap, spacing, longest);
        ELSIF hi > pos THEN
            SELECT last_value INTO suspect FROM pg_temp.ddbcdc_isolate_at;
            IF suspect BETWEEN pos AND hi THEN
                bad_end := suspect + 1;
                size := greatest(1, suspect - pos);
            ELSE
                bad_end := hi + 1;
                size := greatest(1, (hi - pos + 1) / 2);
            END IF;
        ELSE
            key_index := pos;
            rank := 0;
            deleted := 0;
            upserted := 0;
            RETURN NEXT;
            RETURN QUERY SELECT * FROM pg_temp.ddbcdc_isolate_key(
                apply_stmt, delete_stmt, log_stmt, pos, 1, ranks[pos - first + 1] - 1, poison);
            found := found + 1;
            pos := pos + 1;
            bad_end := NULL;
            size := pg_temp.ddbcdc_span(
                spacing, (pos - first)::double precision / found, longest);
        END IF;
    END LOOP;
END
$$;
