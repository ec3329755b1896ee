//! IPv4 CIDR blocks and addresses as they appear in topology files.
//!
//! Wraps `ipnet::Ipv4Net` so that parse errors say what was expected, and so that a block with host
//! bits set (`10.0.1.5/24`) is refused with the block the user probably meant, the way cloud APIs do.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer};

/// An IPv4 CIDR block whose host bits are zero.
///
/// In JSON (and its OpenAPI schema) a string like `"10.0.0.0/16"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, utoipa::ToSchema)]
#[schema(
    value_type = String,
    description = "An IPv4 CIDR block with its host bits zero, like \"10.0.0.0/16\"",
    example = "10.0.1.0/24"
)]
pub struct Cidr(Ipv4Net);

impl Cidr {
    /// Builds a block; `None` when the prefix is longer than 32 or host bits are set.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        let net = Ipv4Net::new(addr, prefix_len).ok()?;
        (net.network() == addr).then_some(Cidr(net))
    }

    pub fn net(self) -> Ipv4Net {
        self.0
    }

    pub fn network(self) -> Ipv4Addr {
        self.0.network()
    }

    pub fn broadcast(self) -> Ipv4Addr {
        self.0.broadcast()
    }

    pub fn prefix_len(self) -> u8 {
        self.0.prefix_len()
    }

    pub fn contains(self, addr: Ipv4Addr) -> bool {
        self.0.contains(&addr)
    }

    /// True when every address of `other` is inside `self`.
    pub fn covers(self, other: Cidr) -> bool {
        self.0.contains(&other.0)
    }

    pub fn overlaps(self, other: Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The first usable address after the network address: the subnet gateway (`.1`).
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()).wrapping_add(1))
    }

    /// Number of addresses in the block.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a CIDR string was refused; the text is shown to users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IPv4 CIDR block; write it like \"10.0.0.0/16\"")]
    Syntax(String),
    #[error("`{given}` has host bits set; did you mean \"{meant}\"?")]
    HostBits { given: String, meant: String },
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let net: Ipv4Net = s.parse().map_err(|_| CidrError::Syntax(s.to_string()))?;
        if net.network() != net.addr() {
            return Err(CidrError::HostBits {
                given: s.to_string(),
                meant: net.trunc().to_string(),
            });
        }
        Ok(Cidr(net))
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4 address with a clear parse error.
///
/// In JSON (and its OpenAPI schema) a string like `"10.0.1.10"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, utoipa::ToSchema)]
#[schema(
    value_type = String,
    format = Ipv4,
    description = "An IPv4 address, like \"10.0.1.10\"",
    example = "10.0.1.10"
)]
pub struct Addr(pub Ipv4Addr);

impl FromStr for Addr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse()
            .map(Addr)
            .map_err(|_| format!("`{s}` is not an IPv4 address; write it like \"10.0.1.10\""))
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks_and_refuses_host_bits() {
        let c: Cidr = "10.0.1.0/24".parse().unwrap();
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 0, 1, 255));
        assert_eq!(c.size(), 256);
        assert_eq!(
            "10.0.1.5/24".parse::<Cidr>().unwrap_err().to_string(),
            "`10.0.1.5/24` has host bits set; did you mean \"10.0.1.0/24\"?"
        );
        assert!(matches!(
            "10.0.1.0".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.1.0/33".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
    }

    #[test]
    fn covers_and_overlaps() {
        let vpc: Cidr = "10.0.0.0/16".parse().unwrap();
        let sub: Cidr = "10.0.1.0/24".parse().unwrap();
        let other: Cidr = "10.1.0.0/24".parse().unwrap();
        assert!(vpc.covers(sub));
        assert!(!sub.covers(vpc));
        assert!(vpc.overlaps(sub) && sub.overlaps(vpc));
        assert!(!vpc.overlaps(other));
    }
}
