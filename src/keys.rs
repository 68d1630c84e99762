//! Key rotation: re-seal every value stored under an older key with the current one, in
//! bounded batches. Progress lives in the data (a value under the current key is never
//! selected again), so the work is idempotent and a run stopped anywhere is simply started
//! again.

use crate::callbacks::secrets::SecretBox;
use crate::domain::time::UnixMs;
use crate::store::Store;
use crate::store::audit::{Actor, AuditEntry};
use crate::store::keys::{ResealCursor, SealedLocation, SealedValue};

/// Values that did not open are named in the report, up to this many (all are counted).
const MAX_LISTED_UNOPENABLE: usize = 20;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    pub citizen_ids: u64,
    pub endpoint_secrets: u64,
    pub batches: u64,
    /// False when `max_batches` stopped the run before everything was done.
    pub finished: bool,
    pub unopenable_total: u64,
    pub unopenable: Vec<String>,
}

impl std::fmt::Display for ResealReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "re-sealed {} citizen ID numbers and {} callback secrets in {} batches{}",
            self.citizen_ids,
            self.endpoint_secrets,
            self.batches,
            if self.finished { "" } else { "; stopped at --max-batches, run again to go on" }
        )?;
        if self.unopenable_total > 0 {
            write!(f, "; {} values open with none of the keys: {}", self.unopenable_total, self.unopenable.join(", "))?;
        }
        Ok(())
    }
}

fn describe(location: &SealedLocation) -> String {
    match location {
        SealedLocation::CitizenId { batch_id, seq } => format!("{batch_id} line {seq}"),
        SealedLocation::CitizenIdChunk { batch_id, first_seq, ids } => {
            format!("{batch_id} lines {first_seq} to {}", *first_seq + i64::try_from(*ids).unwrap_or(0) - 1)
        }
        SealedLocation::Endpoint { id, column } => format!("{id} {column:?}"),
    }
}

/// Re-seals up to `batch_size` values per transaction until none is left under an older key
/// (or `max_batches` batches were written), then records the run in the audit trail.
pub async fn reseal_all(
    store: &Store,
    secrets: &SecretBox,
    batch_size: u32,
    max_batches: Option<u64>,
) -> anyhow::Result<ResealReport> {
    let prefix = secrets.current_prefix();
    let mut report = ResealReport::default();
    let mut cursor = ResealCursor::default();
    let (mut lines_done, mut chunks_done) = (false, false);
    loop {
        if max_batches.is_some_and(|max| report.batches >= max) {
            break;
        }
        let page: Vec<SealedValue> = if !lines_done {
            let page = store.citizen_ids_to_reseal(&prefix, cursor.line.as_ref(), batch_size).await?;
            match page.last().map(|value| &value.location) {
                Some(SealedLocation::CitizenId { batch_id, seq }) => cursor.line = Some((batch_id.clone(), *seq)),
                _ => {
                    lines_done = true;
                    continue;
                }
            }
            page
        } else if !chunks_done {
            let page = store.citizen_id_chunks_to_reseal(&prefix, cursor.chunk.as_ref(), batch_size).await?;
            match page.last().map(|value| &value.location) {
                Some(SealedLocation::CitizenIdChunk { batch_id, first_seq, .. }) => {
                    cursor.chunk = Some((batch_id.clone(), *first_seq));
                }
                _ => {
                    chunks_done = true;
                    continue;
                }
            }
            page
        } else {
            let (page, last) =
                store.endpoint_secrets_to_reseal(&prefix, cursor.endpoint.as_deref(), batch_size).await?;
            match last {
                Some(last) => cursor.endpoint = Some(last),
                None => {
                    report.finished = true;
                    break;
                }
            }
            page
        };
        let mut replacements = Vec::with_capacity(page.len());
        for value in page {
            let resealed =
                secrets.open(&value.sealed, &value.context).and_then(|clear| secrets.seal(&clear, &value.context));
            match resealed {
                Ok(new) => replacements.push((value, new)),
                Err(_) => {
                    report.unopenable_total += 1;
                    if report.unopenable.len() < MAX_LISTED_UNOPENABLE {
                        report.unopenable.push(describe(&value.location));
                    }
                }
            }
        }
        let replaced = store.replace_sealed(&replacements).await?;
        // A value changed meanwhile (a callback secret rotated) is already under the current key.
        for ((value, _), replaced) in replacements.iter().zip(replaced) {
            match (&value.location, replaced) {
                (_, false) => {}
                (SealedLocation::CitizenId { .. }, true) => report.citizen_ids += 1,
                (SealedLocation::CitizenIdChunk { ids, .. }, true) => report.citizen_ids += ids,
                (SealedLocation::Endpoint { .. }, true) => report.endpoint_secrets += 1,
            }
        }
        report.batches += 1;
    }
    if report.citizen_ids + report.endpoint_secrets > 0 {
        let audit = AuditEntry {
            actor: Actor::CommandLine,
            action: "keys.resealed",
            object_kind: "secret_key",
            object_id: secrets.current_key_id(),
            region_path: None,
            summary: serde_json::json!({
                "citizen_ids": report.citizen_ids,
                "endpoint_secrets": report.endpoint_secrets,
                "finished": report.finished,
                "unopenable": report.unopenable_total,
            }),
        };
        store.append_audit(&audit, UnixMs::now()).await?;
    }
    Ok(report)
}
