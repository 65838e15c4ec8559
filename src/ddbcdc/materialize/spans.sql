-- How many keys the searches of isolate.sql and screen.sql try at once (temporary functions,
-- created with theirs). A range is about sqrt(spacing * gap) keys, at least 1, at most
-- longest, where gap is how far apart refused keys are: the caller's estimate until one is
-- found, then the keys done per key found.

CREATE OR REPLACE FUNCTION pg_temp.ddbcdc_span(
    spacing double precision, gap double precision, longest integer
) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT least(longest, greatest(1, round(sqrt(spacing * gap))::integer))
$$;

-- The range after one that applied, the next starting at pos: inside a refused range
-- (bad_end, where it ends), half of what is left of it; else twice the last, up to the span.
CREATE OR REPLACE FUNCTION pg_temp.ddbcdc_next_span(
    size integer, pos integer, first integer, found integer, bad_end integer,
    gap double precision, spacing double precision, longest integer
) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN bad_end IS NOT NULL THEN greatest(1, (bad_end - pos) / 2)
        ELSE least(size * 2, pg_temp.ddbcdc_span(spacing, CASE
            WHEN found = 0 THEN gap ELSE (pos - first)::double precision / found END, longest))
    END
$$;
