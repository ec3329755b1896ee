//! The SYN proxy of a gateway's DNAT rules (`syn_proxy = true`): a SYN from the outside makes no
//! state. The gateway answers it with a SYN-ACK whose sequence number is a cookie — a keyed hash
//! of the connection's addresses, the client's initial sequence number and a 64-second time slot,
//! with the client's MSS, window scale and SACK permission in its low bits — and forgets it. Only
//! an ACK that returns a valid cookie makes a session; the gateway then opens the connection to
//! the instance with the client's own SYN options, completes that handshake itself, and from then
//! on shifts sequence numbers between the two halves (the instance's initial sequence number is
//! not the cookie), as Linux's SYNPROXY target and the clouds' load balancers do.
//!
//! What the client and the instance see:
//! - The proxy offers the client window scale [`PROXY_WSCALE`] (when the client offered scaling)
//!   and rescales the instance's windows to it; the client's own scale reaches the instance
//!   unchanged in the SYN, so the client's windows need no change. SACK is offered when the
//!   client offered it, and the client's SACK blocks are shifted into the instance's sequence
//!   space. Timestamps are not offered (a cookie has no room for the client's timestamp), so a
//!   proxied connection runs without them, like a Linux SYN-cookie connection without
//!   timestamps.
//! - The client's MSS reaches the instance rounded down to one of [`MSS_TABLE`]; the client is
//!   offered 1,460 (or what its own SYN had room for).
//! - The client may send before the instance has answered: the first such segment (up to
//!   [`HELD_MAX`] bytes) is kept and sent to the instance as the handshake's last ACK; later ones
//!   are dropped (`nat_syn_proxy_pending`) and the client sends them again.
//!
//! Everything here is a pure function of its arguments (packet bytes and numbers).

use std::hash::BuildHasher;

use foldhash::fast::FixedState;

use super::bytes::{rd16, rd32, wr16, wr32};
use crate::dataplane::checksum;
use crate::dataplane::packet::{TCP_ACK, TCP_RST, TCP_SYN};

/// MSS values a cookie can carry: the largest not above the client's is sent to the instance.
pub(crate) const MSS_TABLE: [u16; 4] = [536, 1220, 1440, 1460];
/// The MSS the proxy offers the client (the instance's port MTU is not known here; a larger
/// instance MTU is not lost for good: the instance's own MSS applies to what it sends).
const PROXY_MSS: u16 = 1460;
/// The window scale the proxy offers a client that offered scaling (Linux's own choice for its
/// default buffers); the instance's windows are rescaled to it.
pub(crate) const PROXY_WSCALE: u8 = 7;
/// The proxy's SYN-ACK window (never scaled in a SYN).
const SYNACK_WINDOW: u16 = 65535;
/// A cookie is good in its 64-second slot and the next one.
const SLOT_SHIFT: u32 = 6;
/// The low bits of a cookie: 4 for the window scale (15: none), 1 for SACK, 2 for the MSS
/// index, 2 for the time slot; the 23 above them are the keyed hash.
const LOW_BITS: u32 = 9;
const LOW_MASK: u32 = (1 << LOW_BITS) - 1;
/// The longest early client segment kept (IP packet bytes).
pub(crate) const HELD_MAX: usize = 1500;

/// What a client's SYN asked for, as a cookie keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SynOptions {
    pub(crate) mss: u16,
    pub(crate) wscale: Option<u8>,
    pub(crate) sack: bool,
}

/// A connection as the cookie binds it: (client address, client port, EIP, port).
pub(crate) type Tuple = (u32, u16, u32, u16);

/// The cookie key (from the gateway's seed: unpredictable outside the simulator).
#[derive(Debug, Clone)]
pub(crate) struct Cookies {
    key: FixedState,
}

impl Cookies {
    pub(crate) fn new(seed: u64) -> Self {
        Cookies {
            key: FixedState::with_seed(seed.rotate_left(53) ^ 0x5359_4e43_4f4f_4b49),
        }
    }

    fn mac(&self, t: Tuple, isn: u32, slot: u32, low: u32) -> u32 {
        (self.key.hash_one((t, isn, slot, low)) >> 32) as u32 & !LOW_MASK
    }

    /// The proxy's initial sequence number for a client's SYN at tick `now` (seconds).
    pub(crate) fn make(&self, t: Tuple, client_isn: u32, now: u32, o: SynOptions) -> u32 {
        let slot = now >> SLOT_SHIFT;
        let low = encode(o, slot);
        self.mac(t, client_isn, slot, low) | low
    }

