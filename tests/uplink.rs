//! The public uplink (issue 7) in process: a smoltcp "function" on the public segment talks through
//! a `vpcd::uplink::Uplink` to servers on 127.0.0.1 started here. No root is needed (except for the
//! namespace test of unprivileged ICMP sockets, which says why it skips); traffic stays on
//! loopback; every wait is bounded by `LIMIT`.

mod uplink_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::tcp::{self, RecvError};
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress};
use uplink_support::*;
use vpcd::uplink::{IcmpKind, IcmpMode, Listen, UplinkConfig, UplinkDrop};

/// Longest any single wait in these tests may take.
const LIMIT: Duration = Duration::from_secs(20);

fn fin_received(s: &tcp::Socket<'_>) -> bool {
    matches!(
        s.state(),
        tcp::State::CloseWait | tcp::State::LastAck | tcp::State::TimeWait | tcp::State::Closing
    )
}

/// Waits until the uplink has no TCP flow left (both sides closed and reaped).
async fn until_no_tcp_flows(p: &mut Pump) {
    let gone = p
        .until(LIMIT, |_, u| {
            let a = u.active();
            (a.tcp_open == 0 && a.tcp_connecting == 0).then_some(())
        })
        .await;
    assert!(gone.is_some(), "flows left: {:?}", p.uplink.active());
}

#[tokio::test]
async fn tcp_download_of_8_mib_arrives_intact_and_closes_gracefully() {
    let size = 8 << 20;
    let (addr, server) = bulk_server(size, 1);
    let mut p = Pump::new(loopback_config());
    let t0 = std::time::Instant::now();
    let h = p.f.connect(addr);
    let mut sum = Fnv::default();
    let mut got = 0;
    let done = p
        .until(LIMIT, |f, _| {
            got += f.consume(h, &mut sum);
            let s = f.tcp(h);
            (fin_received(s) && !s.can_recv()).then_some(())
        })
        .await;
    let secs = t0.elapsed().as_secs_f64();
    assert!(done.is_some(), "no FIN after {got} of {size} bytes");
    let (sent, _) = server.join().expect("server thread");
    assert_eq!(got, size);
    assert_eq!(sum, sent, "the bytes differ");
    println!(
        "download: {size} bytes in {secs:.3} s = {:.1} MB/s (debug build unless --release)",
        size as f64 / secs / 1e6
    );
    p.f.tcp(h).close();
    until_no_tcp_flows(&mut p).await;
    let c = p.uplink.counters();
    assert_eq!((c.tcp_opened, c.tcp_reset), (1, 0));
    assert_eq!(c.bytes_from_host, size as u64);
}

#[tokio::test]
async fn tcp_upload_of_4_mib_arrives_intact() {
    let size = 4 << 20;
    let (addr, server) = sink_server();
    let mut p = Pump::new(loopback_config());
    let h = p.f.connect(addr);
    let mut sent = 0;
    let mut sum = Fnv::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut reply = Vec::new();
    let done = p
        .until(LIMIT, |f, _| {
            let s = f.tcp(h);
            while sent < size && s.can_send() {
                let n = (size - sent).min(buf.len());
                pattern(sent, &mut buf[..n]);
                let k = s.send_slice(&buf[..n]).unwrap_or(0);
                sum.update(&buf[..k]);
                sent += k;
                if k < n {
                    break;
                }
            }
            if sent == size && s.may_send() {
                s.close();
            }
            f.read_into(h, &mut reply);
            fin_received(f.tcp(h)).then_some(())
        })
        .await;
    assert!(done.is_some(), "no reply after sending {sent} bytes");
    let (total, server_sum) = server.join().expect("server thread");
    assert_eq!(total, size);
    assert_eq!(server_sum, sum, "the bytes differ");
    assert_eq!(String::from_utf8_lossy(&reply), size.to_string());
    until_no_tcp_flows(&mut p).await;
    assert_eq!(p.uplink.counters().bytes_to_host, size as u64);
}

