//! Header parsers: qcow2, VMDK (sparse and descriptor), VHD (fixed and
//! dynamic), VHDX, Parallels, ISO 9660, and raw for everything else. Every read is
//! bounds-checked; a field read from the file is never used to size an
//! allocation.

use super::{ImageInfo, MAX_CAPTURE};
use crate::model::ImageFormat;

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

const QCOW2_MAGIC: &[u8] = b"QFI\xfb";
const VMDK_MAGIC: &[u8] = b"KDMV";
const VHD_MAGIC: &[u8] = b"conectix";
const VHDX_MAGIC: &[u8] = b"vhdxfile";
/// The original Parallels header, whose sector count is 32 bits wide.
const PARALLELS_MAGIC: &[u8] = b"WithoutFreeSpace";
/// The extended header qemu writes, with a 64-bit sector count.
const PARALLELS_MAGIC_EXT: &[u8] = b"WithouFreSpacExt";
/// `inuse` when the image was not closed cleanly.
const PARALLELS_IN_USE: u32 = 0x746F_6E59;
const ISO_OFFSET: usize = 32768;

/// A VHDX's metadata region GUID, as stored (mixed-endian).
const VHDX_METADATA_REGION: [u8; 16] = [
    0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47, 0x9A, 0x4B, 0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E,
];
const VHDX_VIRTUAL_DISK_SIZE: [u8; 16] = [
    0x24, 0x42, 0xA5, 0x2F, 0x1B, 0xCD, 0x76, 0x48, 0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8,
];
const VHDX_FILE_PARAMETERS: [u8; 16] = [
    0x37, 0x67, 0xA1, 0xCA, 0x36, 0xFA, 0x43, 0x4D, 0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B,
];

/// A range past the head that a header says must be kept: a VHDX's
/// metadata region, from its region table.
pub fn later_range(head: &[u8]) -> Option<(u64, usize)> {
    if !head.starts_with(VHDX_MAGIC) {
        return None;
    }
    vhdx_metadata_region(head).ok()
}

fn vhdx_metadata_region(head: &[u8]) -> Result<(u64, usize), String> {
    // Two copies of the region table, at 192 KiB and 256 KiB.
    for table in [192 << 10, 256 << 10] {
        if head.get(table..table + 4) != Some(b"regi") {
            continue;
        }
        let count = le_u32(head, table + 8).ok_or("truncated VHDX region table")?;
        if count > 2047 {
            return Err(format!(
                "VHDX region table claims {count} entries (at most 2047)"
            ));
        }
        for i in 0..count as usize {
            let entry = table + 16 + i * 32;
            let guid = head
                .get(entry..entry + 16)
                .ok_or("truncated VHDX region table")?;
            if guid == VHDX_METADATA_REGION {
                let offset = le_u64(head, entry + 16).ok_or("truncated VHDX region table")?;
                let length = le_u32(head, entry + 24).ok_or("truncated VHDX region table")?;
                return Ok((offset, (length as usize).min(MAX_CAPTURE)));
            }
        }
        return Err("VHDX region table has no metadata region".into());
    }
    Err("VHDX has no region table (truncated?)".into())
}

/// Says what `head` (with a captured later range, the last 512 bytes, and
/// the total length when known) is. `total` is `None` for the inside of a
/// compressed file, whose end is not seen.
pub fn identify(
    head: &[u8],
    later: Option<(u64, usize, Vec<u8>)>,
    tail: Option<&[u8]>,
    total: Option<u64>,
) -> Result<ImageInfo, String> {
    if head.starts_with(QCOW2_MAGIC) {
        return qcow2(head);
    }
    if head.starts_with(VMDK_MAGIC) {
        return vmdk_sparse(head);
    }
    if head.starts_with(b"# Disk DescriptorFile") {
        return vmdk_descriptor(head);
    }
    if head.starts_with(VHDX_MAGIC) {
        return vhdx(head, later);
    }
    if head.starts_with(PARALLELS_MAGIC) || head.starts_with(PARALLELS_MAGIC_EXT) {
        return parallels(head);
    }
    if head.starts_with(VHD_MAGIC) {
        // A dynamic VHD keeps a copy of its footer at the start.
        return vhd(&head[..head.len().min(512)]);
    }
    if head.get(ISO_OFFSET + 1..ISO_OFFSET + 6) == Some(b"CD001") {
        return iso(head, total);
    }
    if let Some(tail) = tail.filter(|t| t.len() == 512 && t.starts_with(VHD_MAGIC)) {
        return vhd(tail);
    }
    let mut info = ImageInfo::raw(total.unwrap_or(0));
    if total.is_none() {
        info.virtual_size = None;
    }
    Ok(info)
}

