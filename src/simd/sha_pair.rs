//! SHA-256 and SHA-1 of the same blocks in one pass on the x86 SHA
//! extensions. Each algorithm's rounds are those of the RustCrypto `sha2`
//! and `sha1` crates' SHA-NI backends (MIT OR Apache-2.0); what is new is
//! that both run in the same loop over the same loaded words, so the CPU
//! runs one's rounds while the other's wait on their latency.

use core::arch::x86_64::*;

/// SHA-256's round constants (FIPS 180-4, 4.2.2).
const K32: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Four SHA-256 rounds, `r` the group (rounds 4r to 4r + 3), on message
/// words `w` (big-endian, first word in the low lane).
macro_rules! sha256_rounds4 {
    ($r:expr, $abef:ident, $cdgh:ident, $w:expr) => {{
        let k = _mm_set_epi32(
            K32[4 * $r + 3] as i32,
            K32[4 * $r + 2] as i32,
            K32[4 * $r + 1] as i32,
            K32[4 * $r] as i32,
        );
        let wk = _mm_add_epi32($w, k);
        $cdgh = _mm_sha256rnds2_epu32($cdgh, $abef, wk);
        $abef = _mm_sha256rnds2_epu32($abef, $cdgh, _mm_shuffle_epi32(wk, 0x0E));
    }};
}

/// SHA-256's next four message words from the last sixteen.
macro_rules! sha256_schedule {
    ($w0:expr, $w1:expr, $w2:expr, $w3:expr) => {
        _mm_sha256msg2_epu32(
            _mm_add_epi32(_mm_sha256msg1_epu32($w0, $w1), _mm_alignr_epi8($w3, $w2, 4)),
            $w3,
        )
    };
}

/// Four SHA-1 rounds of function `$f` (0 to 3), with `$h1` holding E.
macro_rules! sha1_rounds4 {
    ($h0:ident, $h1:ident, $w:expr, $f:expr) => {
        _mm_sha1rnds4_epu32::<$f>($h0, _mm_sha1nexte_epu32($h1, $w))
    };
}

/// SHA-1's next four message words from the last sixteen.
macro_rules! sha1_schedule {
    ($w0:expr, $w1:expr, $w2:expr, $w3:expr) => {
        _mm_sha1msg2_epu32(_mm_xor_si128(_mm_sha1msg1_epu32($w0, $w1), $w2), $w3)
    };
}

/// The first four of `words`.
#[inline]
#[target_feature(enable = "sse2")]
fn load(words: &[u32]) -> __m128i {
    assert!(words.len() >= 4);
    // SAFETY: four words, in bounds as just asserted; unaligned load.
    unsafe { _mm_loadu_si128(words.as_ptr().cast()) }
}

/// Sets the first four of `words`.
#[inline]
#[target_feature(enable = "sse2")]
fn store(words: &mut [u32], v: __m128i) {
    assert!(words.len() >= 4);
    // SAFETY: four words, in bounds as just asserted; unaligned store.
    unsafe { _mm_storeu_si128(words.as_mut_ptr().cast(), v) }
}

