-- The golden kernel objects of a baseline (issue 15): the `kernel` claim of the snapshot it was
-- promoted from, as JSON; NULL when that snapshot carried none (or for a CoRIM import).
ALTER TABLE baselines ADD COLUMN kernel_objects TEXT;
