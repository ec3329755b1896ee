//! Generated ICMP: echo replies from the subnet gateway and errors (time exceeded, destination
//! unreachable) from visible hops. Written in place into the caller's buffer.
