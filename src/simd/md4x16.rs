//! MD4 and the zsync rolling sum of sixteen blocks at once, one block in
//! each 32-bit lane of AVX-512 registers: MD4's boolean functions are one
//! `vpternlogd` each and its rotations one `vprold`, and each lane's rolling
//! sum is taken from the same loaded bytes on the way.

use core::arch::x86_64::*;

use super::Md4;

/// Sixteen rows of sixteen words to sixteen columns: row `l` (64 bytes of
/// block `l`) becomes lane `l` of every word.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose(r: [__m512i; 16]) -> [__m512i; 16] {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_si512(); 16];
    for i in 0..4 {
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for h in 0..2 {
        for i in 0..4 {
            t[8 * h + i] = _mm512_shuffle_i32x4::<0x88>(u[8 * h + i], u[8 * h + 4 + i]);
            t[8 * h + 4 + i] = _mm512_shuffle_i32x4::<0xdd>(u[8 * h + i], u[8 * h + 4 + i]);
        }
    }
    for i in 0..8 {
        u[i] = _mm512_shuffle_i32x4::<0x88>(t[i], t[8 + i]);
        u[8 + i] = _mm512_shuffle_i32x4::<0xdd>(t[i], t[8 + i]);
    }
    u
}

/// One MD4 step: `a = (a + f + x + k) <<< s`.
macro_rules! step {
    ($a:ident, $f:expr, $x:expr, $k:expr, $s:expr) => {
        $a = _mm512_rol_epi32::<$s>(_mm512_add_epi32(
            _mm512_add_epi32($a, $f),
            _mm512_add_epi32($x, $k),
        ));
    };
}

/// MD4's compression function (RFC 1320) on one 64-byte chunk per lane.
/// The truth tables: F = x ? y : z is 0xCA, G = majority 0xE8, H = xor 0x96.
#[inline]
#[target_feature(enable = "avx512f")]
fn compress(state: &mut [__m512i; 4], x: &[__m512i; 16]) {
    let [mut a, mut b, mut c, mut d] = *state;
    let k = _mm512_setzero_si512();
    for i in [0, 4, 8, 12] {
        step!(a, _mm512_ternarylogic_epi32::<0xCA>(b, c, d), x[i], k, 3);
        step!(
            d,
            _mm512_ternarylogic_epi32::<0xCA>(a, b, c),
            x[i + 1],
            k,
            7
        );
        step!(
            c,
            _mm512_ternarylogic_epi32::<0xCA>(d, a, b),
            x[i + 2],
            k,
            11
        );
        step!(
            b,
            _mm512_ternarylogic_epi32::<0xCA>(c, d, a),
            x[i + 3],
            k,
            19
        );
    }
    let k = _mm512_set1_epi32(0x5a82_7999);
    for i in [0, 1, 2, 3] {
        step!(a, _mm512_ternarylogic_epi32::<0xE8>(b, c, d), x[i], k, 3);
        step!(
            d,
            _mm512_ternarylogic_epi32::<0xE8>(a, b, c),
            x[i + 4],
            k,
            5
        );
        step!(
            c,
            _mm512_ternarylogic_epi32::<0xE8>(d, a, b),
            x[i + 8],
            k,
            9
        );
        step!(
            b,
            _mm512_ternarylogic_epi32::<0xE8>(c, d, a),
            x[i + 12],
            k,
            13
        );
    }
    let k = _mm512_set1_epi32(0x6ed9_eba1);
    for i in [0, 2, 1, 3] {
        step!(a, _mm512_ternarylogic_epi32::<0x96>(b, c, d), x[i], k, 3);
        step!(
            d,
            _mm512_ternarylogic_epi32::<0x96>(a, b, c),
            x[i + 8],
            k,
            9
        );
        step!(
            c,
            _mm512_ternarylogic_epi32::<0x96>(d, a, b),
            x[i + 4],
            k,
            11
        );
        step!(
            b,
            _mm512_ternarylogic_epi32::<0x96>(c, d, a),
            x[i + 12],
            k,
            15
        );
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d]) {
        *s = _mm512_add_epi32(*s, v);
    }
}

/// The MD4 and rolling sum of each of `blocks`, `len` bytes of each (a
/// multiple of 64; the caller checked both).
///
/// The rolling sum of a block of n bytes c_0 … c_{n-1} is `a = Σ c_i`,
/// `b = Σ (n - i) c_i`, modulo 2^16. Per 64-byte chunk k of n / 64 = K:
/// S_k its byte sum (`vpsadbw`) and W_k = Σ j c_{64k+j} (`vpmaddubsw` with
/// weights 0 … 63, which fit a signed byte), `b = 64 Σ (K - k) S_k - Σ W_k`,
/// and Σ (K - k) S_k is the sum over the chunks of the running sum of S.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn md4_rsum(blocks: &[&[u8]; 16], len: usize) -> ([Md4; 16], [u32; 16]) {
    let zero = _mm512_setzero_si512();
    let weights = _mm512_set_epi8(
        63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41,
        40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18,
        17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
    );
    let ones = _mm512_set1_epi16(1);
    let (mut sum, mut running, mut weighted) = ([zero; 16], [zero; 16], [zero; 16]);
    let mut state = [0x6745_2301_u32, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476]
        .map(|w| _mm512_set1_epi32(w as i32));
    for at in (0..len).step_by(64) {
        let rows: [__m512i; 16] = std::array::from_fn(|l| {
            let chunk = &blocks[l][at..at + 64];
            // SAFETY: 64 bytes of the block; unaligned load.
            unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) }
        });
        for (l, row) in rows.iter().enumerate() {
            sum[l] = _mm512_add_epi64(sum[l], _mm512_sad_epu8(*row, zero));
            running[l] = _mm512_add_epi64(running[l], sum[l]);
            let w = _mm512_madd_epi16(_mm512_maddubs_epi16(*row, weights), ones);
            weighted[l] = _mm512_add_epi32(weighted[l], w);
        }
        compress(&mut state, &transpose(rows));
    }
    // The padding of a message of `len` bytes, a multiple of 64: one chunk.
    let bits = (len as u64) * 8;
    let mut pad = [zero; 16];
    pad[0] = _mm512_set1_epi32(0x80);
    pad[14] = _mm512_set1_epi32(bits as u32 as i32);
    pad[15] = _mm512_set1_epi32((bits >> 32) as u32 as i32);
    compress(&mut state, &pad);

    let mut words = [[0u32; 16]; 4];
    for (out, v) in words.iter_mut().zip(state) {
        // SAFETY: sixteen words, the register's size; unaligned store.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), v) };
    }
    let md4 = std::array::from_fn(|l| {
        let mut d = [0u8; 16];
        for (w, word) in words.iter().enumerate() {
            d[4 * w..4 * w + 4].copy_from_slice(&word[l].to_le_bytes());
        }
        d
    });
    let rsum = std::array::from_fn(|l| {
        let a = _mm512_reduce_add_epi64(sum[l]) as u64;
        let b = (_mm512_reduce_add_epi64(running[l]) as u64)
            .wrapping_mul(64)
            .wrapping_sub(u64::from(_mm512_reduce_add_epi32(weighted[l]) as u32));
        (a as u32 & 0xffff) << 16 | (b as u32 & 0xffff)
    });
    (md4, rsum)
}