    /// The options a returned cookie carries, if it is one this key made for this connection in
    /// the current slot or the one before.
    pub(crate) fn check(
        &self,
        t: Tuple,
        client_isn: u32,
        cookie: u32,
        now: u32,
    ) -> Option<SynOptions> {
        let low = cookie & LOW_MASK;
        let cur = now >> SLOT_SHIFT;
        let slot = [cur, cur.wrapping_sub(1)]
            .into_iter()
            .find(|s| s & 3 == (low >> 7) & 3)?;
        (self.mac(t, client_isn, slot, low) == cookie & !LOW_MASK).then(|| decode(low))
    }
}

fn encode(o: SynOptions, slot: u32) -> u32 {
    let mss = MSS_TABLE.iter().rposition(|m| *m <= o.mss).unwrap_or(0) as u32;
    let ws = o.wscale.map_or(15, |w| u32::from(w.min(14)));
    ((slot & 3) << 7) | (mss << 5) | (u32::from(o.sack) << 4) | ws
}

fn decode(low: u32) -> SynOptions {
    SynOptions {
        mss: MSS_TABLE[((low >> 5) & 3) as usize],
        wscale: match low & 15 {
            15 => None,
            w => Some(w as u8),
        },
        sack: low & 16 != 0,
    }
}

/// The MSS, window scale and SACK permission of a SYN's options (RFC 9293 3.2, RFC 7323, RFC
/// 2018). A malformed list ends the walk; what was read so far counts.
pub(crate) fn syn_options(opts: &[u8]) -> SynOptions {
    let mut o = SynOptions {
        mss: 536,
        wscale: None,
        sack: false,
    };
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => break,
            1 => i += 1,
            _ => {
                let Some(len) = opts.get(i + 1).map(|l| usize::from(*l)) else {
                    break;
                };
                let Some(body) = opts.get(i + 2..i + len).filter(|_| len >= 2) else {
                    break;
                };
                match (kind, body) {
                    (2, [a, b]) => o.mss = u16::from_be_bytes([*a, *b]),
                    (3, [w]) => o.wscale = Some((*w).min(14)),
                    (4, []) => o.sack = true,
                    _ => {}
                }
                i += len;
            }
        }
    }
    o
}

/// The length of the SYN the proxy sends an instance, with every option.
pub(crate) const SYN_LEN: usize = 40 + 12;

/// The sequence number of the TCP segment whose header is at `t` (checked by the caller).
pub(crate) fn seq(pkt: &[u8], t: usize) -> u32 {
    rd32(pkt, t + 4)
}

/// Its acknowledgment number.
pub(crate) fn ack(pkt: &[u8], t: usize) -> u32 {
    rd32(pkt, t + 8)
}

/// Its window field.
pub(crate) fn window(pkt: &[u8], t: usize) -> u16 {
    rd16(pkt, t + 14)
}

/// Its options (empty when the header is malformed).
pub(crate) fn tcp_options(pkt: &[u8], t: usize) -> &[u8] {
    tcp_header(pkt, t).map_or(&[], |(t, off)| &pkt[t + 20..t + off])
}

/// Whether it carries payload.
pub(crate) fn has_payload(pkt: &[u8], t: usize) -> bool {
    tcp_header(pkt, t).is_some_and(|(t, off)| pkt.len() > t + off)
}

/// The fields of one TCP segment the proxy builds.
struct Segment<'a> {
    src: (u32, u16),
    dst: (u32, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    /// Options, a multiple of four bytes.
    options: &'a [u8],
}

/// Writes `seg` with `payload_len` payload bytes already at `buf[40 + options..]` as a complete
/// IPv4/TCP packet with both checksums; its length, or `None` when `buf` is too short.
fn write_segment(buf: &mut [u8], seg: &Segment<'_>, payload_len: usize) -> Option<usize> {
    let tcp_len = 20 + seg.options.len() + payload_len;
    let total = 20 + tcp_len;
    if buf.len() < total || total > usize::from(u16::MAX) {
        return None;
    }
    let ip = &mut buf[..20];
    ip.fill(0);
    ip[0] = 0x45;
    wr16(ip, 2, total as u16);
    ip[6] = 0x40; // DF
    ip[8] = crate::dataplane::icmp::GENERATED_TTL;
    ip[9] = 6;
    wr32(ip, 12, seg.src.0);
    wr32(ip, 16, seg.dst.0);
    let c = checksum::checksum(ip);
    wr16(ip, 10, c);
    let tcp = &mut buf[20..total];
    wr16(tcp, 0, seg.src.1);
    wr16(tcp, 2, seg.dst.1);
    wr32(tcp, 4, seg.seq);
    wr32(tcp, 8, seg.ack);
    tcp[12] = (((20 + seg.options.len()) / 4) << 4) as u8;
    tcp[13] = seg.flags;
    wr16(tcp, 14, seg.window);
    wr32(tcp, 16, 0); // checksum and urgent pointer
    tcp[20..20 + seg.options.len()].copy_from_slice(seg.options);
    let ph = checksum::pseudo_header(seg.src.0.into(), seg.dst.0.into(), 6, tcp_len as u16);
    let c = !(checksum::sum(tcp, ph) as u16);
    wr16(tcp, 16, c);
    Some(total)
}