#[tokio::test]
async fn a_closed_port_refuses_at_once_with_a_rst() {
    let addr = closed_port();
    let mut p = Pump::new(loopback_config());
    let t0 = std::time::Instant::now();
    let h = p.f.connect(addr);
    let outcome = p
        .until(LIMIT, |f, _| match f.tcp(h).state() {
            tcp::State::Closed => Some("refused"),
            tcp::State::Established => Some("connected"),
            _ => None,
        })
        .await;
    let took = t0.elapsed();
    assert_eq!(outcome, Some("refused"));
    assert!(took < Duration::from_millis(500), "refusal took {took:?}");
    let c = p.uplink.counters();
    assert_eq!((c.tcp_refused, c.tcp_opened), (1, 0));
    assert_eq!(p.uplink.active().tcp_connecting, 0);
}

#[tokio::test]
async fn fin_from_the_function_reaches_the_host_and_the_echo_comes_back() {
    let (addr, server) = echo_server(1);
    let mut p = Pump::new(loopback_config());
    let h = p.f.connect(addr);
    let size = 256 * 1024;
    let data: Vec<u8> = {
        let mut v = vec![0u8; size];
        pattern(7, &mut v);
        v
    };
    let mut sent = 0;
    let mut back = Vec::new();
    let done = p
        .until(LIMIT, |f, _| {
            let s = f.tcp(h);
            if s.may_send() && sent < size {
                sent += s.send_slice(&data[sent..]).unwrap_or(0);
                if sent == size {
                    // Half-close: the echo server only finishes after it saw our FIN.
                    s.close();
                }
            }
            f.read_into(h, &mut back);
            fin_received(f.tcp(h)).then_some(())
        })
        .await;
    assert!(done.is_some(), "echoed {} of {size} bytes", back.len());
    assert_eq!(back, data);
    assert_eq!(server.join().expect("server"), size);
    until_no_tcp_flows(&mut p).await;
}

#[tokio::test]
async fn fin_from_the_host_leaves_the_function_able_to_send() {
    let l = std::net::TcpListener::bind((LOOPBACK, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        s.write_all(b"greeting").expect("write");
        s.shutdown(Shutdown::Write).expect("half-close");
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("read until the function's FIN");
        got
    });
    let mut p = Pump::new(loopback_config());
    let h = p.f.connect(addr);
    let mut got = Vec::new();
    let fin = p
        .until(LIMIT, |f, _| {
            f.read_into(h, &mut got);
            fin_received(f.tcp(h)).then_some(())
        })
        .await;
    assert!(fin.is_some());
    assert_eq!(got, b"greeting");
    // The host closed its side only: the function still talks, then closes.
    let s = p.f.tcp(h);
    assert!(s.may_send(), "state {}", s.state());
    s.send_slice(b"after your FIN").expect("send");
    s.close();
    until_no_tcp_flows(&mut p).await;
    assert_eq!(server.join().expect("server"), b"after your FIN");
    assert_eq!(p.uplink.counters().tcp_reset, 0);
}

#[tokio::test]
async fn a_host_reset_reaches_the_function() {
    let l = std::net::TcpListener::bind((LOOPBACK, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut b = [0u8; 5];
        (&s).read_exact(&mut b).expect("read");
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(s);
    });
    let mut p = Pump::new(loopback_config());
    let h = p.f.connect(addr);
    let mut said = false;
    let state = p
        .until(LIMIT, |f, _| {
            let s = f.tcp(h);
            if !said && s.may_send() {
                said = s.send_slice(b"hello").is_ok();
            }
            (said && s.state() == tcp::State::Closed).then(|| s.recv(|b| (0, b.len())))
        })
        .await;
    server.join().expect("server");
    assert_eq!(
        state,
        Some(Err(RecvError::InvalidState)),
        "closed by a RST, not a FIN"
    );
    until_no_tcp_flows(&mut p).await;
    assert_eq!(p.uplink.counters().tcp_reset, 1);
}

