//! Internet checksums: full computation (RFC 1071) and incremental update (RFC 1624).
//!
//! The hot path rewrites addresses and ports in place and patches checksums with [`update16`] /
//! [`update32`] (and partial checksums under offload, which hold an uncomplemented sum, with
//! [`update_sum16`] / [`update_sum32`]); the tests check every update against a full
//! recomputation.

use std::net::Ipv4Addr;

/// One's-complement sum of `data` folded to 16 bits, added to `initial` (not complemented).
///
/// Adds 32-bit words into a 64-bit accumulator and folds once at the end: a 32-bit word's halves
/// are two 16-bit words and `2^16 = 1` modulo `2^16 - 1`, so the folded result is the 16-bit
/// one's-complement sum (RFC 1071 section 2, "deferred carries" and larger words) with half the
/// additions. The accumulator cannot overflow below 16 GiB of data.
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = u64::from(initial);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    match *words.remainder() {
        [a, b, c] => acc += u64::from(u16::from_be_bytes([a, b])) + u64::from(c) * 0x100,
        [a, b] => acc += u64::from(u16::from_be_bytes([a, b])),
        [a] => acc += u64::from(a) * 0x100,
        _ => {}
    }
    fold(acc)
}

#[inline]
fn fold(mut acc: u64) -> u32 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// The checksum field value for `data` (whose checksum field must be zero, or be included to
/// verify: a correct packet then yields 0).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !(sum(data, 0) as u16)
}

/// The sum of the IPv4 pseudo-header for a transport checksum.
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    let words = [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(proto),
        len,
    ];
    fold(words.iter().map(|w| u64::from(*w)).sum())
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word of the covered data changed from `old`
/// to `new`. `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!check) + u64::from(!old) + u64::from(new);
    !(fold(acc) as u16)
}

/// [`update16`] for a 32-bit field (an IPv4 address), as two words.
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let c = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// RFC 1624 on an uncomplemented sum (a partial checksum under offload, which holds the folded
/// pseudo-header sum): the new sum after one 16-bit word of the covered data changed from `old`
/// to `new`, `S' = S + ~m + m'`.
#[inline]
pub fn update_sum16(sum: u16, old: u16, new: u16) -> u16 {
    !update16(!sum, old, new)
}

/// [`update_sum16`] for a 32-bit field (an IPv4 address), as two words.
#[inline]
pub fn update_sum32(sum: u16, old: u32, new: u32) -> u16 {
    !update32(!sum, old, new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data, 0), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    /// The RFC 1071 definition: 16-bit words, an odd last byte padded with zero.
    fn sum_by_16_bit_words(data: &[u8], initial: u32) -> u32 {
        let mut acc = u64::from(initial);
        for c in data.chunks(2) {
            acc += u64::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
        }
        fold(acc)
    }

    proptest! {
        /// Summing 32-bit words gives the 16-bit one's-complement sum, for every length
        /// (remainders of 0 to 3 bytes) and initial value.
        #[test]
        fn word_sum_is_the_rfc1071_sum(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            initial in any::<u32>(),
        ) {
            prop_assert_eq!(sum(&data, initial), sum_by_16_bit_words(&data, initial));
        }

        /// RFC 1624: an incremental update equals a full recomputation, for any data and any
        /// changed aligned word.
        #[test]
        fn incremental_update_matches_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 2..128),
            word in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            if data.len() % 2 == 1 { data.push(0); }
            let i = word.index(data.len() / 2) * 2;
            let check = checksum(&data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let updated = update16(check, old, new);
            let full = checksum(&data);
            // 0x0000 and 0xffff are the same value in one's complement.
            prop_assert!(updated == full || (updated == 0xffff && full == 0) || (updated == 0 && full == 0xffff),
                "updated {updated:#06x} full {full:#06x}");
            // A checksum is correct when summing the data with it gives all ones.
            data.extend_from_slice(&updated.to_be_bytes());
            prop_assert_eq!(checksum(&data), 0);
        }

        /// The uncomplemented form: updating the partial sum of the pseudo-header equals the sum
        /// of the changed pseudo-header.
        #[test]
        fn sum_update_matches_resum(a in any::<u32>(), b in any::<u32>(), dst in any::<u32>(), len in any::<u16>()) {
            let before = pseudo_header(a.into(), dst.into(), 6, len) as u16;
            let after = pseudo_header(b.into(), dst.into(), 6, len) as u16;
            let updated = update_sum32(before, a, b);
            // 0x0000 and 0xffff are the same value in one's complement.
            prop_assert!(updated == after || (updated, after) == (0xffff, 0) || (updated, after) == (0, 0xffff));
        }

        #[test]
        fn update32_matches_recompute(a in any::<u32>(), b in any::<u32>(), rest in any::<[u8; 6]>()) {
            let mut data = a.to_be_bytes().to_vec();
            data.extend_from_slice(&rest);
            let check = checksum(&data);
            data[..4].copy_from_slice(&b.to_be_bytes());
            let updated = update32(check, a, b);
            data.extend_from_slice(&updated.to_be_bytes());
            prop_assert_eq!(checksum(&data), 0);
        }
    }
}
