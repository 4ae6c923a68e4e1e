//! Reads what an image is from its own bytes, in the same pass that hashes
//! it: the format from magic numbers (never the extension), the virtual disk
//! size, the format's own fields, and for an OVA or XVA the machine inside.
//!
//! [`Inspector`] is fed the file's consecutive chunks and keeps only what it
//! needs: the first [`HEAD`] bytes, one later range a header points at (a
//! VHDX's metadata region, at most [`MAX_CAPTURE`] bytes), the last 512
//! bytes (a VHD footer), and for a tar (OVA, XVA) a streaming tar reader. No
//! allocation is sized by a field read from the file without a bound.

mod formats;
mod ova;
mod xva;
mod xz;

use crate::model::{Compression, ImageFormat};
pub use crate::model::{ImageInfo, Machine, OvaDisk};

/// How much of the start of a file is kept: enough for every header,
/// including a VHDX's region tables at 192 and 256 KiB and an ISO's volume
/// descriptor at 32 KiB.
pub const HEAD: usize = 320 << 10;
/// The largest later range a header may ask to keep.
pub const MAX_CAPTURE: usize = 1 << 20;
/// How much of a compressed file's start is decompressed to find the
/// format inside.
const INNER_HEAD: usize = 4 << 20;
/// How much compressed input is kept to decompress that much.
const COMPRESSED_HEAD: usize = 4 << 20;
/// The most memory an xz block's decoder may take, in KiB: 1 GiB, above
/// any preset's dictionary (xz -9: 64 MiB), so a stream that claims more is
/// refused before its dictionary is allocated.
const XZ_MEM_LIMIT_KIB: u32 = 1 << 20;

impl ImageInfo {
    fn raw(len: u64) -> Self {
        ImageInfo {
            format: ImageFormat::Raw,
            detected: false,
            compression: None,
            virtual_size: Some(len),
            subformat: None,
            cluster_size: None,
            cluster_compression: None,
            machine: None,
        }
    }

    fn of(format: ImageFormat, virtual_size: Option<u64>) -> Self {
        ImageInfo {
            format,
            detected: true,
            virtual_size,
            ..ImageInfo::raw(0)
        }
    }
}

/// Consumes a file chunk by chunk; see the module docs.
pub struct Inspector {
    head: Vec<u8>,
    /// A later range to keep: (offset, wanted length, bytes so far).
    capture: Option<(u64, usize, Vec<u8>)>,
    tail: Vec<u8>,
    position: u64,
    tar: Option<ova::TarReader>,
    /// The first chunk decided what this is.
    started: bool,
    compressed: Option<Compression>,
}

impl Default for Inspector {
    fn default() -> Self {
        Self::new()
    }
}

