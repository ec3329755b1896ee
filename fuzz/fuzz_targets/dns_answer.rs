//! Any bytes sent to a VPC resolver yield a response that parses, fits its transport and carries
//! the query's id, or a counted drop: never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vpcd::dns::answer::MAX_UDP_PAYLOAD;
use vpcd::dns::{Transport, View, answer};

/// A VPC with instances, a private zone holding every record type and a name with many
/// records (a truncated UDP answer), and a public host name.
const TOPOLOGY: &str = r#"
[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"
subnet = [{ name = "app", cidr = "10.0.1.0/24" }]
instance = [{ name = "web", subnet = "app" }, { name = "db", subnet = "app" }]

[[zone]]
name = "corp.example"
vpcs = ["tenant-a"]
record = [
    { name = "db", type = "A", value = "10.0.1.30" },
    { name = "db", type = "AAAA", value = "2001:db8::30" },
    { name = "www", type = "CNAME", value = "db.corp.example" },
    { name = "@", type = "TXT", value = "v=spf1 -all" },
    { name = "@", type = "MX", value = "10 mail.corp.example" },
    { name = "_pg._tcp", type = "SRV", value = "1 1 5432 db.corp.example" },
    { name = "many", type = "A", value = "10.0.2.1" }, { name = "many", type = "A", value = "10.0.2.2" },
    { name = "many", type = "A", value = "10.0.2.3" }, { name = "many", type = "A", value = "10.0.2.4" },
    { name = "many", type = "A", value = "10.0.2.5" }, { name = "many", type = "A", value = "10.0.2.6" },
    { name = "many", type = "A", value = "10.0.2.7" }, { name = "many", type = "A", value = "10.0.2.8" },
    { name = "many", type = "A", value = "10.0.2.9" }, { name = "many", type = "A", value = "10.0.2.10" },
    { name = "many", type = "A", value = "10.0.2.11" }, { name = "many", type = "A", value = "10.0.2.12" },
    { name = "many", type = "A", value = "10.0.2.13" }, { name = "many", type = "A", value = "10.0.2.14" },
    { name = "many", type = "A", value = "10.0.2.15" }, { name = "many", type = "A", value = "10.0.2.16" },
    { name = "many", type = "A", value = "10.0.2.17" }, { name = "many", type = "A", value = "10.0.2.18" },
    { name = "many", type = "A", value = "10.0.2.19" }, { name = "many", type = "A", value = "10.0.2.20" },
    { name = "many", type = "A", value = "10.0.2.21" }, { name = "many", type = "A", value = "10.0.2.22" },
    { name = "many", type = "A", value = "10.0.2.23" }, { name = "many", type = "A", value = "10.0.2.24" },
    { name = "many", type = "A", value = "10.0.2.25" }, { name = "many", type = "A", value = "10.0.2.26" },
    { name = "many", type = "A", value = "10.0.2.27" }, { name = "many", type = "A", value = "10.0.2.28" },
    { name = "many", type = "A", value = "10.0.2.29" }, { name = "many", type = "A", value = "10.0.2.30" },
    { name = "many", type = "A", value = "10.0.2.31" }, { name = "many", type = "A", value = "10.0.2.32" },
]

[internet]
host = [{ name = "api", ip = "198.51.100.10", dns_names = ["api.example.com"] }]
"#;

fn view() -> &'static View {
    static VIEW: OnceLock<View> = OnceLock::new();
    VIEW.get_or_init(|| {
        let plan = vpcd::topology::parse("fuzz.toml", TOPOLOGY).expect("the fuzz topology is valid");
        vpcd::topology::compile::dns::views(&plan).remove(0)
    })
}

fuzz_target!(|query: &[u8]| {
    for (transport, limit) in [
        (Transport::Udp, usize::from(MAX_UDP_PAYLOAD)),
        (Transport::Tcp, usize::from(u16::MAX)),
    ] {
        if let Ok(a) = answer(view(), query, transport) {
            assert!(a.wire.len() <= limit, "{} bytes over {transport:?}", a.wire.len());
            assert_eq!(a.wire[..2], query[..2], "the response carries the query's id");
        }
    }
});
