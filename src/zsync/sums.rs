//! The two checksums of a zsync block: the rolling sum (rsync's weak
//! checksum) and MD4. MD4 is taken of sixteen blocks at once: a control
//! file needs one MD4 per block, and independent streams keep the vector
//! units busy where one MD4 waits on each of its 48 dependent steps. With
//! AVX-512 the sixteen go in the lanes of one register, rolling sums
//! included (`simd::md4_rsum_x16`); without it, eight at a time in two SSE2
//! registers (`wide`, the x86-64 baseline), and the rolling sums one by one.

use wide::u32x4;

pub use crate::simd::Md4;

/// Blocks hashed at once.
pub const LANES: usize = 16;

/// Blocks hashed at once in SSE2 registers.
const SSE2_LANES: usize = 8;

/// The rolling sum of a block, as zsync defines it: `a` is the sum of the
/// bytes, `b` the sum of each byte times its distance from the block's
/// end, both modulo 2^16. Packed as `a << 16 | b`.
pub fn rsum(block: &[u8]) -> u32 {
    // Modulo 2^16 throughout, in 16-bit lanes the compiler makes wide.
    let n = block.len() as u16;
    let (mut a, mut b) = (0u16, 0u16);
    for (i, &c) in block.iter().enumerate() {
        a = a.wrapping_add(u16::from(c));
        b = b.wrapping_add(n.wrapping_sub(i as u16).wrapping_mul(u16::from(c)));
    }
    u32::from(a) << 16 | u32::from(b)
}

/// The rolling sum of the block one byte further on: `out` leaves it,
/// `into` enters, in a block of `1 << shift` bytes.
#[inline]
pub fn roll(sum: u32, out: u8, into: u8, shift: u32) -> u32 {
    let a = ((sum >> 16) as u16)
        .wrapping_sub(u16::from(out))
        .wrapping_add(u16::from(into));
    let b = (sum as u16)
        .wrapping_sub(u16::from(out).checked_shl(shift).unwrap_or(0))
        .wrapping_add(a);
    u32::from(a) << 16 | u32::from(b)
}

/// The MD4 of each of `blocks`, all of one length, a multiple of 64 bytes
/// (a zsync block size), in the first `blocks.len()` lanes; what the
/// lanes past them hold is to be dropped.
pub fn md4(blocks: &[&[u8]]) -> [Md4; LANES] {
    let len = check(blocks);
    if let Some((md4, _)) = crate::simd::md4_rsum_x16(&lanes(blocks), len) {
        return md4;
    }
    md4_sse2(blocks)
}

/// The MD4 and rolling sum of each of `blocks`, as [`md4`] and [`rsum`].
pub fn md4_rsum(blocks: &[&[u8]]) -> ([Md4; LANES], [u32; LANES]) {
    let len = check(blocks);
    if let Some(sums) = crate::simd::md4_rsum_x16(&lanes(blocks), len) {
        return sums;
    }
    let rsums = std::array::from_fn(|l| blocks.get(l).map_or(0, |b| rsum(b)));
    (md4_sse2(blocks), rsums)
}

/// The blocks' length, once each is checked to have it.
fn check(blocks: &[&[u8]]) -> usize {
    assert!(!blocks.is_empty() && blocks.len() <= LANES);
    let len = blocks[0].len();
    assert!(len.is_multiple_of(64) && blocks.iter().all(|b| b.len() == len));
    len
}

/// `blocks`, the first again in the lanes past them.
fn lanes<'a>(blocks: &[&'a [u8]]) -> [&'a [u8]; LANES] {
    std::array::from_fn(|l| blocks.get(l).copied().unwrap_or(blocks[0]))
}

/// [`md4`] in SSE2 registers, eight blocks at a time.
fn md4_sse2(blocks: &[&[u8]]) -> [Md4; LANES] {
    let mut out = [[0u8; 16]; LANES];
    for (group, out) in blocks.chunks(SSE2_LANES).zip(out.chunks_mut(SSE2_LANES)) {
        let d = md4_x8(group);
        out.copy_from_slice(&d[..out.len()]);
    }
    out
}

