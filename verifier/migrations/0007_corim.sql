-- Golden baselines as signed CoRIM (issue 13). A baseline imported from a CoRIM keeps the signed
-- document it came in, exactly (an export gives it back byte for byte, under its signer's
-- signature), and which trusted key signed it. Its source_seq is -1: it came from no snapshot.
ALTER TABLE baselines ADD COLUMN corim BYTEA;
ALTER TABLE baselines ADD COLUMN corim_signer TEXT;
