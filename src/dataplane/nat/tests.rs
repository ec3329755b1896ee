//! NAT suite (filled below).