#[tokio::test]
async fn a_function_reset_reaches_the_host() {
    let l = std::net::TcpListener::bind((LOOPBACK, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut b = [0u8; 64];
        loop {
            match s.read(&mut b) {
                Ok(0) => return ErrorKind::UnexpectedEof,
                Ok(_) => continue,
                Err(e) => return e.kind(),
            }
        }
    });
    let mut p = Pump::new(loopback_config());
    let h = p.f.connect(addr);
    let up = p
        .until(LIMIT, |f, _| {
            (f.tcp(h).state() == tcp::State::Established).then_some(())
        })
        .await;
    assert!(up.is_some());
    p.f.tcp(h).abort();
    until_no_tcp_flows(&mut p).await;
    assert_eq!(server.join().expect("server"), ErrorKind::ConnectionReset);
    assert_eq!(p.uplink.counters().tcp_reset, 1);
}

#[tokio::test]
async fn udp_requests_get_their_responses() {
    let (addr, server) = udp_echo_server();
    let mut p = Pump::new(loopback_config());
    let h = p.f.udp_socket(5353);
    let SocketAddr::V4(server_v4) = addr else {
        unreachable!()
    };
    let to = smoltcp::wire::IpEndpoint::new(IpAddress::Ipv4(*server_v4.ip()), server_v4.port());
    let mut answers = Vec::new();
    for i in 0..5u8 {
        let msg = vec![i; 100 + 200 * usize::from(i)];
        p.f.udp(h).send_slice(&msg, to).expect("send");
        let got = p
            .until(LIMIT, |f, _| {
                let mut buf = [0u8; 2048];
                f.udp(h)
                    .recv_slice(&mut buf)
                    .ok()
                    .map(|(n, meta)| (buf[..n].to_vec(), meta.endpoint))
            })
            .await;
        let (data, from) = got.unwrap_or_else(|| panic!("no response: {:?}", p.uplink.counters()));
        assert_eq!(from, to, "the response comes from the server's address");
        assert_eq!(data, msg);
        answers.push(data);
    }
    let c = p.uplink.counters();
    assert_eq!(c.udp_opened, 1, "one flow for one 4-tuple");
    assert_eq!(p.uplink.active().udp, 1);
    // Idle flows end: move the clock past the UDP idle timeout.
    p.skip(p.uplink.config().timeouts.udp_idle + Duration::from_secs(1));
    let ended = p
        .until(LIMIT, |_, u| (u.active().udp == 0).then_some(()))
        .await;
    assert!(ended.is_some());
    assert_eq!(p.uplink.counters().udp_expired, 1);
    drop(p);
    let quit = std::net::UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    quit.send_to(b"quit", addr).expect("send");
    assert_eq!(server.join().expect("server"), answers.len());
}

#[tokio::test]
async fn udp_to_a_closed_port_gets_port_unreachable() {
    let closed = std::net::UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    let SocketAddr::V4(addr) = closed.local_addr().expect("addr") else {
        unreachable!()
    };
    drop(closed);
    let mut p = Pump::new(loopback_config());
    let h = p.f.udp_socket(5354);
    let to = smoltcp::wire::IpEndpoint::new(IpAddress::Ipv4(*addr.ip()), addr.port());
    // The host learns of the refusal from the first datagram; a later send reports it.
    let mut sent = 0;
    let seen = p
        .until(LIMIT, |f, u| {
            if u.counters().udp_unreachable > 0 {
                return Some(());
            }
            if f.udp(h).send_slice(b"anyone?", to).is_ok() {
                sent += 1;
            }
            None
        })
        .await;
    assert!(seen.is_some(), "no refusal after {sent} datagrams");
    assert!(
        p.seen.icmp.contains(&(3, 3)),
        "ICMP seen by the function: {:?}",
        p.seen.icmp
    );
    assert!(p.uplink.counters().udp_unreachable >= 1);
}

