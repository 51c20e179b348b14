//! The verifier's audit log, checked offline: every entry is hash-chained to the one before, and
//! the verifier signs checkpoints of the chain's head (at an interval and on demand) which travel
//! with its alerts, so copies live outside its database. Whoever can write the database can
//! rewrite the chain and recompute its hashes — but not the checkpoints a webhook receiver or an
//! auditor already holds: an export that disagrees with one was rewritten.

use serde::{Deserialize, Serialize};

use crate::EarError;

/// The `typ` of a signed audit checkpoint (a JWS like the EAR, signed by the same key).
pub const CHECKPOINT_JWT_TYP: &str = "vmseal-audit-checkpoint+jwt";

/// One audit log entry (`GET /v1/audit/export`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Position in the chain, from 1, without gaps.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who: an admin's name, `token:ID`, `agent:HOST` or `verifier`.
    pub actor: String,
    /// What (`enroll_host`, `appraisal`, `remove_vm`, …).
    pub action: String,
    /// Its details (JSON text).
    pub detail: String,
    /// SHA-256 of the entry before (hex; 64 zeros for the first).
    pub prev_hash: String,
    /// This entry's hash (hex): [`entry_hash`] of the fields above.
    pub hash: String,
}

/// The hash of an audit entry: SHA-256 over the previous hash, the id and time (big-endian
/// 64-bit), and actor, action and detail separated by zero bytes.
pub fn entry_hash(
    prev: &[u8],
    id: i64,
    at: i64,
    actor: &str,
    action: &str,
    detail: &str,
) -> [u8; 32] {
    vmseal_sealer::merkle::HashAlg::Sha256.hash(&[
        prev,
        &id.to_be_bytes(),
        &at.to_be_bytes(),
        actor.as_bytes(),
        &[0],
        action.as_bytes(),
        &[0],
        detail.as_bytes(),
    ])
}

/// A verified checkpoint: the verifier said, at `iat`, that its audit chain's entry `audit_id`
/// has hash `audit_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditCheckpoint {
    /// The head entry's id.
    pub audit_id: i64,
    /// Its hash, hex.
    pub audit_hash: String,
    /// When it was signed (Unix seconds).
    pub iat: i64,
}

/// Verify a checkpoint token from public material only (its certificate chains to `ca_pem`, is
/// valid at `now` and marked for signing results; ES256).
pub fn verify_checkpoint(
    token: &str,
    ca_pem: &[u8],
    now: time::OffsetDateTime,
) -> Result<AuditCheckpoint, EarError> {
    let claims = crate::verify_signed(token.trim(), ca_pem, CHECKPOINT_JWT_TYP, now)?;
    let audit_id = claims["vmseal.audit_id"]
        .as_i64()
        .filter(|i| *i >= 0)
        .ok_or_else(|| EarError::Invalid("no vmseal.audit_id".into()))?;
    let audit_hash = claims["vmseal.audit_hash"]
        .as_str()
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| EarError::Invalid("vmseal.audit_hash is not 64 hex digits".into()))?
        .to_ascii_lowercase();
    let iat = claims["iat"]
        .as_i64()
        .ok_or_else(|| EarError::Invalid("no iat".into()))?;
    Ok(AuditCheckpoint {
        audit_id,
        audit_hash,
        iat,
    })
}

/// What an intact export showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Entries checked.
    pub entries: usize,
    /// The last entry's id (0 for an empty log).
    pub last_id: i64,
    /// Checkpoints the export agrees with.
    pub checkpoints: usize,
    /// The newest checkpointed entry (entries after it are chained but not yet vouched for by a
    /// checkpoint held outside the database).
    pub checkpointed_up_to: Option<i64>,
}

