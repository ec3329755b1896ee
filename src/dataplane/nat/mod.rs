//! NAT gateway core (stub while the pieces land).

pub mod alloc;
pub mod config;

/// Transport protocols the NAT translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Proto {
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
}

impl Proto {
    /// From the IPv4 protocol number.
    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            1 => Some(Proto::Icmp),
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }

    /// The IPv4 protocol number.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// Dense index 0..3 for per-protocol arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Proto::Icmp => 0,
            Proto::Tcp => 1,
            Proto::Udp => 2,
        }
    }
}