/// SYN options in the usual padded layout: MSS, then NOP NOP SACK-permitted, then NOP window
/// scale; at most `room` bytes (whole options only).
fn options(mss: u16, sack: bool, wscale: Option<u8>, room: usize) -> ([u8; 12], usize) {
    let mut o = [0u8; 12];
    let mut n = 0;
    if room >= 4 {
        o[..4].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        n = 4;
    }
    if sack && room >= n + 4 {
        o[n..n + 4].copy_from_slice(&[1, 1, 4, 2]);
        n += 4;
    }
    if let Some(w) = wscale
        && room >= n + 4
    {
        o[n..n + 4].copy_from_slice(&[1, 3, 3, w]);
        n += 4;
    }
    (o, n)
}

/// The TCP header of `pkt` (an IPv4 packet whose IP header is `ihl` bytes): (offset, header
/// length), checked against the packet's length.
fn tcp_header(pkt: &[u8], ihl: usize) -> Option<(usize, usize)> {
    let off = usize::from(*pkt.get(ihl + 12)? >> 4) * 4;
    (off >= 20 && pkt.len() >= ihl + off).then_some((ihl, off))
}

/// Answers the client's SYN `pkt` (IP header `ihl` bytes) in place with the proxy's SYN-ACK
/// carrying `cookie`, within the SYN's own length. Its length, or `None` for a malformed SYN.
pub(crate) fn write_syn_ack(pkt: &mut [u8], ihl: usize, cookie: u32) -> Option<usize> {
    let (t, off) = tcp_header(pkt, ihl)?;
    let o = syn_options(&pkt[t + 20..t + off]);
    let (src, dst) = (rd32(pkt, 16), rd32(pkt, 12));
    let (sport, dport) = (rd16(pkt, t + 2), rd16(pkt, t));
    let client_isn = rd32(pkt, t + 4);
    let room = pkt.len().saturating_sub(40).min(12);
    let ws = o.wscale.map(|_| PROXY_WSCALE);
    let (opts, n) = options(PROXY_MSS.min(o.mss.max(536)), o.sack, ws, room);
    let seg = Segment {
        src: (src, sport),
        dst: (dst, dport),
        seq: cookie,
        ack: client_isn.wrapping_add(1),
        flags: TCP_SYN | TCP_ACK,
        window: SYNACK_WINDOW,
        options: &opts[..n],
    };
    write_segment(pkt, &seg, 0)
}

/// What the proxy remembers of a connection the client completed (kept beside its session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proxied {
    /// The proxy's initial sequence number towards the client (the cookie).
    pub(crate) cookie: u32,
    pub(crate) client_isn: u32,
    /// The window field of the client's handshake ACK (scaled by the client's own factor, which
    /// the instance learns from the SYN).
    pub(crate) client_window: u16,
    /// The scale the proxy offered the client (`None`: no scaling either way).
    pub(crate) proxy_ws: Option<u8>,
    pub(crate) phase: Phase,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The SYN went to the instance; its SYN-ACK has not come. `held`: the client's first
    /// early segment (the whole IP packet, addressed as it arrived).
    Opening { held: Option<Box<[u8]>> },
    /// Both halves are open: the instance's sequence numbers plus `delta` are the client's view,
    /// and the instance's windows are scaled by `server_ws`.
    Open { delta: u32, server_ws: u8 },
}