/// Check an audit export (the whole log, oldest first) against checkpoints held outside the
/// verifier: every entry's hash recomputes and chains to the one before, ids run from 1 without
/// gaps, and every checkpoint names an entry the export has, with the hash it has. The error names
/// the first place the history differs.
pub fn verify_export(
    entries: &[AuditEntry],
    checkpoints: &[AuditCheckpoint],
) -> Result<AuditReport, String> {
    let mut prev = [0u8; 32];
    for (i, e) in entries.iter().enumerate() {
        let want_id = i as i64 + 1;
        if e.id != want_id {
            return Err(format!(
                "entry #{want_id} is missing (the export has #{} there): entries were removed",
                e.id
            ));
        }
        if e.prev_hash != hex::encode(prev) {
            return Err(format!(
                "entry #{}: it names {} as the entry before, which is {}: the chain was cut",
                e.id,
                short(&e.prev_hash),
                short(&hex::encode(prev))
            ));
        }
        let h = entry_hash(&prev, e.id, e.at, &e.actor, &e.action, &e.detail);
        if e.hash != hex::encode(h) {
            return Err(format!(
                "entry #{} ({} by {}): its content does not give its hash: it was edited",
                e.id, e.action, e.actor
            ));
        }
        prev = h;
    }
    let last_id = entries.last().map_or(0, |e| e.id);
    let mut best: Option<i64> = None;
    for c in checkpoints {
        if c.audit_id == 0 {
            continue;
        }
        let Some(e) = c
            .audit_id
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| entries.get(i))
        else {
            return Err(format!(
                "a checkpoint signed at {} vouches for entry #{}, but the export ends at #{last_id}: \
                 entries were removed from the end",
                c.iat, c.audit_id
            ));
        };
        if e.hash != c.audit_hash {
            return Err(format!(
                "a checkpoint signed at {} says entry #{} has hash {}, the export's has {}: the \
                 history up to #{} was rewritten",
                c.iat,
                c.audit_id,
                short(&c.audit_hash),
                short(&e.hash),
                c.audit_id
            ));
        }
        best = best.max(Some(c.audit_id));
    }
    Ok(AuditReport {
        entries: entries.len(),
        last_id,
        checkpoints: checkpoints.len(),
        checkpointed_up_to: best,
    })
}

/// The first 16 characters of a (hex) hash, whatever the text is.
fn short(h: &str) -> &str {
    h.char_indices().nth(16).map_or(h, |(i, _)| &h[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: i64) -> Vec<AuditEntry> {
        let mut prev = [0u8; 32];
        (1..=n)
            .map(|id| {
                let detail = format!("{{\"n\":{id}}}");
                let h = entry_hash(&prev, id, 100 + id, "admin", "thing", &detail);
                let e = AuditEntry {
                    id,
                    at: 100 + id,
                    actor: "admin".into(),
                    action: "thing".into(),
                    detail,
                    prev_hash: hex::encode(prev),
                    hash: hex::encode(h),
                };
                prev = h;
                e
            })
            .collect()
    }

    fn at(l: &[AuditEntry], id: i64) -> AuditCheckpoint {
        AuditCheckpoint {
            audit_id: id,
            audit_hash: l[id as usize - 1].hash.clone(),
            iat: 1,
        }
    }

    #[test]
    fn an_intact_export_agrees_with_its_checkpoints() {
        let l = log(10);
        let r = verify_export(&l, &[at(&l, 4), at(&l, 9)]).unwrap();
        assert_eq!((r.entries, r.checkpointed_up_to), (10, Some(9)));
        assert_eq!(verify_export(&[], &[]).unwrap().last_id, 0);
        // Outside bytes never panic: a made-up checkpoint id, a hash that is not hex.
        let mut odd = l.clone();
        odd[0].prev_hash = "é".repeat(40);
        assert!(verify_export(&odd, &[]).is_err());
        let far = AuditCheckpoint {
            audit_id: i64::MIN,
            audit_hash: String::new(),
            iat: 0,
        };
        assert!(verify_export(&l, &[far]).is_err());
    }

    #[test]
    fn a_rewritten_history_is_named_even_with_its_hashes_recomputed() {
        let l = log(10);
        let cps = [at(&l, 8)];
        // Entry 5 edited in place: its hash no longer matches.
        let mut edited = l.clone();
        edited[4].detail = "{\"n\":555}".into();
        let e = verify_export(&edited, &cps).unwrap_err();
        assert!(e.contains("entry #5") && e.contains("edited"), "{e}");
        // Entry 5 edited and every hash after it recomputed (what a database writer can do):
        // only the checkpoint held outside shows it.
        let mut rewritten = l[..4].to_vec();
        let mut prev: [u8; 32] = hex::decode(&l[3].hash).unwrap().try_into().unwrap();
        for e in &l[4..] {
            let detail = if e.id == 5 {
                "{\"n\":555}".to_owned()
            } else {
                e.detail.clone()
            };
            let h = entry_hash(&prev, e.id, e.at, &e.actor, &e.action, &detail);
            rewritten.push(AuditEntry {
                detail,
                prev_hash: hex::encode(prev),
                hash: hex::encode(h),
                ..e.clone()
            });
            prev = h;
        }
        assert!(
            verify_export(&rewritten, &[]).is_ok(),
            "undetectable without checkpoints"
        );
        let e = verify_export(&rewritten, &cps).unwrap_err();
        assert!(e.contains("entry #8") && e.contains("rewritten"), "{e}");
        // Entries removed: from the middle, from the end.
        let mut cut = l.clone();
        cut.remove(6);
        assert!(
            verify_export(&cut, &[])
                .unwrap_err()
                .contains("#7 is missing")
        );
        let e = verify_export(&l[..6], &cps).unwrap_err();
        assert!(e.contains("removed from the end"), "{e}");
    }
}
