-- The anchors an enrollment token's host must carry (tpm, snp, both, none); NULL: the service's
-- default (`--require`). A guest shim's token asks for snp, a host agent's for tpm.
ALTER TABLE enrollment_tokens ADD COLUMN require_anchors TEXT;
