//! Batches: one request carrying many changes, applied all or none (issue 20: a function
//! platform attaching a hundred instances pays for one compile, one swap and one fsync).
//!
//! The body is `{"changes": [{"op": OP, "request": BODY}, ...]}`: each entry is what
//! `POST /v1/ops/OP` takes as its body. The changes are applied in order, each to the state the
//! ones before it made, exactly as single requests would be (the same checks, the same messages);
//! the first refusal refuses the batch, with its errors' `field` prefixed `changes[I].`
//! (`changes[I]` alone when the error names no field), and nothing changes. An accepted batch is
//! one step for the running network and one record in the journal, so a crash keeps all of it
//! or none.

use serde::Deserialize;

use super::error::{ApiError, ChangeError, ErrorCode, decode};
use super::{Change, ControlState};

/// The most changes one batch may carry.
pub const MAX_BATCH: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    changes: Vec<BatchEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchEntry {
    op: String,
    request: serde_json::Value,
}

/// Points `e`'s errors at entry `i` of the batch.
fn in_entry(i: usize, mut e: ChangeError) -> ChangeError {
    for x in &mut e.errors {
        x.field = if x.field.is_empty() {
            format!("changes[{i}]")
        } else {
            format!("changes[{i}].{}", x.field)
        };
    }
    e
}

/// Decodes a batch body: 1 to [`MAX_BATCH`] entries, each decoded like the body of its
/// operation.
pub fn decode_batch(body: &[u8]) -> Result<Vec<Change>, ChangeError> {
    let batch: BatchBody = decode(body)?;
    if batch.changes.is_empty() || batch.changes.len() > MAX_BATCH {
        return Err(ChangeError::one(ApiError::new(
            ErrorCode::InvalidInput,
            format!(
                "a batch carries 1 to {MAX_BATCH} changes, not {}",
                batch.changes.len()
            ),
            "changes",
            "split the changes into several batches",
        )));
    }
    batch
        .changes
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let body = entry.request.to_string();
            Change::decode(&entry.op, body.as_bytes()).map_err(|e| {
                let mut e = in_entry(i, e);
                // An unknown operation is a bad `op` in the body, not a missing path.
                if !Change::OPS.contains(&entry.op.as_str()) {
                    for x in &mut e.errors {
                        x.code = ErrorCode::InvalidInput;
                    }
                }
                e
            })
        })
        .collect()
}

impl ControlState {
    /// Applies one request's changes (`batch`: a `POST /v1/batch` body, whose errors name the
    /// entry) to `self`. On `Err`, `self` may be partly edited: callers work on a copy they
    /// rebuild after a refusal (the API's committer).
    pub(crate) fn apply_request(
        &mut self,
        changes: &[Change],
        batch: bool,
    ) -> Result<(), ChangeError> {
        for (i, c) in changes.iter().enumerate() {
            self.apply_in_place(c)
                .map_err(|e| if batch { in_entry(i, e) } else { e })?;
        }
        Ok(())
    }

    /// Applies `changes` in order, all or none: the new state (its generation `changes.len()`
    /// more) or the first refusal, its fields prefixed with the entry (see the module doc).
    /// `self` is never modified.
    pub fn apply_batch(&self, changes: &[Change]) -> Result<ControlState, ChangeError> {
        let mut next = self.clone();
        next.apply_request(changes, true)?;
        Ok(next)
    }
}