#[tokio::test]
async fn host_listen_opens_a_flow_whose_source_is_the_real_client() {
    let mut cfg = loopback_config();
    cfg.listen.push(Listen {
        host: "127.0.0.1:0".parse().expect("address"),
        target: SocketAddrV4::new(FN_IP, 8080),
    });
    let mut p = Pump::new(cfg);
    let listen = p.uplink.listen_addrs()[0];
    let h = p.f.listen(8080);
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect_timeout(&listen, LIMIT).expect("connect to host_listen");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let me = s.local_addr().expect("local address");
        s.write_all(b"hello function").expect("write");
        s.shutdown(Shutdown::Write).expect("half-close");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("read");
        (me, reply)
    });
    let mut got = Vec::new();
    let mut peer = None;
    let done = p
        .until(LIMIT, |f, _| {
            f.read_into(h, &mut got);
            let s = f.tcp(h);
            if peer.is_none() {
                peer = s.remote_endpoint();
            }
            if fin_received(s) && s.may_send() {
                let text = format!("you are {}", peer.expect("a connected peer"));
                s.send_slice(text.as_bytes()).expect("send");
                s.close();
                return Some(());
            }
            None
        })
        .await;
    assert!(done.is_some());
    until_no_tcp_flows(&mut p).await;
    let (me, reply) = client.join().expect("client");
    assert_eq!(got, b"hello function");
    assert_eq!(
        reply,
        format!("you are {me}"),
        "the function saw the real client"
    );
    let c = p.uplink.counters();
    assert_eq!((c.ingress_accepted, c.ingress_refused), (1, 0));
}

#[tokio::test]
async fn host_listen_to_a_function_that_does_not_listen_resets_the_client() {
    let mut cfg = loopback_config();
    cfg.listen.push(Listen {
        host: "127.0.0.1:0".parse().expect("address"),
        target: SocketAddrV4::new(FN_IP, 8081),
    });
    let mut p = Pump::new(cfg);
    let listen = p.uplink.listen_addrs()[0];
    let client = std::thread::spawn(move || {
        // The kernel completes the host handshake before the uplink accepts, so the reset may
        // already be there when `connect` looks at the socket's error.
        let mut s = TcpStream::connect_timeout(&listen, LIMIT).map_err(|e| e.kind())?;
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(n) => Ok(n),
            Err(e) => Err(e.kind()),
        }
    });
    let refused = p
        .until(LIMIT, |_, u| {
            (u.counters().ingress_refused == 1).then_some(())
        })
        .await;
    assert!(refused.is_some());
    assert_eq!(
        client.join().expect("client"),
        Err(ErrorKind::ConnectionReset)
    );
}

#[tokio::test]
async fn host_bind_makes_the_eip_bound_address_the_source_outside() {
    let (addr, server) = bulk_server(1000, 1);
    let mut cfg = loopback_config();
    cfg.host_bind.push((FN_IP, Ipv4Addr::new(127, 0, 0, 2)));
    let mut p = Pump::new(cfg);
    let h = p.f.connect(addr);
    let mut sum = Fnv::default();
    let done = p
        .until(LIMIT, |f, _| {
            f.consume(h, &mut sum);
            fin_received(f.tcp(h)).then_some(())
        })
        .await;
    assert!(done.is_some());
    let (_, peers) = server.join().expect("server");
    assert_eq!(peers[0].ip(), Ipv4Addr::new(127, 0, 0, 2));
}

#[tokio::test]
async fn blocked_destinations_get_administratively_prohibited() {
    // The default configuration refuses the host's loopback.
    let mut p = Pump::new(UplinkConfig::new(UPLINK_IP));
    let (addr, _server) = echo_server(0);
    let h = p.f.connect(addr);
    let seen = p
        .until(LIMIT, |_, u| {
            (u.counters().drops(UplinkDrop::Blocked) > 0).then_some(())
        })
        .await;
    assert!(seen.is_some());
    assert!(p.seen.icmp.contains(&(3, 13)), "{:?}", p.seen.icmp);
    assert_ne!(p.f.tcp(h).state(), tcp::State::Established);
    assert_eq!(p.uplink.active().tcp_connecting, 0);
}

#[tokio::test]
async fn idle_tcp_flows_are_reset_on_both_sides() {
    let l = std::net::TcpListener::bind((LOOPBACK, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(n) => Ok(n),
            Err(e) => Err(e.kind()),
        }
    });
    let mut cfg = loopback_config();
    cfg.timeouts.tcp_idle = Duration::from_secs(60);
    let mut p = Pump::new(cfg);
    let h = p.f.connect(addr);
    let up = p
        .until(LIMIT, |f, _| {
            (f.tcp(h).state() == tcp::State::Established).then_some(())
        })
        .await;
    assert!(up.is_some());
    p.skip(Duration::from_secs(61));
    let closed = p
        .until(LIMIT, |f, _| {
            (f.tcp(h).state() == tcp::State::Closed).then_some(())
        })
        .await;
    assert!(closed.is_some());
    assert_eq!(
        server.join().expect("server"),
        Err(ErrorKind::ConnectionReset)
    );
    assert_eq!(p.uplink.counters().tcp_expired, 1);
    assert_eq!(p.uplink.active().tcp_open, 0);
}

