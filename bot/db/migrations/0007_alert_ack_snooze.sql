-- Alert acknowledgement and snooze (issue 17): filled in by its change.
SELECT 1;
