//! The committer: the one task that changes the state, taking concurrent requests in groups.
//!
//! Change requests (`POST /v1/ops/{op}`, `POST /v1/batch`) queue a [`Pending`] and wait for its
//! answer. The committer takes every request queued at that moment (at most [`MAX_GROUP`]) as a
//! group and runs the control core's protocol once for all of them, so that the costs which grow
//! with the topology (copying the state, compiling and swapping the tables) and the fsync are
//! paid once per group instead of once per request (group commit, the whole way down):
//!
//! 1. each request is applied, in arrival order, to one working copy of the state, exactly as
//!    it would be alone (its own checks, its own refusal and messages). A refused request is
//!    answered at once; since a refusal may leave the copy partly edited, the copy is then
//!    made again from the state and the requests accepted so far are applied again;
//! 2. the accepted requests' plan goes to the running network in one step
//!    ([`Handle::apply`]). If the network refuses a step of several requests, each is tried
//!    again on its own, so that one request's failure (a namespace that cannot be made) is
//!    only its own;
//! 3. the accepted changes are appended to the journal as one record, the state becomes the
//!    working copy (the old one is dropped on a blocking thread, off the loop's), and the
//!    journal is compacted when due;
//! 4. the answers wait for the record's fsync in a task of their own, so the next group is
//!    applied while this one's fsync runs.
//!
//! Each answer carries the generation after its own changes; `applied` describes the step that
//! carried it (concurrent requests may share one). Requests are applied in the order they were
//! queued, the order a single writer would have seen.

use std::sync::Arc;

use axum::response::Response;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::{Shared, error, ok, refused};
use crate::control::{Change, ControlState, ErrorCode};
use crate::runtime::reload::ApplyError;

/// The most requests one group takes.
pub const MAX_GROUP: usize = 256;

/// One queued request: its changes, whether it is a batch (its errors name the entry), and
/// where its answer goes.
pub(super) struct Pending {
    pub changes: Vec<Change>,
    pub batch: bool,
    pub reply: oneshot::Sender<Response>,
}

/// Where requests queue for the committer.
pub(super) type Queue = mpsc::UnboundedSender<Pending>;

/// Queues `changes` and waits for the answer.
pub(super) async fn submit(queue: &Queue, changes: Vec<Change>, batch: bool) -> Response {
    let (reply, answer) = oneshot::channel();
    let stopped = || {
        error(
            ErrorCode::Unavailable,
            "the control plane is stopping",
            "",
            "the run is stopping; start `vpcd up --state DIR` again",
        )
    };
    if queue
        .send(Pending {
            changes,
            batch,
            reply,
        })
        .is_err()
    {
        return stopped();
    }
    answer.await.unwrap_or_else(|_| stopped())
}

/// Serves the queue until every sender is gone.
pub(super) async fn committer(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        commit(&shared, group).await;
    }
}

/// A request accepted into the working copy, with the generation after its changes.
struct Accepted {
    pending: Pending,
    generation: u64,
}

/// Step 1: the working copy with every request of `group` that applies; refused ones are
/// answered.
fn validate(state: &ControlState, group: Vec<Pending>) -> (ControlState, Vec<Accepted>) {
    let mut working = state.clone();
    let mut accepted: Vec<Accepted> = Vec::with_capacity(group.len());
    for p in group {
        match working.apply_request(&p.changes, p.batch) {
            Ok(()) => accepted.push(Accepted {
                generation: working.generation(),
                pending: p,
            }),
            Err(e) => {
                let _ = p.reply.send(refused(e));
                working = state.clone();
                for a in &accepted {
                    // Applied once already to the same state: it applies again the same way.
                    if let Err(e) = working.apply_request(&a.pending.changes, a.pending.batch) {
                        eprintln!("vpcd up: a change applied twice differently (a bug): {e:?}");
                    }
                }
            }
        }
    }
    (working, accepted)
}

/// Steps 1 to 4 for one group (see the module doc).
async fn commit(shared: &Shared, group: Vec<Pending>) {
    let mut state = shared.state.lock().await;
    let (working, accepted) = validate(&state, group);
    if accepted.is_empty() {
        return;
    }
    let applied = match shared.handle.apply(working.shared_plan()).await {
        Ok(a) => a,
        Err(_) if accepted.len() > 1 => {
            drop(state);
            for a in accepted {
                Box::pin(commit(shared, vec![a.pending])).await;
            }
            return;
        }
        Err(e) => {
            let code = match e {
                ApplyError::Refused(_) => ErrorCode::DependencyViolation,
                ApplyError::Stopped => ErrorCode::Unavailable,
                _ => ErrorCode::Internal,
            };
            for a in accepted {
                let _ = a.pending.reply.send(error(
                    code,
                    format!("the running network did not take the change: {e}"),
                    "",
                    "the change is not in force; the running network is as before",
                ));
            }
            return;
        }
    };
    let changes: Vec<Change> = accepted
        .iter()
        .flat_map(|a| a.pending.changes.iter().cloned())
        .collect();
    let appended = {
        let mut journal = shared.journal_lock();
        let ticket = journal.append(working.generation(), &changes);
        ticket.map(|t| (t, journal.durable()))
    };
    let (ticket, durable) = match appended {
        Ok(t) => t,
        Err(e) => {
            // Keep the running network equal to what a restart would load.
            let _ = shared.handle.apply(state.shared_plan()).await;
            for a in accepted {
                let _ = a.pending.reply.send(error(
                    ErrorCode::Internal,
                    format!("the change could not be saved: {e}"),
                    "",
                    "the change was undone; check the state directory",
                ));
            }
            return;
        }
    };
    let old = std::mem::replace(&mut *state, working);
    shared.compact_if_due(&state);
    drop(state);
    // Freeing ten thousand instances' strings is work the loop's thread need not do.
    drop(tokio::task::spawn_blocking(move || drop(old)));
    let answers: Vec<(oneshot::Sender<Response>, serde_json::Value)> = accepted
        .into_iter()
        .map(|a| {
            let ops: Vec<&str> = a.pending.changes.iter().map(Change::op).collect();
            let body = json!({
                "op": if a.pending.batch { json!(ops) } else { json!(ops.first()) },
                "generation": a.generation,
                "applied": applied.summary(),
                "problems": applied.problems,
            });
            (a.pending.reply, body)
        })
        .collect();
    tokio::spawn(async move {
        match durable.wait(ticket).await {
            Ok(()) => {
                for (reply, body) in answers {
                    let _ = reply.send(ok(body));
                }
            }
            Err(e) => {
                for (reply, _) in answers {
                    let _ = reply.send(error(
                        ErrorCode::Internal,
                        format!("the change is in force but could not be made durable: {e}"),
                        "",
                        "no further change is accepted; restart `vpcd up --state DIR` (it \
                         loads the changes acknowledged before this one)",
                    ));
                }
            }
        }
    });
}
