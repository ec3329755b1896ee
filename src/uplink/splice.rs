//! One open TCP flow: a smoltcp socket on the segment side spliced to a host `TcpStream`.
//!
//! Bytes move without an intermediate buffer: host reads land directly in the socket's transmit
//! ring, and the receive ring is written straight to the host. Each direction stops when the other
//! side has no room (the smoltcp window closes, or the host write would block), so a flow never
//! holds more than its two rings. Half-close is carried both ways (a FIN from the function becomes
//! `shutdown(Write)` on the host; EOF from the host becomes a FIN), and so are resets (a RST from
//! the function closes the host socket with `SO_LINGER` 0, which sends a RST; a host read or write
//! error aborts the smoltcp socket, which sends one).

use std::io;
use std::net::Shutdown;
use std::task::Context;
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use tokio::net::TcpStream;

use super::counters::UplinkCounters;

/// An established flow whose peer stops acknowledging data for this long is reset.
const DEAD_PEER: Duration = Duration::from_secs(120);

/// How a flow ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Both sides closed with FINs.
    Graceful,
    /// The function reset the connection (the host got a RST).
    Reset,
    /// A host error or the idle timeout ended it (counted when it happened).
    AlreadyCounted,
    /// The handshake on the segment side never completed.
    NeverOpened { ingress: bool },
}

impl Splice {
    /// The host stream's local address (what the outside sees of the flow).
    pub(crate) fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.local_addr().ok()
    }
}

pub(crate) struct Splice {
    handle: SocketHandle,
    stream: TcpStream,
    ingress: bool,
    /// The segment-side handshake completed.
    established: bool,
    /// The host sent EOF (and the socket was asked to send a FIN).
    host_eof: bool,
    /// The function's FIN was passed on as `shutdown(Write)`.
    host_shut: bool,
    /// A host error or timeout aborted the flow.
    reset: bool,
    /// The last pump stopped because the host had nothing to read while the socket had room.
    want_read: bool,
    /// The last pump stopped because a host write would block.
    want_write: bool,
}

/// States in which the function has sent its FIN.
fn fin_received(state: tcp::State) -> bool {
    matches!(
        state,
        tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::TimeWait
    )
}

fn synchronized(state: tcp::State) -> bool {
    !matches!(
        state,
        tcp::State::Closed | tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived
    )
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// A duration as smoltcp counts it.
pub(crate) fn smol_duration(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Makes dropping `stream` send a RST instead of a FIN.
pub(crate) fn reset_host(stream: &TcpStream) {
    // If this fails the peer gets a FIN instead: still an end of the connection.
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

impl Splice {
    pub(crate) fn new(handle: SocketHandle, stream: TcpStream, ingress: bool) -> Splice {
        Splice {
            handle,
            stream,
            ingress,
            established: false,
            host_eof: false,
            host_shut: false,
            reset: false,
            want_read: false,
            want_write: false,
        }
    }

    pub(crate) fn handle(&self) -> SocketHandle {
        self.handle
    }

    /// Moves what both sides allow, and passes FINs on. Call after the stack read its input;
    /// returns whether anything moved (the flow is not idle).
    pub(crate) fn pump(&mut self, s: &mut tcp::Socket<'_>, counters: &mut UplinkCounters) -> bool {
        if !self.established && synchronized(s.state()) {
            self.established = true;
            s.set_timeout(Some(smol_duration(DEAD_PEER)));
        }
        let mut progress = false;
        self.want_write = false;
        if !self.reset && !self.host_shut {
            match self.segment_to_host(s, counters) {
                Ok(moved) => progress |= moved,
                Err(()) => {
                    self.fail(s, counters);
                    return true;
                }
            }
        }
        if !self.reset && !self.host_eof {
            match self.host_to_segment(s, counters) {
                Ok(moved) => progress |= moved,
                Err(()) => {
                    self.fail(s, counters);
                    return true;
                }
            }
        }
        self.want_read = !self.reset && !self.host_eof && s.can_send();
        progress
    }

    /// Segment -> host: the receive ring to the host socket, then the function's FIN.
    fn segment_to_host(
        &mut self,
        s: &mut tcp::Socket<'_>,
        counters: &mut UplinkCounters,
    ) -> Result<bool, ()> {
        let stream = &self.stream;
        let mut moved = false;
        while s.can_recv() {
            let r = s.recv(|buf| match stream.try_write(buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            match r {
                Ok(Ok(n)) => {
                    counters.bytes_to_host += n as u64;
                    moved = true;
                }
                Ok(Err(e)) if would_block(&e) => {
                    self.want_write = true;
                    break;
                }
                Ok(Err(_)) => return Err(()),
                Err(_) => break,
            }
        }
        if self.established && !s.can_recv() && fin_received(s.state()) {
            self.host_shut = true;
            moved = true;
            if socket2::SockRef::from(stream)
                .shutdown(Shutdown::Write)
                .is_err()
            {
                return Err(());
            }
        }
        Ok(moved)
    }

    /// Host -> segment: host reads straight into the transmit ring; EOF becomes a FIN.
    fn host_to_segment(
        &mut self,
        s: &mut tcp::Socket<'_>,
        counters: &mut UplinkCounters,
    ) -> Result<bool, ()> {
        let stream = &self.stream;
        let mut moved = false;
        while s.can_send() {
            let r = s.send(|buf| match stream.try_read(buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            match r {
                Ok(Ok(0)) => {
                    self.host_eof = true;
                    s.close();
                    moved = true;
                    break;
                }
                Ok(Ok(n)) => {
                    counters.bytes_from_host += n as u64;
                    moved = true;
                }
                Ok(Err(e)) if would_block(&e) => break,
                Ok(Err(_)) => return Err(()),
                Err(_) => break,
            }
        }
        Ok(moved)
    }

    /// A host error: reset the function's side too.
    fn fail(&mut self, s: &mut tcp::Socket<'_>, counters: &mut UplinkCounters) {
        self.reset = true;
        s.abort();
        counters.tcp_reset += 1;
    }

    /// Ends the flow on both sides with RSTs (the idle timeout).
    pub(crate) fn abort(&mut self, s: &mut tcp::Socket<'_>) {
        self.reset = true;
        s.abort();
    }

    /// Closes the host side once the socket is `Closed` or `TimeWait` (`state`): quietly after
    /// a graceful close, with a RST otherwise.
    pub(crate) fn finish(self, state: tcp::State) -> Ending {
        let graceful = !self.reset
            && self.established
            && self.host_eof
            && (state == tcp::State::TimeWait || (state == tcp::State::Closed && self.host_shut));
        if graceful {
            return Ending::Graceful;
        }
        reset_host(&self.stream);
        if self.reset {
            Ending::AlreadyCounted
        } else if !self.established {
            Ending::NeverOpened {
                ingress: self.ingress,
            }
        } else {
            Ending::Reset
        }
    }

    /// Whether the host socket has what the last pump stopped for; registers `cx` otherwise.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> bool {
        let read = self.want_read && self.stream.poll_read_ready(cx).is_ready();
        let write = self.want_write && self.stream.poll_write_ready(cx).is_ready();
        read || write
    }
}