/// Compresses `blocks` into both states, as `sha2::block_api::compress256`
/// and `sha1::block_api::compress` each would.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub(super) fn compress(sha256: &mut [u32; 8], sha1: &mut [u32; 5], blocks: &[[u8; 64]]) {
    // Bytes to big-endian words, first word in the low lane (SHA-256's
    // order); SHA-1's code wants them the other way round.
    let be = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);

    let dcba = load(&sha256[..4]);
    let hgfe = load(&sha256[4..]);
    let cdab = _mm_shuffle_epi32(dcba, 0xB1);
    let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    let mut abef = _mm_alignr_epi8(cdab, efgh, 8);
    let mut cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);

    let mut abcd = _mm_shuffle_epi32(load(&sha1[..4]), 0x1B);
    let mut e = _mm_set_epi32(sha1[4] as i32, 0, 0, 0);

    for block in blocks {
        let words: [__m128i; 4] = std::array::from_fn(|i| {
            let bytes = &block[16 * i..16 * i + 16];
            // SAFETY: sixteen bytes of the block; unaligned load.
            _mm_shuffle_epi8(unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }, be)
        });
        let (abef0, cdgh0) = (abef, cdgh);
        let mut x = words;
        let [mut w0, mut w1, mut w2, mut w3] = words.map(|w| _mm_shuffle_epi32(w, 0x1B));
        let mut w4;

        // SHA-1 rounds 0-15 beside SHA-256 rounds 0-15.
        let mut h0 = abcd;
        let mut h1 = _mm_sha1rnds4_epu32::<0>(h0, _mm_add_epi32(e, w0));
        sha256_rounds4!(0, abef, cdgh, x[0]);
        h0 = sha1_rounds4!(h1, h0, w1, 0);
        sha256_rounds4!(1, abef, cdgh, x[1]);
        h1 = sha1_rounds4!(h0, h1, w2, 0);
        sha256_rounds4!(2, abef, cdgh, x[2]);
        h0 = sha1_rounds4!(h1, h0, w3, 0);
        sha256_rounds4!(3, abef, cdgh, x[3]);

        // Then four SHA-1 rounds beside four SHA-256 rounds while SHA-256
        // has rounds left (to 64), and SHA-1's last 16 alone.
        macro_rules! sha1 {
            ($h0:ident, $h1:ident, $v0:ident, $v1:ident, $v2:ident, $v3:ident, $v4:ident, $f:expr) => {
                $v4 = sha1_schedule!($v0, $v1, $v2, $v3);
                $h1 = sha1_rounds4!($h0, $h1, $v4, $f);
            };
        }
        macro_rules! sha256 {
            ($r:expr) => {
                let i = $r % 4;
                x[i] = sha256_schedule!(x[i], x[(i + 1) % 4], x[(i + 2) % 4], x[(i + 3) % 4]);
                sha256_rounds4!($r, abef, cdgh, x[i]);
            };
        }
        sha1!(h0, h1, w0, w1, w2, w3, w4, 0);
        sha256!(4);
        sha1!(h1, h0, w1, w2, w3, w4, w0, 1);
        sha256!(5);
        sha1!(h0, h1, w2, w3, w4, w0, w1, 1);
        sha256!(6);
        sha1!(h1, h0, w3, w4, w0, w1, w2, 1);
        sha256!(7);
        sha1!(h0, h1, w4, w0, w1, w2, w3, 1);
        sha256!(8);
        sha1!(h1, h0, w0, w1, w2, w3, w4, 1);
        sha256!(9);
        sha1!(h0, h1, w1, w2, w3, w4, w0, 2);
        sha256!(10);
        sha1!(h1, h0, w2, w3, w4, w0, w1, 2);
        sha256!(11);
        sha1!(h0, h1, w3, w4, w0, w1, w2, 2);
        sha256!(12);
        sha1!(h1, h0, w4, w0, w1, w2, w3, 2);
        sha256!(13);
        sha1!(h0, h1, w0, w1, w2, w3, w4, 2);
        sha256!(14);
        sha1!(h1, h0, w1, w2, w3, w4, w0, 3);
        sha256!(15);
        sha1!(h0, h1, w2, w3, w4, w0, w1, 3);
        sha1!(h1, h0, w3, w4, w0, w1, w2, 3);
        sha1!(h0, h1, w4, w0, w1, w2, w3, 3);
        sha1!(h1, h0, w0, w1, w2, w3, w4, 3);

        abcd = _mm_add_epi32(abcd, h0);
        e = _mm_sha1nexte_epu32(h1, e);
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }

    let feba = _mm_shuffle_epi32(abef, 0x1B);
    let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    store(&mut sha256[..4], _mm_blend_epi16(feba, dchg, 0xF0));
    store(&mut sha256[4..], _mm_alignr_epi8(dchg, feba, 8));
    store(&mut sha1[..4], _mm_shuffle_epi32(abcd, 0x1B));
    sha1[4] = _mm_extract_epi32::<3>(e) as u32;
}