impl Inspector {
    pub fn new() -> Self {
        Inspector {
            head: Vec::new(),
            capture: None,
            tail: Vec::with_capacity(512),
            position: 0,
            tar: None,
            started: false,
            compressed: None,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        if !self.started && self.head.len() + chunk.len() >= 6 {
            let mut first = self.head.clone();
            first.extend(chunk.iter().take(6));
            self.compressed = compression_of(&first);
            self.started = true;
        }
        let limit = if self.compressed.is_some() {
            COMPRESSED_HEAD
        } else {
            HEAD
        };
        let taken = (limit.saturating_sub(self.head.len())).min(chunk.len());
        let before = self.head.len();
        self.head.extend_from_slice(&chunk[..taken]);
        match self.tar.as_mut() {
            Some(tar) => tar.update(chunk),
            // Decide once the tar header is in: then replay what came before.
            None if before < 512
                && self.head.len() >= 512
                && self.compressed.is_none()
                && ova::looks_like_tar(&self.head) =>
            {
                let mut tar = ova::TarReader::default();
                tar.update(&self.head);
                tar.update(&chunk[taken..]);
                self.tar = Some(tar);
            }
            None => {}
        }
        if self.capture.is_none() && before < HEAD && self.head.len() >= HEAD {
            // Ranges that lie before this chunk are gone; the format check
            // reports them missing.
            self.capture = formats::later_range(&self.head)
                .filter(|(offset, _)| *offset >= self.position)
                .map(|(offset, len)| (offset, len.min(MAX_CAPTURE), Vec::new()));
        }
        self.capture_range(chunk);
        self.position += chunk.len() as u64;
        self.keep_tail(chunk);
    }

    fn capture_range(&mut self, chunk: &[u8]) {
        let Some((offset, len, data)) = self.capture.as_mut() else {
            return;
        };
        let start = self.position;
        let end = start + chunk.len() as u64;
        let want_end = *offset + *len as u64;
        if end <= *offset || start >= want_end || data.len() >= *len {
            return;
        }
        let from = offset.saturating_sub(start) as usize;
        let to = (want_end.min(end) - start) as usize;
        data.extend_from_slice(&chunk[from..to]);
    }

    /// A later range a header asked for that has not been seen yet.
    fn missing_range(&self) -> Option<(u64, usize)> {
        self.capture
            .as_ref()
            .filter(|(_, len, data)| data.len() < *len)
            .map(|(offset, len, _)| (*offset, *len))
    }

    /// Goes on at `offset` without the bytes in between: for [`probe`],
    /// which reads the head, a later range and the tail, but never a tar
    /// stream (which needs every byte). A later range seen only in part
    /// is read again whole.
    fn seek(&mut self, offset: u64) {
        if let Some((_, len, data)) = self.capture.as_mut()
            && data.len() < *len
        {
            data.clear();
        }
        self.position = offset;
    }

    /// How much of the end is kept: a VHD footer, or an xz index.
    fn tail_len(&self) -> usize {
        match self.compressed {
            Some(Compression::Xz) => xz::TAIL,
            _ => 512,
        }
    }

    fn keep_tail(&mut self, chunk: &[u8]) {
        let keep = self.tail_len();
        if chunk.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
    }

    /// Says what the file is, given its total length.
    pub fn finish(self, total_len: u64) -> Result<ImageInfo, String> {
        if let Some(compression) = self.compressed {
            let inner = decompress_prefix(compression, &self.head)?;
            let mut info = formats::identify(&inner, None, None, None)?;
            info.compression = Some(compression);
            if !info.detected {
                // A raw disk: as large as the data inside, which only an
                // xz index tells without decompressing it all.
                info.virtual_size = match compression {
                    Compression::Xz => xz::uncompressed_size(&self.tail, total_len),
                    _ => None,
                };
            }
            return Ok(info);
        }
        if let Some(result) = self.tar.and_then(ova::TarReader::finish) {
            return result;
        }
        formats::identify(&self.head, self.capture, Some(&self.tail), Some(total_len))
    }
}

/// Why [`probe`] failed: reading, or what the bytes say.
pub enum ProbeError<E> {
    Read(E),
    Content(String),
}

/// What a file of `len` bytes is, from the parts the formats keep their
/// facts in: the start (enough for every header, and for a compressed
/// stream's inner header), the later range a header points at (a VHDX's
/// metadata), and the end (a VHD footer, an xz index). `read_at(offset,
/// len)` reads them. The answer is the one a whole read would give;
/// `Ok(None)` for a tar (an OVA, an XVA), whose facts need the whole archive.
pub fn probe<E>(
    len: u64,
    mut read_at: impl FnMut(u64, usize) -> Result<Vec<u8>, E>,
) -> Result<Option<ImageInfo>, ProbeError<E>> {
    let mut inspector = Inspector::new();
    let head = read_at(
        0,
        COMPRESSED_HEAD.min(usize::try_from(len).unwrap_or(usize::MAX)),
    )
    .map_err(ProbeError::Read)?;
    inspector.update(&head);
    if inspector.tar.is_some() {
        return Ok(None);
    }
    if inspector.compressed.is_none()
        && let Some((offset, want)) = inspector.missing_range()
    {
        inspector.seek(offset);
        let range = read_at(offset, want).map_err(ProbeError::Read)?;
        inspector.update(&range);
    }
    // A VHD footer, or an xz index.
    if matches!(inspector.compressed, None | Some(Compression::Xz)) {
        let tail_at = len
            .saturating_sub(inspector.tail_len() as u64)
            .max(inspector.position);
        if tail_at < len {
            inspector.seek(tail_at);
            let tail = read_at(tail_at, (len - tail_at) as usize).map_err(ProbeError::Read)?;
            inspector.update(&tail);
        }
    }
    inspector.finish(len).map(Some).map_err(ProbeError::Content)
}

/// The compressed wrapper the first bytes announce. gzip's two magic bytes
/// are followed by its one method (8, deflate) and flags whose top three
/// bits are reserved (RFC 1952): a raw disk that happens to start with
/// `1F 8B` is not taken for gzip.
fn compression_of(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Compression::Xz)
    } else if head.starts_with(&[0x1F, 0x8B, 0x08]) && head.get(3).is_some_and(|f| f & 0xE0 == 0) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Some(Compression::Zstd)
    } else {
        None
    }
}