/// Sends echo requests from the function to 127.0.0.1 until a reply with the same identifier,
/// sequence and payload comes back.
async fn ping_loopback(p: &mut Pump) {
    let h = p.f.icmp_socket(0x4242);
    let payload = b"vpcd uplink ping";
    let mut buf = [0u8; 64];
    let repr = Icmpv4Repr::EchoRequest {
        ident: 0x4242,
        seq_no: 7,
        data: payload,
    };
    let len = repr.buffer_len();
    repr.emit(
        &mut Icmpv4Packet::new_unchecked(&mut buf[..len]),
        &ChecksumCapabilities::default(),
    );
    p.f.icmp(h)
        .send_slice(&buf[..len], IpAddress::Ipv4(LOOPBACK))
        .expect("send");
    let reply = p
        .until(LIMIT, |f, _| {
            let mut b = [0u8; 128];
            f.icmp(h).recv_slice(&mut b).ok().map(|(n, from)| {
                let pkt = Icmpv4Packet::new_checked(&b[..n]).expect("ICMP");
                let r = Icmpv4Repr::parse(&pkt, &ChecksumCapabilities::default()).expect("valid");
                match r {
                    Icmpv4Repr::EchoReply {
                        ident,
                        seq_no,
                        data,
                    } => (from, ident, seq_no, data.to_vec()),
                    other => panic!("not an echo reply: {other:?}"),
                }
            })
        })
        .await;
    let (from, ident, seq, data) = reply.expect("an echo reply");
    assert_eq!(from, IpAddress::Ipv4(LOOPBACK));
    assert_eq!((ident, seq), (0x4242, 7));
    assert_eq!(data, payload);
    let c = p.uplink.counters();
    assert_eq!((c.echo_requests, c.echo_replies), (1, 1));
}

#[tokio::test]
async fn icmp_echo_to_loopback_comes_back_with_the_functions_identifier() {
    let mut p = Pump::new(loopback_config());
    if let IcmpKind::Unavailable(why) = p.uplink.icmp() {
        assert!(
            !(in_ci() && is_root()),
            "under CI as root an ICMP socket kind must be available: {why}"
        );
        println!("skipped: no ICMP socket kind is available here: {why}");
        return;
    }
    println!("ICMP through {:?}", p.uplink.icmp());
    ping_loopback(&mut p).await;
}

/// Unprivileged ICMP sockets, in a network namespace of this test's own (so widening
/// `ping_group_range` touches nothing else). Needs root and `ip`; says why it skips otherwise.
#[test]
fn icmp_echo_through_unprivileged_icmp_sockets() {
    let have_ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    if !is_root() || !have_ip {
        assert!(!in_ci(), "CI runs as root with `ip` installed");
        println!("skipped: needs root and `ip` to make a private network namespace");
        return;
    }
    // The namespace belongs to this thread alone and goes away with it.
    let t = std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare a netns");
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(up.success(), "ip link set lo up");
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647")
            .expect("widen ping_group_range in the private namespace");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut cfg = loopback_config();
            cfg.icmp = IcmpMode::Datagram;
            let mut p = Pump::new(cfg);
            assert_eq!(p.uplink.icmp(), &IcmpKind::Datagram);
            ping_loopback(&mut p).await;
        });
    });
    t.join().expect("the namespace thread");
}

