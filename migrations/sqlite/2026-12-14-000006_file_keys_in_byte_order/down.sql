-- Nothing was created (see up.sql).
SELECT 1;
