//! The uncompressed size of an xz file, from its index at the end (the
//! xz file format, sections 2.1.2 and 4): what a raw disk inside xz
//! holds, without decompressing it. Only a file of one stream, with no
//! stream padding, is read; anything else has no size here.

/// How much of the end of an xz file is kept: the stream footer and an
/// index of some thousands of blocks (`xz -T` writes a block per 24 MiB
/// or so at its default level).
pub const TAIL: usize = 64 << 10;

const HEADER: u64 = 12;
const FOOTER: usize = 12;

/// The uncompressed size the index of a one-stream file of `total` bytes
/// records, given its last bytes `tail`.
pub fn uncompressed_size(tail: &[u8], total: u64) -> Option<u64> {
    let footer = tail.get(tail.len().checked_sub(FOOTER)?..)?;
    if &footer[10..] != b"YZ" {
        return None;
    }
    let backward = u32::from_le_bytes(footer[4..8].try_into().ok()?);
    let index_len = (usize::try_from(backward).ok()? + 1) * 4;
    let index_start = tail.len().checked_sub(FOOTER + index_len)?;
    let index = &tail[index_start..tail.len() - FOOTER];
    let (body, crc) = index.split_at(index.len() - 4);
    let mut check = flate2::Crc::new();
    check.update(body);
    if check.sum().to_le_bytes() != crc[..] || body.first() != Some(&0) {
        return None;
    }
    let mut at = 1;
    let mut next = || -> Option<u64> {
        let mut value: u64 = 0;
        for i in 0..9 {
            let byte = *body.get(at)?;
            at += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    };
    let records = next()?;
    let (mut blocks, mut size) = (0u64, 0u64);
    for _ in 0..records {
        let unpadded = next()?;
        blocks = blocks.checked_add(unpadded.checked_add(3)? & !3)?;
        size = size.checked_add(next()?)?;
    }
    // The blocks, the index and the stream's header and footer make the
    // whole file: one stream, nothing after it.
    let stream = HEADER + blocks + index_len as u64 + FOOTER as u64;
    (stream == total).then_some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `printf 'hello\n' | xz -c`: one block, six bytes inside.
    const HELLO: &[u8] = &[
        0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x04, 0xe6, 0xd6, 0xb4, 0x46, 0x02, 0x00, 0x21,
        0x01, 0x16, 0x00, 0x00, 0x00, 0x74, 0x2f, 0xe5, 0xa3, 0x01, 0x00, 0x05, 0x68, 0x65, 0x6c,
        0x6c, 0x6f, 0x0a, 0x00, 0x00, 0x00, 0xa5, 0x60, 0x97, 0xf1, 0x94, 0xf6, 0xfd, 0xe0, 0x00,
        0x01, 0x1e, 0x06, 0xc1, 0x2f, 0xa4, 0x1d, 0x1f, 0xb6, 0xf3, 0x7d, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x04, 0x59, 0x5a,
    ];

    #[test]
    fn reads_the_size_from_the_index() {
        assert_eq!(uncompressed_size(HELLO, HELLO.len() as u64), Some(6));
    }

    #[test]
    fn no_size_unless_the_file_is_that_one_stream() {
        assert_eq!(uncompressed_size(HELLO, HELLO.len() as u64 + 4), None);
        let mut broken = HELLO.to_vec();
        let n = broken.len();
        broken[n - 16] ^= 1;
        assert_eq!(uncompressed_size(&broken, n as u64), None);
        assert_eq!(uncompressed_size(&HELLO[..20], 20), None);
    }
}