fn qcow2(h: &[u8]) -> Result<ImageInfo, String> {
    let short = || "truncated qcow2 header".to_owned();
    let version = be_u32(h, 4).ok_or_else(short)?;
    if !(2..=3).contains(&version) {
        return Err(format!("unsupported qcow2 version {version}"));
    }
    let backing_offset = be_u64(h, 8).ok_or_else(short)?;
    let backing_len = be_u32(h, 16).ok_or_else(short)?;
    let cluster_bits = be_u32(h, 20).ok_or_else(short)?;
    let size = be_u64(h, 24).ok_or_else(short)?;
    if !(9..=21).contains(&cluster_bits) {
        return Err(format!("invalid qcow2 cluster_bits {cluster_bits}"));
    }
    if backing_offset != 0 {
        let name = usize::try_from(backing_offset)
            .ok()
            .and_then(|o| h.get(o..o + (backing_len.min(1023) as usize)))
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|| "?".into());
        return Err(format!(
            "qcow2 image has a backing file ({name:?}); it cannot be used alone: \
             flatten it first (qemu-img convert -O qcow2)"
        ));
    }
    let mut compression = "zlib".to_owned();
    if version == 3 {
        let header_len = be_u32(h, 100).ok_or_else(short)?;
        if header_len > 104 {
            match h.get(104) {
                Some(0) => {}
                Some(1) => compression = "zstd".into(),
                Some(n) => return Err(format!("unknown qcow2 compression type {n}")),
                None => return Err(short()),
            }
        }
    }
    let mut info = ImageInfo::of(ImageFormat::Qcow2, Some(size));
    info.subformat = Some(format!("v{version}"));
    info.cluster_size = Some(1 << cluster_bits);
    info.cluster_compression = Some(compression);
    Ok(info)
}

fn vmdk_sparse(h: &[u8]) -> Result<ImageInfo, String> {
    let short = || "truncated VMDK header".to_owned();
    let version = le_u32(h, 4).ok_or_else(short)?;
    if !(1..=3).contains(&version) {
        return Err(format!("unsupported VMDK version {version}"));
    }
    let capacity = le_u64(h, 12).ok_or_else(short)?;
    let desc_offset = le_u64(h, 28).ok_or_else(short)?;
    let desc_size = le_u64(h, 36).ok_or_else(short)?;
    let size = capacity.checked_mul(512).ok_or("VMDK capacity overflows")?;
    let mut info = ImageInfo::of(ImageFormat::Vmdk, Some(size));
    // The embedded descriptor names the variant.
    if desc_offset > 0 && desc_size > 0 {
        let start = usize::try_from(desc_offset.saturating_mul(512)).unwrap_or(usize::MAX);
        let len = usize::try_from(desc_size.saturating_mul(512))
            .unwrap_or(usize::MAX)
            .min(64 << 10);
        if let Some(text) = h.get(start..start.saturating_add(len).min(h.len())) {
            info.subformat = create_type(&String::from_utf8_lossy(text));
        }
    } else {
        // streamOptimized keeps its descriptor after the header too.
        info.subformat = h
            .get(512..h.len().min(64 << 10))
            .and_then(|t| create_type(&String::from_utf8_lossy(t)));
    }
    Ok(info)
}

fn create_type(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l
            .trim()
            .strip_prefix("createType")?
            .trim()
            .strip_prefix('=')?
            .trim();
        Some(v.trim_matches('"').to_owned())
    })
}

/// A text descriptor: only useful with its extent files, which cannot be
/// published with it.
fn vmdk_descriptor(h: &[u8]) -> Result<ImageInfo, String> {
    let text = String::from_utf8_lossy(&h[..h.len().min(64 << 10)]);
    let kind = create_type(&text).unwrap_or_else(|| "?".into());
    Err(format!(
        "a VMDK descriptor file (createType {kind:?}) refers to separate extent files; \
         publish a monolithic VMDK (qemu-img convert -O vmdk -o subformat=streamOptimized)"
    ))
}

fn vhd(footer: &[u8]) -> Result<ImageInfo, String> {
    if footer.len() < 512 {
        return Err("truncated VHD footer".into());
    }
    let stored = be_u32(footer, 64).ok_or("truncated VHD footer")?;
    let sum: u32 = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, b)| s.wrapping_add(u32::from(*b)));
    if !sum != stored {
        return Err("VHD footer checksum mismatch (corrupt or truncated)".into());
    }
    let size = be_u64(footer, 48).ok_or("truncated VHD footer")?;
    let kind = match be_u32(footer, 60).ok_or("truncated VHD footer")? {
        2 => "fixed",
        3 => "dynamic",
        4 => {
            return Err(
                "differencing VHD: it needs its parent disk and cannot be used alone".into(),
            );
        }
        n => return Err(format!("unknown VHD disk type {n}")),
    };
    let mut info = ImageInfo::of(ImageFormat::Vhd, Some(size));
    info.subformat = Some(kind.into());
    Ok(info)
}

