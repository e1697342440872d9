-- Monitor history (issue 17): filled in by its change.
SELECT 1;