/// Eight 32-bit words, one per lane.
#[derive(Clone, Copy)]
struct V(u32x4, u32x4);

impl V {
    fn splat(x: u32) -> V {
        V(u32x4::splat(x), u32x4::splat(x))
    }
}

#[inline(always)]
fn f(x: V, y: V, z: V) -> V {
    V((x.0 & y.0) | (z.0 & !x.0), (x.1 & y.1) | (z.1 & !x.1))
}

#[inline(always)]
fn g(x: V, y: V, z: V) -> V {
    V(
        (x.0 & y.0) | ((x.0 | y.0) & z.0),
        (x.1 & y.1) | ((x.1 | y.1) & z.1),
    )
}

#[inline(always)]
fn h(x: V, y: V, z: V) -> V {
    V(x.0 ^ y.0 ^ z.0, x.1 ^ y.1 ^ z.1)
}

#[inline(always)]
fn step(a: &mut V, fv: V, x: V, k: u32, s: u32) {
    let k = u32x4::splat(k);
    let t0 = a.0 + fv.0 + x.0 + k;
    let t1 = a.1 + fv.1 + x.1 + k;
    a.0 = (t0 << s) | (t0 >> (32 - s));
    a.1 = (t1 << s) | (t1 >> (32 - s));
}

/// MD4's compression function (RFC 1320) on one 64-byte chunk per lane.
#[inline(always)]
fn compress(state: &mut [V; 4], x: &[V; 16]) {
    let [mut a, mut b, mut c, mut d] = *state;
    for i in [0, 4, 8, 12] {
        step(&mut a, f(b, c, d), x[i], 0, 3);
        step(&mut d, f(a, b, c), x[i + 1], 0, 7);
        step(&mut c, f(d, a, b), x[i + 2], 0, 11);
        step(&mut b, f(c, d, a), x[i + 3], 0, 19);
    }
    for i in [0, 1, 2, 3] {
        step(&mut a, g(b, c, d), x[i], 0x5a82_7999, 3);
        step(&mut d, g(a, b, c), x[i + 4], 0x5a82_7999, 5);
        step(&mut c, g(d, a, b), x[i + 8], 0x5a82_7999, 9);
        step(&mut b, g(c, d, a), x[i + 12], 0x5a82_7999, 13);
    }
    for i in [0, 2, 1, 3] {
        step(&mut a, h(b, c, d), x[i], 0x6ed9_eba1, 3);
        step(&mut d, h(a, b, c), x[i + 8], 0x6ed9_eba1, 9);
        step(&mut c, h(d, a, b), x[i + 4], 0x6ed9_eba1, 11);
        step(&mut b, h(c, d, a), x[i + 12], 0x6ed9_eba1, 15);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d]) {
        s.0 += v.0;
        s.1 += v.1;
    }
}

