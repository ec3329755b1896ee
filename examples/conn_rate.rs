//! New TCP connections per second, for `scripts/bench.sh` (the "TCP conn/s" column).
//!
//! ```sh
//! conn_rate serve ADDR:PORT                      # accepts and closes, until killed
//! conn_rate connect ADDR:PORT [SECONDS] [THREADS]  # prints connections per second
//! ```
//!
//! `serve` accepts on a few threads and closes each connection at once (the server closes
//! first, so the client's side ends without TIME_WAIT and its ports are not used up).
//! `connect` runs THREADS (default 4) loops for SECONDS (default 2): each opens a connection
//! (1 s timeout), waits for the server's close, closes, and counts it; a failed attempt is not
//! counted. At most 1,000,000 connections in all. What the Python loop it replaces measured was
//! its own speed (about 600 per second for every peer).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The most connections one `connect` run makes, whatever its length.
const MAX_CONNECTIONS: u64 = 1_000_000;
const SERVE_THREADS: usize = 4;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") if args.len() == 2 => address(&args[1]).and_then(serve),
        Some("connect") if (2..=4).contains(&args.len()) => connect_args(&args[1..]),
        _ => Err(
            "usage: conn_rate serve ADDR:PORT | conn_rate connect ADDR:PORT [SECONDS] [THREADS]"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conn_rate: {e}");
            ExitCode::from(2)
        }
    }
}

fn address(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|e| format!("{s:?} is not an address with a port: {e}"))
}

fn number<T: std::str::FromStr>(s: Option<&String>, default: T, what: &str) -> Result<T, String> {
    match s {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| format!("{what} {s:?} is not a positive number")),
    }
}

fn connect_args(args: &[String]) -> Result<(), String> {
    let addr = address(&args[0])?;
    let seconds: f64 = number(args.get(1), 2.0, "SECONDS")?;
    let threads: usize = number(args.get(2), 4, "THREADS")?;
    if !(seconds > 0.0 && seconds <= 600.0 && (1..=256).contains(&threads)) {
        return Err("SECONDS must be in (0, 600] and THREADS in 1..=256".into());
    }
    let made = connect(addr, Duration::from_secs_f64(seconds), threads);
    println!("{:.0}", made as f64 / seconds);
    Ok(())
}

fn serve(addr: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let listener = Arc::new(listener);
    let workers: Vec<_> = (0..SERVE_THREADS)
        .map(|_| {
            let listener = listener.clone();
            std::thread::spawn(move || {
                loop {
                    // Dropped at once: the server closes first.
                    if let Err(e) = listener.accept()
                        && e.kind() != std::io::ErrorKind::Interrupted
                        && e.kind() != std::io::ErrorKind::ConnectionAborted
                    {
                        eprintln!("conn_rate: accept: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// Connections made by `threads` loops in `length`.
fn connect(addr: SocketAddr, length: Duration, threads: usize) -> u64 {
    let made = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + length;
    let loops: Vec<_> = (0..threads)
        .map(|_| {
            let made = made.clone();
            std::thread::spawn(move || {
                let mut byte = [0u8; 1];
                while Instant::now() < end && made.load(Ordering::Relaxed) < MAX_CONNECTIONS {
                    let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    else {
                        continue;
                    };
                    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                    // The server's close (end of stream) completes the exchange.
                    if matches!(c.read(&mut byte), Ok(0)) {
                        made.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for l in loops {
        let _ = l.join();
    }
    made.load(Ordering::Relaxed)
}