#[tokio::test]
async fn malformed_and_unsupported_packets_are_counted() {
    let mut p = Pump::new(loopback_config());
    let now = p.now();
    p.uplink.deliver(now, &[0x45, 0, 0]);
    let mut gre = vec![0u8; 24];
    gre[0] = 0x45;
    gre[2..4].copy_from_slice(&24u16.to_be_bytes());
    gre[8] = 64;
    gre[9] = 47;
    gre[12..16].copy_from_slice(&FN_IP.octets());
    gre[16..20].copy_from_slice(&[198, 51, 100, 7]);
    let c = vpcd::dataplane::checksum::checksum(&gre[..20]);
    gre[10..12].copy_from_slice(&c.to_be_bytes());
    p.uplink.deliver(now, &gre);
    p.uplink.poll(now);
    assert!(p.uplink.take_tx(&mut [0; 2048]).is_none());
    let c = p.uplink.counters();
    assert_eq!(c.drops(UplinkDrop::Malformed), 1);
    assert_eq!(c.drops(UplinkDrop::Protocol), 1);
}

#[tokio::test]
async fn connection_setups_in_a_row_all_open_and_close() {
    let n = 50;
    let (addr, server) = bulk_server(100, n);
    let mut p = Pump::new(loopback_config());
    let t0 = std::time::Instant::now();
    for i in 0..n {
        let h = p.f.connect(addr);
        let mut sum = Fnv::default();
        let done = p
            .until(LIMIT, |f, _| {
                f.consume(h, &mut sum);
                let s = f.tcp(h);
                if fin_received(s) {
                    s.close();
                }
                matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait).then_some(())
            })
            .await;
        assert!(done.is_some(), "connection {i}");
        p.f.sockets.remove(h);
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "setup: {n} connections in {secs:.3} s = {:.0}/s",
        n as f64 / secs
    );
    until_no_tcp_flows(&mut p).await;
    server.join().expect("server");
    let c = p.uplink.counters();
    assert_eq!((c.tcp_opened, c.tcp_reset), (n as u64, 0));
}

#[tokio::test]
async fn a_connect_that_times_out_becomes_host_unreachable() {
    // A listener whose accept queue is full drops further SYNs: the host connect hangs.
    let l =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    l.bind(&SocketAddr::from((LOOPBACK, 0)).into())
        .expect("bind");
    l.listen(0).expect("listen");
    let addr = l
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("an IP address");
    let _queued = TcpStream::connect_timeout(&addr, LIMIT).expect("fills the accept queue");
    let mut cfg = loopback_config();
    cfg.timeouts.connect = Duration::from_millis(300);
    let mut p = Pump::new(cfg);
    let t0 = std::time::Instant::now();
    let _h = p.f.connect(addr);
    let answered = p
        .until(LIMIT, |_, u| {
            (u.counters().tcp_unreachable > 0).then_some(())
        })
        .await;
    assert!(answered.is_some());
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(p.seen.icmp.contains(&(3, 1)), "{:?}", p.seen.icmp);
    assert_eq!(p.uplink.active().tcp_connecting, 0);
}

#[tokio::test]
async fn syns_beyond_the_flow_limit_are_reset() {
    let (addr, _server) = echo_server(1);
    let mut cfg = loopback_config();
    cfg.limits.tcp_flows = 1;
    let mut p = Pump::new(cfg);
    let first = p.f.connect(addr);
    let up = p
        .until(LIMIT, |f, _| {
            (f.tcp(first).state() == tcp::State::Established).then_some(())
        })
        .await;
    assert!(up.is_some());
    let second = p.f.connect(addr);
    let refused = p
        .until(LIMIT, |f, _| {
            (f.tcp(second).state() == tcp::State::Closed).then_some(())
        })
        .await;
    assert!(refused.is_some());
    assert_eq!(p.uplink.counters().drops(UplinkDrop::TcpFlowLimit), 1);
    assert_eq!(p.f.tcp(first).state(), tcp::State::Established);
}

#[tokio::test]
async fn ready_sleeps_while_nothing_happens_and_wakes_for_host_bytes() {
    let l = std::net::TcpListener::bind((LOOPBACK, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        wait.recv_timeout(LIMIT).expect("the test says go");
        s.write_all(b"news").expect("write");
    });
    let mut p = Pump::new(loopback_config());
    let h = p.f.connect(addr);
    let up = p
        .until(LIMIT, |f, _| {
            (f.tcp(h).state() == tcp::State::Established).then_some(())
        })
        .await;
    assert!(up.is_some());
    p.step();
    let quiet = tokio::time::timeout(Duration::from_millis(200), p.uplink.ready()).await;
    assert!(quiet.is_err(), "ready resolved with nothing to do");
    go.send(()).expect("server waiting");
    let woke = tokio::time::timeout(LIMIT, p.uplink.ready()).await;
    assert!(woke.is_ok(), "ready missed the host's bytes");
    let mut got = Vec::new();
    let news = p
        .until(LIMIT, |f, _| {
            f.read_into(h, &mut got);
            (got.len() == 4).then_some(())
        })
        .await;
    assert!(news.is_some());
    assert_eq!(got, b"news");
    server.join().expect("server");
}