/// The MD4 of each of up to eight `blocks` ([`check`]ed); lanes past them
/// hash the first block again.
fn md4_x8(blocks: &[&[u8]]) -> [Md4; SSE2_LANES] {
    let len = blocks[0].len();
    let lane = |l: usize| blocks.get(l).unwrap_or(&blocks[0]);
    let mut state = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476].map(V::splat);
    let mut x = [V::splat(0); 16];
    for at in (0..len).step_by(64) {
        for half in 0..2 {
            for q in 0..4 {
                // Four words of four lanes, turned into four lanes of each word.
                let rows: [u32x4; 4] = std::array::from_fn(|l| {
                    let bytes = &lane(half * 4 + l)[at + 16 * q..at + 16 * q + 16];
                    u32x4::new(std::array::from_fn(|k| {
                        u32::from_le_bytes(bytes[4 * k..4 * k + 4].try_into().expect("4 bytes"))
                    }))
                });
                for (k, column) in u32x4::transpose(rows).into_iter().enumerate() {
                    let word = &mut x[4 * q + k];
                    match half {
                        0 => word.0 = column,
                        _ => word.1 = column,
                    }
                }
            }
        }
        compress(&mut state, &x);
    }
    // The padding of a message of `len` bytes, a multiple of 64: one chunk.
    let mut pad = [V::splat(0); 16];
    pad[0] = V::splat(0x80);
    let bits = (len as u64) * 8;
    pad[14] = V::splat(bits as u32);
    pad[15] = V::splat((bits >> 32) as u32);
    compress(&mut state, &pad);
    let mut out = [[0u8; 16]; SSE2_LANES];
    for (w, word) in state.iter().enumerate() {
        let (low, high) = (word.0.to_array(), word.1.to_array());
        for l in 0..4 {
            out[l][4 * w..4 * w + 4].copy_from_slice(&low[l].to_le_bytes());
            out[l + 4][4 * w..4 * w + 4].copy_from_slice(&high[l].to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::noise;

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md4_of_each_lane_is_the_reference_digest() {
        // From `openssl dgst -md4`.
        let zeros = vec![0u8; 2048];
        let pattern: Vec<u8> = (0..4096).map(|i| (i % 251) as u8).collect();
        let a64 = [b'a'; 64];
        for n in 1..=LANES {
            let blocks: Vec<&[u8]> = (0..n).map(|_| &zeros[..]).collect();
            let d = md4(&blocks);
            for lane in d.iter().take(n) {
                assert_eq!(hex(lane), "e7b9e6b0e2454e20d7380922c7a0b221");
            }
        }
        let mut mixed: Vec<&[u8]> = vec![&pattern[..2048]; 3];
        mixed.push(&zeros);
        let d = md4(&mixed);
        assert_eq!(hex(&d[3]), "e7b9e6b0e2454e20d7380922c7a0b221");
        assert_eq!(
            hex(&md4(&[&pattern])[0]),
            "c5abe41d160e530fe4172a1697325c38"
        );
        assert_eq!(hex(&md4(&[&a64])[0]), "52f5076fabd22680234a3fa9f9dc5732");
    }

    #[test]
    fn sse2_lanes_give_the_reference_digests_too() {
        // On a CPU with AVX-512, `md4` above took the other path.
        let zeros = vec![0u8; 2048];
        let a64 = [b'a'; 64];
        assert_eq!(
            hex(&md4_sse2(&[&zeros[..]; LANES])[LANES - 1]),
            "e7b9e6b0e2454e20d7380922c7a0b221"
        );
        assert_eq!(
            hex(&md4_sse2(&[&a64])[0]),
            "52f5076fabd22680234a3fa9f9dc5732"
        );
    }

    #[test]
    fn every_path_gives_each_lane_the_same_sums() {
        // Whichever path this CPU takes, against the SSE2 lanes and the
        // one-block rolling sum, for every count of blocks and each size
        // a control file uses (and the smallest), bytes of 0 and 255 too.
        let data = noise(LANES * 4096, 7);
        let extremes: Vec<u8> = (0..4096)
            .map(|i| if i % 3 == 0 { 255 } else { 0 })
            .collect();
        for size in [64, 2048, 4096] {
            for n in 1..=LANES {
                let mut blocks: Vec<&[u8]> = data.chunks(size).take(n).collect();
                blocks[n / 2] = &extremes[..size];
                let (md4s, rsums) = md4_rsum(&blocks);
                assert_eq!(md4(&blocks)[..n], md4s[..n]);
                assert_eq!(md4_sse2(&blocks)[..n], md4s[..n], "size {size}, {n} blocks");
                for (b, r) in blocks.iter().zip(rsums) {
                    assert_eq!(rsum(b), r, "size {size}, {n} blocks");
                }
            }
        }
    }

    #[test]
    fn the_rolling_sum_rolls_to_the_sum_of_the_next_block() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 256) as u8).collect();
        for size in [64usize, 2048, 4096] {
            let shift = size.trailing_zeros();
            let mut sum = rsum(&data[..size]);
            for x in 0..data.len() - size {
                sum = roll(sum, data[x], data[x + size], shift);
                assert_eq!(sum, rsum(&data[x + 1..x + 1 + size]), "size {size} at {x}");
            }
        }
    }
}
