//! The digests of a whole image that its read takes: the SHA-256 always,
//! and the SHA-1 when a sink asks for it (a zsync control file's header).
//! Both see the same 64-byte blocks, so with the CPU's SHA extensions they
//! run in one pass ([`crate::simd::sha256_sha1`]), which costs about 1.4
//! times the SHA-256 alone where one after the other costs 2; without
//! them, each is RustCrypto's compression function in turn.

use crate::model::Sha256;

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// SHA-1's initial state (FIPS 180-4, 5.3.1).
const SHA1_H0: [u32; 5] = [
    0x6745_2301,
    0xefcd_ab89,
    0x98ba_dcfe,
    0x1032_5476,
    0xc3d2_e1f0,
];

/// The SHA-256, and maybe the SHA-1, of bytes fed in order.
pub struct Whole {
    sha256: [u32; 8],
    sha1: Option<[u32; 5]>,
    /// The start of a block that the last bytes cut.
    block: [u8; 64],
    filled: usize,
    length: u64,
}

impl Whole {
    /// Takes the SHA-1 too if `sha1`.
    pub fn new(sha1: bool) -> Self {
        Whole {
            sha256: SHA256_H0,
            sha1: sha1.then_some(SHA1_H0),
            block: [0; 64],
            filled: 0,
            length: 0,
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.length += bytes.len() as u64;
        if self.filled > 0 {
            let take = (64 - self.filled).min(bytes.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled < 64 {
                return;
            }
            let block = self.block;
            self.compress(&[block]);
            self.filled = 0;
        }
        let (blocks, rest) = bytes.as_chunks::<64>();
        self.compress(blocks);
        self.block[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    fn compress(&mut self, blocks: &[[u8; 64]]) {
        match &mut self.sha1 {
            None => sha2::block_api::compress256(&mut self.sha256, blocks),
            Some(sha1) => {
                if !crate::simd::sha256_sha1(&mut self.sha256, sha1, blocks) {
                    sha2::block_api::compress256(&mut self.sha256, blocks);
                    sha1::block_api::compress(sha1, blocks);
                }
            }
        }
    }

    /// The SHA-256, and the SHA-1 if asked for. Both pad alike: a 1 bit,
    /// zeros, and the length in bits as a big-endian 64-bit number.
    pub fn finish(mut self) -> (Sha256, Option<[u8; 20]>) {
        let bits = self.length.wrapping_mul(8);
        let mut tail = [0u8; 128];
        tail[..self.filled].copy_from_slice(&self.block[..self.filled]);
        tail[self.filled] = 0x80;
        let end = if self.filled < 56 { 64 } else { 128 };
        tail[end - 8..end].copy_from_slice(&bits.to_be_bytes());
        let (blocks, _) = tail[..end].as_chunks::<64>();
        self.compress(blocks);
        let mut sha256 = [0u8; 32];
        for (out, word) in sha256.chunks_exact_mut(4).zip(self.sha256) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        let sha1 = self.sha1.map(|state| {
            let mut sha1 = [0u8; 20];
            for (out, word) in sha1.chunks_exact_mut(4).zip(state) {
                out.copy_from_slice(&word.to_be_bytes());
            }
            sha1
        });
        (Sha256(sha256), sha1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha1::Digest;

    /// `data` fed in pieces cut at `cuts`.
    fn whole(data: &[u8], cuts: &[usize], sha1: bool) -> (Sha256, Option<[u8; 20]>) {
        let mut w = Whole::new(sha1);
        let mut at = 0;
        for &cut in cuts {
            let cut = cut.min(data.len()).max(at);
            w.update(&data[at..cut]);
            at = cut;
        }
        w.update(&data[at..]);
        w.finish()
    }

    #[test]
    fn the_known_digests_of_the_empty_string_and_abc() {
        let (sha256, sha1) = whole(b"", &[], true);
        assert_eq!(
            sha256.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha1.map(|d| d.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            Some("da39a3ee5e6b4b0d3255bfef95601890afd80709".to_owned())
        );
        let (sha256, sha1) = whole(b"abc", &[1], true);
        assert_eq!(
            sha256.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha1.map(|d| d.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            Some("a9993e364706816aba3e25717850c26c9cd0d89d".to_owned())
        );
        assert_eq!(whole(b"abc", &[], false).1, None);
    }

    #[test]
    fn every_tail_length_pads_as_the_reference_crates_do() {
        // 55 bytes left pad in the same block, 56 to 63 need another: each
        // tail length of one and two blocks, whole and cut in two.
        let data: Vec<u8> = (0..=130u8).collect();
        for len in 0..data.len() {
            let data = &data[..len];
            let want: [u8; 20] = sha1::Sha1::digest(data).into();
            for cuts in [&[][..], &[len / 2]] {
                assert_eq!(
                    whole(data, cuts, true),
                    (Sha256::of(data), Some(want)),
                    "{len}"
                );
            }
        }
    }

    proptest! {
        /// Whatever the lengths and the cuts, the digests are the
        /// reference crates', with the SHA-1 (one pass over both where the
        /// CPU has SHA extensions) and without.
        #[test]
        fn any_bytes_cut_anywhere_give_the_reference_digests(
            data in proptest::collection::vec(any::<u8>(), 0..700),
            mut cuts in proptest::collection::vec(0usize..700, 0..6),
        ) {
            cuts.sort_unstable();
            let (sha256, sha1) = whole(&data, &cuts, true);
            prop_assert_eq!(sha256, Sha256::of(&data));
            let want: [u8; 20] = sha1::Sha1::digest(&data).into();
            prop_assert_eq!(sha1, Some(want));
            prop_assert_eq!(whole(&data, &cuts, false).0, Sha256::of(&data));
        }
    }
}