/// A Parallels expanding disk, read as qemu's block/parallels.c does:
/// magic[16], then little-endian version, heads, cylinders, tracks
/// (sectors per cluster), bat_entries (u32 each), nb_sectors (u64), inuse.
fn parallels(h: &[u8]) -> Result<ImageInfo, String> {
    let short = || "truncated Parallels header".to_owned();
    let version = le_u32(h, 16).ok_or_else(short)?;
    let tracks = le_u32(h, 28).ok_or_else(short)?;
    let sectors = le_u64(h, 36).ok_or_else(short)?;
    let in_use = le_u32(h, 44).ok_or_else(short)?;
    if version != 2 {
        return Err(format!(
            "unsupported Parallels header version {version} (qemu reads version 2)"
        ));
    }
    if tracks == 0 || tracks > i32::MAX as u32 / 513 {
        return Err(format!(
            "invalid Parallels cluster of {tracks} sectors (qemu refuses it)"
        ));
    }
    if in_use == PARALLELS_IN_USE {
        return Err(
            "Parallels image was not closed cleanly (its in-use flag is set); repair it first \
             (qemu-img check -r all)"
                .into(),
        );
    }
    let sectors = if h.starts_with(PARALLELS_MAGIC) {
        sectors & u64::from(u32::MAX)
    } else {
        sectors
    };
    let size = sectors
        .checked_mul(512)
        .ok_or("Parallels sector count overflows")?;
    Ok(ImageInfo::of(ImageFormat::Parallels, Some(size)))
}

fn vhdx(head: &[u8], later: Option<(u64, usize, Vec<u8>)>) -> Result<ImageInfo, String> {
    let (offset, len) = vhdx_metadata_region(head)?;
    let region = match later {
        Some((at, want, data)) if at == offset && data.len() == want.min(len) => data,
        _ if (offset as usize) < head.len() => {
            let start = offset as usize;
            head.get(start..start + len.min(head.len() - start))
                .unwrap_or_default()
                .to_vec()
        }
        _ => return Err("truncated VHDX: its metadata region is missing".into()),
    };
    if !region.starts_with(b"metadata") {
        return Err("VHDX metadata region has no `metadata` signature".into());
    }
    let count = le_u16(&region, 10).ok_or("truncated VHDX metadata table")?;
    let mut size = None;
    for i in 0..usize::from(count.min(2047)) {
        let entry = 32 + i * 32;
        let Some(guid) = region.get(entry..entry + 16) else {
            return Err("truncated VHDX metadata table".into());
        };
        let item = le_u32(&region, entry + 16).ok_or("truncated VHDX metadata table")? as usize;
        if guid == VHDX_VIRTUAL_DISK_SIZE {
            size = Some(
                le_u64(&region, item).ok_or("VHDX virtual disk size lies outside its region")?,
            );
        } else if guid == VHDX_FILE_PARAMETERS {
            let flags =
                le_u32(&region, item + 4).ok_or("VHDX file parameters lie outside its region")?;
            if flags & 2 != 0 {
                return Err(
                    "differencing VHDX: it needs its parent disk and cannot be used alone".into(),
                );
            }
        }
    }
    let size = size.ok_or("VHDX metadata has no virtual disk size")?;
    Ok(ImageInfo::of(ImageFormat::Vhdx, Some(size)))
}

fn iso(h: &[u8], total: Option<u64>) -> Result<ImageInfo, String> {
    let pvd = ISO_OFFSET;
    if h.get(pvd) != Some(&1) {
        return Err("ISO 9660 without a primary volume descriptor first".into());
    }
    let blocks = le_u32(h, pvd + 80).ok_or("truncated ISO 9660 volume descriptor")?;
    let block = le_u16(h, pvd + 128).ok_or("truncated ISO 9660 volume descriptor")?;
    let size = u64::from(blocks) * u64::from(block);
    if let Some(total) = total.filter(|&t| t < size) {
        return Err(format!(
            "truncated ISO: {total} bytes, the volume says {size}"
        ));
    }
    Ok(ImageInfo::of(ImageFormat::Iso, Some(size)))
}
