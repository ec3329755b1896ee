//! A small unbounded channel whose receiver is awaited (or polled) on the runtime's thread.
//! Senders may live on any thread; `recv` resolves to `None` once every sender is gone and the
//! queue is empty. Used for the reload commands into the control task, the port swaps into the
//! loop, their one-shot replies, and the emptied batches a TUN port's writer thread hands back
//! (which wake the loop when it waits for one). The queue grows to the most it ever held and
//! keeps that room: a channel that carries a bounded number of values allocates only at first.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

struct Inner<T> {
    queue: VecDeque<T>,
    waker: Option<Waker>,
    senders: usize,
}

pub struct Sender<T> {
    inner: Arc<Mutex<Inner<T>>>,
}

pub struct Receiver<T> {
    inner: Arc<Mutex<Inner<T>>>,
}

pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Mutex::new(Inner {
        queue: VecDeque::new(),
        waker: None,
        senders: 1,
    }));
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver { inner },
    )
}

impl<T> Sender<T> {
    /// Queues `value`; `Err(value)` when the receiver is gone.
    pub fn send(&self, value: T) -> Result<(), T> {
        if Arc::strong_count(&self.inner) == self.senders_only() {
            return Err(value);
        }
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.queue.push_back(value);
        if let Some(w) = g.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// The reference count when only senders hold the channel (the receiver dropped).
    fn senders_only(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .senders
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .senders += 1;
        Sender {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.senders = g.senders.saturating_sub(1);
        if g.senders == 0
            && let Some(w) = g.waker.take()
        {
            w.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The next value; `None` when every sender is gone and nothing is queued.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next value, or `Pending` with `cx`'s waker registered (woken by the next `send` or
    /// when the last sender goes); `Ready(None)` when every sender is gone and nothing is queued.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = g.queue.pop_front() {
            return Poll::Ready(Some(v));
        }
        if g.senders == 0 {
            return Poll::Ready(None);
        }
        match &g.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => g.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next value if one is queued (never waits, registers nothing).
    pub fn try_recv(&mut self) -> Option<T> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .queue
            .pop_front()
    }
}

impl<T> Drop for Receiver<T> {
    /// Drops what is still queued (after unlocking), so that replies waiting inside it resolve.
    fn drop(&mut self) {
        let queued = std::mem::take(
            &mut self
                .inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .queue,
        );
        drop(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_in_order_then_ends_when_senders_are_gone() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (tx, mut rx) = channel();
        let tx2 = tx.clone();
        let t = std::thread::spawn(move || {
            for i in 0..3 {
                let _ = tx2.send(i);
            }
        });
        let _ = tx.send(10);
        let _ = t.join();
        drop(tx);
        let got: Vec<i32> = rt.block_on(async {
            let mut v = Vec::new();
            while let Some(x) = rx.recv().await {
                v.push(x);
            }
            v
        });
        assert_eq!(got.len(), 4);
        assert!(got.contains(&10));
    }

    #[test]
    fn a_send_from_another_thread_wakes_the_polling_task() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (tx, mut rx) = channel();
        assert_eq!(rx.try_recv(), None, "nothing queued");
        let got = rt.block_on(async {
            let t = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                let _ = tx.send(7u8);
                tx
            });
            // Pending first (nothing queued yet), then woken by the other thread's send.
            let v = poll_fn(|cx| rx.poll_recv(cx)).await;
            let tx = t.join().expect("the sender thread");
            let _ = tx.send(8);
            (v, rx.try_recv())
        });
        assert_eq!(got, (Some(7), Some(8)));
    }

    #[test]
    fn send_to_a_dropped_receiver_fails() {
        let (tx, rx) = channel::<u8>();
        drop(rx);
        assert_eq!(tx.send(1), Err(1));
    }
}