/// A UDP server that answers each datagram with the sender's port (big-endian) until `quit`
/// or 5 s idle; returns the ports it saw.
fn port_echo_server() -> (SocketAddrV4, std::thread::JoinHandle<Vec<u16>>) {
    let s = std::net::UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    let SocketAddr::V4(addr) = s.local_addr().expect("address") else {
        unreachable!()
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut seen = Vec::new();
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            if &buf[..n] == b"quit" {
                break;
            }
            seen.push(peer.port());
            let _ = s.send_to(&peer.port().to_be_bytes(), peer);
        }
        seen
    });
    (addr, t)
}

/// Sends `msg` from the function's socket `h` to `to` and waits for the answer (the port the
/// server saw).
async fn ask_port(p: &mut Pump, h: smoltcp::iface::SocketHandle, to: SocketAddrV4) -> u16 {
    let to = smoltcp::wire::IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port());
    p.f.udp(h).send_slice(b"which port?", to).expect("send");
    let got = p
        .until(LIMIT, |f, _| {
            let mut buf = [0u8; 16];
            f.udp(h)
                .recv_slice(&mut buf)
                .ok()
                .filter(|(n, _)| *n == 2)
                .map(|_| u16::from_be_bytes([buf[0], buf[1]]))
        })
        .await;
    got.unwrap_or_else(|| panic!("no answer: {:?}", p.uplink.counters()))
}

#[tokio::test]
async fn issue13_mapped_port_taken_on_the_host_the_uplink_reports_the_hosts_port_and_keeps_it() {
    let (server, answers) = port_echo_server();
    // Something on the host holds the port the mapping has (every address, like the uplink's
    // socket binds without host_bind).
    let holder = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
    let mapped = holder.local_addr().expect("address").port();
    let mut p = Pump::new(loopback_config());
    let h = p.f.udp_socket(mapped);
    let host_port = ask_port(&mut p, h, server).await;
    assert_ne!(host_port, mapped, "the host gave another port");
    let public = SocketAddrV4::new(FN_IP, mapped);
    let m = p
        .uplink
        .take_port_move()
        .expect("the uplink reports the port the host gave");
    assert_eq!((m.public, m.port), (public, host_port));
    assert_eq!(p.uplink.take_port_move(), None, "once per mapping");
    // Until the NAT takes it, the mapping keeps its key; a refused move changes nothing.
    p.uplink.port_moved(m, false);
    assert_eq!(ask_port(&mut p, h, server).await, host_port);
    assert_eq!(
        p.uplink.host_socket(17, public, server),
        Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, host_port)))
    );
    // Taken: what the NAT now sends from the new port leaves from the same host socket (one
    // port per mapping outside), and the answers come back to the new port.
    p.uplink.port_moved(m, true);
    let moved = SocketAddrV4::new(FN_IP, host_port);
    assert_eq!(p.uplink.host_socket(17, public, server), None);
    assert_eq!(
        p.uplink.host_socket(17, moved, server),
        Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, host_port)))
    );
    let h2 = p.f.udp_socket(host_port);
    assert_eq!(ask_port(&mut p, h2, server).await, host_port);
    let c = p.uplink.counters();
    assert_eq!(c.udp_opened, 1, "one flow, known by its new port");
    assert_eq!(p.uplink.active().udp, 1);
    assert_eq!(p.uplink.take_port_move(), None);
    drop(p);
    drop(holder);
    let quit = std::net::UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    quit.send_to(b"quit", server).expect("send");
    assert_eq!(
        answers.join().expect("server"),
        vec![host_port; 3],
        "the outside saw one port"
    );
}