/// Decompresses as much of the stream's start as `compressed` allows, up
/// to [`INNER_HEAD`] bytes. A stream cut short is expected: what came out
/// before the cut is what is wanted.
fn decompress_prefix(compression: Compression, compressed: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    let limit = INNER_HEAD as u64;
    let result = match compression {
        Compression::Gzip => flate2::read::MultiGzDecoder::new(compressed)
            .take(limit)
            .read_to_end(&mut out)
            .map(|_| ()),
        Compression::Zstd => match ruzstd::decoding::StreamingDecoder::new(compressed) {
            Ok(d) => d.take(limit).read_to_end(&mut out).map(|_| ()),
            Err(e) => return Err(format!("not a valid zstd stream: {e}")),
        },
        // Decoded as it is read: output comes out before the end of the
        // first block, whatever the dictionary size (xz -9 has 64 MiB).
        Compression::Xz => lzma_rust2::XzReader::new_mem_limit(compressed, true, XZ_MEM_LIMIT_KIB)
            .take(limit)
            .read_to_end(&mut out)
            .map(|_| ()),
    };
    if out.is_empty() {
        return Err(match result {
            Err(e) => format!("not a valid {} stream: {e}", compression.as_str()),
            Ok(()) => format!("an empty {} stream", compression.as_str()),
        });
    }
    Ok(out)
}

/// Inspects a whole buffer at once (tests and fuzzing).
pub fn inspect_bytes(data: &[u8], chunk: usize) -> Result<ImageInfo, String> {
    let mut inspector = Inspector::new();
    for piece in data.chunks(chunk.max(1)) {
        inspector.update(piece);
    }
    inspector.finish(data.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gzip is told by its magic, method and reserved flag bits, not by
    /// two bytes a raw disk may start with.
    #[test]
    fn a_raw_disk_starting_with_gzips_magic_is_raw() {
        assert_eq!(
            compression_of(&[0x1F, 0x8B, 0x08, 0x00, 0, 0]),
            Some(Compression::Gzip)
        );
        for head in [
            &[0x1F, 0x8B, 0x07, 0x00][..],
            &[0x1F, 0x8B, 0x08, 0x20],
            &[0x1F, 0x8B],
        ] {
            assert_eq!(compression_of(head), None, "{head:02x?}");
        }
        let mut disk = vec![0x1F, 0x8B, 0xC3, 0x55];
        disk.resize(1 << 20, 0x5A);
        let mut inspector = Inspector::new();
        inspector.update(&disk);
        let info = inspector.finish(disk.len() as u64).unwrap();
        assert_eq!((info.format, info.compression), (ImageFormat::Raw, None));
    }

    /// A probe of the start, a later range and the tail agrees with a read
    /// of every byte, for each kind of header.
    #[test]
    fn a_probe_agrees_with_a_whole_read() {
        let mut vhd = vec![0u8; 3 << 20];
        let footer = vhd.len() - 512;
        vhd[footer..footer + 8].copy_from_slice(b"conectix");
        let mut qcow2 = vec![0u8; 5 << 20];
        qcow2[..4].copy_from_slice(b"QFI\xfb");
        qcow2[7] = 3;
        qcow2[20] = 16;
        qcow2[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        let raw = vec![7u8; 6 << 20];
        let mut hds = vec![0u8; 2 << 20];
        hds[..16].copy_from_slice(b"WithouFreSpacExt");
        hds[16] = 2;
        hds[28] = 8;
        hds[36..44].copy_from_slice(&(1u64 << 21).to_le_bytes());
        // A raw disk in xz: its size comes from the xz index at the end.
        let mut writer =
            lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(0)).unwrap();
        std::io::Write::write_all(&mut writer, &raw[..300_000]).unwrap();
        let raw_xz = writer.finish().unwrap();
        assert_eq!(
            inspect_bytes(&raw_xz, 4096).unwrap().virtual_size,
            Some(300_000)
        );
        for data in [&vhd, &qcow2, &raw, &hds, &raw_xz] {
            let whole = inspect_bytes(data, 1 << 20);
            let probed = probe(data.len() as u64, |at, len| -> Result<Vec<u8>, ()> {
                let end = (at as usize + len).min(data.len());
                Ok(data[at as usize..end].to_vec())
            });
            match (whole, probed) {
                (Ok(w), Ok(Some(p))) => assert_eq!(w, p),
                (Err(w), Err(ProbeError::Content(p))) => assert_eq!(w, p),
                _ => panic!("the probe and the whole read disagree"),
            }
        }
    }
}
