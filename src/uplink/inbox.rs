//! What the uplink's tokio tasks hand back: finished host connects and connections accepted on
//! host listeners. Tasks push; [`Uplink::poll`](super::Uplink::poll) drains; the
//! [`Uplink::ready`](super::Uplink::ready) future is woken by every push.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::net::TcpStream;

use super::packet::UplinkFlowKey;

/// One result from a task.
#[derive(Debug)]
pub(crate) enum Event {
    /// The host connect for the egress flow `key` (of generation `generation`) finished.
    Connected {
        key: UplinkFlowKey,
        generation: u64,
        result: io::Result<TcpStream>,
    },
    /// Host listener number `listener` accepted `stream` from `peer`.
    Accepted {
        listener: usize,
        stream: TcpStream,
        peer: SocketAddr,
    },
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Event>,
    /// Accepted connections in `queue` (bounded by the caller's limit).
    accepts: usize,
    waker: Option<Waker>,
}

/// A queue shared between the uplink and its tasks (`Arc`'d).
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    inner: Mutex<Inner>,
    /// Accepted connections closed because `limit` already waited.
    backlog_drops: AtomicU64,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a connect result and wakes the uplink's `ready` future.
    pub(crate) fn push(&self, event: Event) {
        let mut g = self.lock();
        if matches!(event, Event::Accepted { .. }) {
            g.accepts += 1;
        }
        g.queue.push_back(event);
        if let Some(w) = g.waker.take() {
            w.wake();
        }
    }

    /// Queues an accepted connection unless `limit` of them already wait; gives it back if so.
    pub(crate) fn push_accept(&self, event: Event, limit: usize) -> Result<(), Event> {
        if self.lock().accepts >= limit {
            return Err(event);
        }
        self.push(event);
        Ok(())
    }

    pub(crate) fn count_backlog_drop(&self) {
        self.backlog_drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Backlog drops since the last call.
    pub(crate) fn take_backlog_drops(&self) -> u64 {
        self.backlog_drops.swap(0, Ordering::Relaxed)
    }

    /// Moves every queued event to `out`.
    pub(crate) fn drain_into(&self, out: &mut Vec<Event>) {
        let mut g = self.lock();
        g.accepts = 0;
        out.extend(g.queue.drain(..));
    }

    /// Ready when something is queued; otherwise remembers `cx`'s waker.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut g = self.lock();
        if g.queue.is_empty() {
            match &g.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => g.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}