/// Turns the client's handshake ACK `buf[..len]` (IP header `ihl` bytes, the cookie checked)
/// into the SYN the instance gets, in place, still addressed to the EIP: the client's initial
/// sequence number, window and SYN options. Its length, or `None` when `buf` has no room.
pub(crate) fn write_syn(buf: &mut [u8], ihl: usize, st: &Proxied, o: SynOptions) -> Option<usize> {
    let t = ihl;
    let (src, dst) = (
        (rd32(buf, 12), rd16(buf, t)),
        (rd32(buf, 16), rd16(buf, t + 2)),
    );
    let window = o.wscale.map_or(st.client_window, |w| {
        (u32::from(st.client_window) << w).min(u32::from(u16::MAX)) as u16
    });
    let (opts, n) = options(o.mss, o.sack, o.wscale, 12);
    let seg = Segment {
        src,
        dst,
        seq: st.client_isn,
        ack: 0,
        flags: TCP_SYN,
        window,
        options: &opts[..n],
    };
    write_segment(buf, &seg, 0)
}

/// The instance's SYN-ACK `buf[..len]` (IP header `ihl` bytes) for a connection in
/// [`Phase::Opening`]: the instance's initial sequence number and window scale, or `None` when it
/// is not the answer to the proxy's SYN.
pub(crate) fn server_syn_ack(pkt: &[u8], ihl: usize, st: &Proxied) -> Option<(u32, u8)> {
    let (t, off) = tcp_header(pkt, ihl)?;
    let flags = pkt[t + 13];
    if flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN | TCP_ACK
        || rd32(pkt, t + 8) != st.client_isn.wrapping_add(1)
    {
        return None;
    }
    let o = syn_options(&pkt[t + 20..t + off]);
    // Scaling is on only when both SYNs carried it.
    let ws = match (st.proxy_ws, o.wscale) {
        (Some(_), Some(w)) => w,
        _ => 0,
    };
    Some((rd32(pkt, t + 4), ws))
}

/// Completes the instance's handshake in place of its SYN-ACK `buf` (IP header `ihl` bytes):
/// the client's early segment `held`, shifted into the instance's sequence space, or else a bare
/// ACK; addressed from the client to the instance. Its length.
pub(crate) fn write_final_ack(
    buf: &mut [u8],
    ihl: usize,
    st: &Proxied,
    server_isn: u32,
    held: Option<&[u8]>,
) -> Option<usize> {
    let t = ihl;
    let instance = (rd32(buf, 12), rd16(buf, t));
    let client = (rd32(buf, 16), rd16(buf, t + 2));
    let delta = st.cookie.wrapping_sub(server_isn);
    let bare = Segment {
        src: client,
        dst: instance,
        seq: st.client_isn.wrapping_add(1),
        ack: server_isn.wrapping_add(1),
        flags: TCP_ACK,
        window: st.client_window,
        options: &[],
    };
    let early = held.and_then(|h| {
        let hihl = usize::from(h.first()? & 0x0f) * 4;
        let (ht, hoff) = tcp_header(h, hihl)?;
        let payload = h.get(ht + hoff..)?;
        (buf.len() >= 40 + payload.len()).then_some((h, ht, payload))
    });
    match early {
        Some((h, ht, payload)) => {
            buf[40..40 + payload.len()].copy_from_slice(payload);
            let seg = Segment {
                seq: rd32(h, ht + 4),
                ack: rd32(h, ht + 8).wrapping_sub(delta),
                flags: h[ht + 13] & !(TCP_SYN | TCP_RST),
                window: rd16(h, ht + 14),
                ..bare
            };
            write_segment(buf, &seg, payload.len())
        }
        None => write_segment(buf, &bare, 0),
    }
}

/// The instance's RST to the proxy's SYN, moved into the client's sequence space (the client's
/// next expected sequence number is the cookie's successor) so that the client accepts it.
pub(crate) fn refuse_in_client_space(pkt: &mut [u8], t: usize, st: &Proxied, complete: bool) {
    let seq = rd32(pkt, t + 4);
    let new = st.cookie.wrapping_add(1);
    wr32(pkt, t + 4, new);
    if complete {
        let c = checksum::update32(rd16(pkt, t + 16), seq, new);
        wr16(pkt, t + 16, c);
    }
}

/// Instance -> client, once open: sequence number plus `delta`, window rescaled from the
/// instance's scale to the proxy's; the TCP checksum patched when `complete` (a partial checksum
/// covers the TCP header only when the device completes it). `t` is the TCP header's offset.
pub(crate) fn shift_out(pkt: &mut [u8], t: usize, st: &Proxied, complete: bool) {
    let Phase::Open { delta, server_ws } = st.phase else {
        return;
    };
    let mut c = rd16(pkt, t + 16);
    let seq = rd32(pkt, t + 4);
    let new_seq = seq.wrapping_add(delta);
    wr32(pkt, t + 4, new_seq);
    c = checksum::update32(c, seq, new_seq);
    let proxy_ws = st.proxy_ws.unwrap_or(0);
    if server_ws != proxy_ws {
        let win = rd16(pkt, t + 14);
        let real = u64::from(win) << server_ws;
        let new_win = (real >> proxy_ws).min(u64::from(u16::MAX)) as u16;
        wr16(pkt, t + 14, new_win);
        c = checksum::update16(c, win, new_win);
    }
    if complete {
        wr16(pkt, t + 16, c);
    }
}

