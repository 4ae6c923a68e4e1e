//! The crate's only `unsafe`: kernels for instructions that the baseline
//! x86-64 target lacks, run after the CPU says it has them. Each is the
//! fast path of a safe function elsewhere that has a portable path too,
//! and the tests check both give the same bytes.
//!
//! - [`sha256_sha1`]: the SHA-256 and the SHA-1 of the same bytes in one
//!   pass, interleaved on the SHA extensions. A zsync control file needs
//!   the whole image's SHA-1 beside the SHA-256 every image gets; each alone
//!   waits on its own chain of dependent rounds, so one pass over both keeps
//!   the SHA unit busy where two passes leave it idle half the time
//!   (`hash::Digests`).
//! - [`md4_rsum_x16`]: the MD4 and rolling sum of sixteen blocks at once,
//!   one block in each 32-bit lane of AVX-512 registers (`zsync::sums`).
//!
//! Every `unsafe` block is a load or store through a pointer to memory the
//! borrow it came from covers, or a call to a `#[target_feature]` function
//! right after `is_x86_feature_detected!` said yes for each feature it
//! enables.

#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod md4x16;
#[cfg(target_arch = "x86_64")]
mod sha_pair;

/// An MD4 digest.
pub type Md4 = [u8; 16];

/// Runs the SHA-256 compression function over `blocks` on `sha256`, and
/// SHA-1's on `sha1`, in one pass, if this CPU has the SHA extensions
/// (SHA-NI); returns whether it did. The states are the algorithms' own
/// (`sha2::block_api::compress256`, `sha1::block_api::compress`).
pub fn sha256_sha1(sha256: &mut [u32; 8], sha1: &mut [u32; 5], blocks: &[[u8; 64]]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sha")
        && std::is_x86_feature_detected!("sse4.1")
        && std::is_x86_feature_detected!("ssse3")
    {
        // SAFETY: the kernel enables `sha`, `sse4.1` and `ssse3` (`sse2`
        // is the target's baseline), each detected just above.
        unsafe { sha_pair::compress(sha256, sha1, blocks) };
        return true;
    }
    let _ = (sha256, sha1, blocks);
    false
}

/// The MD4 (RFC 1320) and the zsync rolling sum (`a << 16 | b`) of each of
/// sixteen blocks of `len` bytes each, a multiple of 64, if this CPU has
/// AVX-512 (F and BW); `None` if not. Panics if a block is shorter than
/// `len` or `len` is not a multiple of 64.
pub fn md4_rsum_x16(blocks: &[&[u8]; 16], len: usize) -> Option<([Md4; 16], [u32; 16])> {
    assert!(len.is_multiple_of(64) && blocks.iter().all(|b| b.len() >= len));
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the kernel enables `avx512f` and `avx512bw`, both detected
        // just above.
        return Some(unsafe { md4x16::md4_rsum(blocks, len) });
    }
    None
}

/// Bytes that do not repeat, the same for the same seed (xorshift): what
/// the kernels' tests, and those of the sums built on them, hash.
#[cfg(test)]
pub(crate) fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_over_both_is_each_compression_function_alone() {
        let data = noise(64 * 37, 11);
        let (blocks, _) = data.as_chunks::<64>();
        for n in [0, 1, 2, 37] {
            let (mut a, mut b) = ([1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13]);
            let (mut want_a, mut want_b) = (a, b);
            sha2::block_api::compress256(&mut want_a, &blocks[..n]);
            sha1::block_api::compress(&mut want_b, &blocks[..n]);
            if sha256_sha1(&mut a, &mut b, &blocks[..n]) {
                assert_eq!((a, b), (want_a, want_b), "{n} blocks");
            } else {
                assert_eq!((a, b), ([1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13]));
            }
        }
    }
}
