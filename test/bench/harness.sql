-- Timing helpers for the benchmark cases.
CREATE EXTENSION subscription;
CREATE SCHEMA bench;

-- milliseconds one statement takes, the best of "runs" (the least disturbed)
CREATE FUNCTION bench.best_ms(statement text, runs int DEFAULT 5) RETURNS numeric
LANGUAGE plpgsql AS $$
DECLARE
    best numeric;
    started timestamptz;
    took numeric;
BEGIN
    FOR i IN 1 .. runs LOOP
        started := clock_timestamp();
        EXECUTE statement;
        took := extract(epoch FROM clock_timestamp() - started) * 1000;
        best := least(best, took);
    END LOOP;
    RETURN round(best, 1);
END
$$;

-- one report line: extension vs baseline, alternating runs so that drift hits both
CREATE FUNCTION bench.compare(label text, extension_sql text, baseline_sql text, runs int DEFAULT 5)
RETURNS TABLE (case_name text, extension_ms numeric, baseline_ms numeric, ratio numeric)
LANGUAGE plpgsql AS $$
DECLARE
    e numeric;
    b numeric;
BEGIN
    PERFORM bench.best_ms(extension_sql, 1);  -- warm caches and plans
    PERFORM bench.best_ms(baseline_sql, 1);
    FOR i IN 1 .. runs LOOP
        e := least(e, bench.best_ms(extension_sql, 1));
        b := least(b, bench.best_ms(baseline_sql, 1));
    END LOOP;
    RETURN QUERY SELECT label, e, b, round(e / nullif(b, 0), 2);
END
$$;