/// Client -> instance, once open: the acknowledgment number and every SACK block edge minus
/// `delta` (they count the instance's bytes); checksum as in [`shift_out`]. `t` is the TCP
/// header's offset; the header is checked already.
pub(crate) fn shift_in(pkt: &mut [u8], t: usize, st: &Proxied, complete: bool) {
    let Phase::Open { delta, .. } = st.phase else {
        return;
    };
    let Some((t, off)) = tcp_header(pkt, t) else {
        return;
    };
    if pkt[t + 13] & TCP_ACK == 0 {
        return;
    }
    let mut c = rd16(pkt, t + 16);
    let shift = |pkt: &mut [u8], at: usize, c: &mut u16| {
        let old = rd32(pkt, at);
        let new = old.wrapping_sub(delta);
        wr32(pkt, at, new);
        *c = checksum::update32(*c, old, new);
    };
    shift(pkt, t + 8, &mut c);
    let mut i = t + 20;
    let end = t + off;
    while i < end {
        match pkt[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(len) = pkt.get(i + 1).map(|l| usize::from(*l)) else {
                    break;
                };
                if len < 2 || i + len > end {
                    break;
                }
                if kind == 5 {
                    let mut e = i + 2;
                    while e + 4 <= i + len {
                        shift(pkt, e, &mut c);
                        e += 4;
                    }
                }
                i += len;
            }
        }
    }
    if complete {
        wr16(pkt, t + 16, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Tuple = (0xc633_640a, 40000, 0xcb00_7114, 443);

    #[test]
    fn a_cookie_is_good_for_its_connection_for_one_to_two_slots() {
        let k = Cookies::new(7);
        let o = SynOptions {
            mss: 1460,
            wscale: Some(7),
            sack: true,
        };
        let c = k.make(C, 1000, 100, o);
        assert_eq!(k.check(C, 1000, c, 100), Some(o));
        assert_eq!(k.check(C, 1000, c, 127), Some(o), "the next slot");
        assert_eq!(k.check(C, 1000, c, 64 * 3 + 1), None, "two slots later");
        assert_eq!(k.check(C, 1001, c, 100), None, "another ISN");
        assert_eq!(
            k.check((C.0, 40001, C.2, C.3), 1000, c, 100),
            None,
            "another port"
        );
        assert_eq!(k.check(C, 1000, c ^ 0x10, 100), None, "forged options");
        assert_eq!(
            k.check(C, 1000, c ^ 0x8000_0000, 100),
            None,
            "a flipped hash bit"
        );
        assert_eq!(Cookies::new(8).check(C, 1000, c, 100), None, "another key");
    }

    #[test]
    fn options_round_down_to_what_a_cookie_holds() {
        let k = Cookies::new(1);
        let o = SynOptions {
            mss: 1400,
            wscale: None,
            sack: false,
        };
        let got = k.check(C, 5, k.make(C, 5, 0, o), 0).unwrap();
        assert_eq!(got.mss, 1220);
        assert_eq!(got.wscale, None);
        let o = SynOptions {
            mss: 100,
            wscale: Some(14),
            sack: true,
        };
        let got = k.check(C, 5, k.make(C, 5, 0, o), 0).unwrap();
        assert_eq!((got.mss, got.wscale, got.sack), (536, Some(14), true));
    }

    #[test]
    fn syn_options_are_read_and_a_broken_list_ends_the_walk() {
        let linux = [
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        assert_eq!(
            syn_options(&linux),
            SynOptions {
                mss: 1460,
                wscale: Some(7),
                sack: true
            }
        );
        assert_eq!(syn_options(&[2, 4, 5]).mss, 536, "truncated");
        assert_eq!(
            syn_options(&[3, 0, 3, 3, 7]).wscale,
            None,
            "a zero length ends it"
        );
        assert_eq!(
            syn_options(&[3, 3, 200]).wscale,
            Some(14),
            "capped (RFC 7323)"
        );
    }
}
