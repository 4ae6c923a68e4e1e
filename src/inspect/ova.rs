//! OVA and XVA: tars read as a stream, told apart by their first member.
//!
//! An OVA's first member is an OVF descriptor. Each member is hashed as it
//! passes (SHA-256, and SHA-1 until the manifest says which it uses), the
//! descriptor (at most 1 MiB) and the manifest (at most 1 MiB) are kept,
//! nothing else. At the end the members are checked against the manifest's
//! digests and the descriptor's sizes.
//!
//! An XVA (`xe vm-export`) starts with `ova.xml`, which is kept (at most
//! 1 MiB) and read by [`super::xva`]; its other members (the disks, in
//! numbered blocks) are only counted past: nothing is kept of them.

use std::collections::{BTreeMap, BTreeSet};

use quick_xml::XmlVersion;
use quick_xml::events::Event;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::ImageInfo;
use crate::model::{ImageFormat, Machine, OvaDisk};

const BLOCK: usize = 512;
const MAX_TEXT_MEMBER: u64 = 1 << 20;
/// The most members an OVA may have: each is remembered until the end.
const MAX_MEMBERS: usize = 4096;
/// The name of an XVA's first member.
const XVA_HEADER: &str = "ova.xml";

/// What a tar is, by its first regular member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    Ova,
    Xva,
}

impl Archive {
    fn of_first_member(name: &str) -> Option<Self> {
        if name.to_ascii_lowercase().ends_with(".ovf") {
            Some(Archive::Ova)
        } else if name == XVA_HEADER {
            Some(Archive::Xva)
        } else {
            None
        }
    }

    fn label(self) -> &'static str {
        match self {
            Archive::Ova => "OVA",
            Archive::Xva => "XVA",
        }
    }
}

/// Whether `head` starts with a ustar header.
pub fn looks_like_tar(head: &[u8]) -> bool {
    head.len() >= BLOCK && &head[257..262] == b"ustar" && header_checksum_ok(&head[..BLOCK])
}

fn header_checksum_ok(h: &[u8]) -> bool {
    let stored = octal(&h[148..156]);
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    stored == Some(sum)
}

fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

struct Member {
    name: String,
    size: u64,
    /// An OVA's members only: an XVA has no manifest to check them against.
    sha256: Option<Sha256>,
    /// Dropped once the manifest says SHA-256 is what it uses.
    sha1: Option<Sha1>,
    /// The bytes, for the descriptor, the manifest and `ova.xml` only.
    text: Option<Vec<u8>>,
}

struct Done {
    name: String,
    size: u64,
    sha256: String,
    sha1: Option<String>,
}

enum State {
    Header(Vec<u8>),
    Data {
        member: Box<Member>,
        left: u64,
        pad: u64,
    },
    Padding(u64),
    End,
}

/// A streaming tar reader; see the module docs.
pub struct TarReader {
    state: State,
    /// An OVA's members so far, with their digests.
    done: Vec<Done>,
    /// Regular members so far, of either kind.
    members: usize,
    ovf: Option<Vec<u8>>,
    manifest: Option<Vec<u8>>,
    xva_header: Option<Vec<u8>>,
    /// An XVA's block directories (`Ref:1` of `Ref:1/00000000`), one per
    /// disk.
    xva_dirs: BTreeSet<String>,
    first: Option<String>,
    /// Said without the archive's kind, which [`TarReader::finish`] adds.
    error: Option<String>,
    /// The manifest names SHA-1 digests.
    manifest_sha1: Option<bool>,
}

impl Default for TarReader {
    fn default() -> Self {
        TarReader {
            state: State::Header(Vec::with_capacity(BLOCK)),
            done: Vec::new(),
            members: 0,
            ovf: None,
            manifest: None,
            xva_header: None,
            xva_dirs: BTreeSet::new(),
            first: None,
            error: None,
            manifest_sha1: None,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TarReader {
    /// What the first regular member says this tar is, if anything.
    pub fn archive(&self) -> Option<Archive> {
        self.first.as_deref().and_then(Archive::of_first_member)
    }

    pub fn update(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && self.error.is_none() {
            match &mut self.state {
                State::End => return,
                State::Header(buf) => {
                    let take = (BLOCK - buf.len()).min(chunk.len());
                    buf.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if buf.len() == BLOCK {
                        let header = std::mem::take(buf);
                        self.header(&header);
                    }
                }
                State::Data { member, left, pad } => {
                    let take = (*left).min(chunk.len() as u64) as usize;
                    let piece = &chunk[..take];
                    if let Some(s) = member.sha256.as_mut() {
                        s.update(piece);
                    }
                    if let Some(s) = member.sha1.as_mut() {
                        s.update(piece);
                    }
                    if let Some(text) = member.text.as_mut() {
                        text.extend_from_slice(piece);
                    }
                    *left -= take as u64;
                    chunk = &chunk[take..];
                    if *left == 0 {
                        let pad = *pad;
                        let State::Data { member, .. } =
                            std::mem::replace(&mut self.state, State::Padding(pad))
                        else {
                            unreachable!("matched above")
                        };
                        self.finish_member(*member);
                    }
                }
                State::Padding(left) => {
                    let take = (*left).min(chunk.len() as u64);
                    *left -= take;
                    chunk = &chunk[take as usize..];
                    if *left == 0 {
                        self.state = State::Header(Vec::with_capacity(BLOCK));
                    }
                }
            }
        }
    }

    fn header(&mut self, h: &[u8]) {
        if h.iter().all(|&b| b == 0) {
            self.state = State::End;
            return;
        }
        if !header_checksum_ok(h) {
            self.error = Some(format!("corrupt tar header after member {}", self.members));
            return;
        }
        let field = |r: std::ops::Range<usize>| {
            let b = &h[r];
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let prefix = field(345..500);
        let base = field(0..100);
        let name = if prefix.is_empty() {
            base
        } else {
            format!("{prefix}/{base}")
        };
        let Some(size) = octal(&h[124..136]) else {
            self.error = Some(format!("member {name:?} has an invalid size"));
            return;
        };
        let kind = h[156];
        if self.done.len() >= MAX_MEMBERS {
            self.error = Some(format!("more than {MAX_MEMBERS} members"));
            return;
        }
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        if !(kind == b'0' || kind == 0) {
            // Directories, links, pax headers: skipped, not published content.
            self.state = if size > 0 {
                State::Padding(size + pad)
            } else {
                State::Header(Vec::with_capacity(BLOCK))
            };
            return;
        }
        if self.first.is_none() {
            self.first = Some(name.clone());
        }
        self.members += 1;
        let ova = self.archive() == Some(Archive::Ova);
        if let (Some(Archive::Xva), Some((dir, _))) = (self.archive(), name.split_once('/'))
            && !self.xva_dirs.contains(dir)
        {
            if self.xva_dirs.len() >= MAX_MEMBERS {
                self.error = Some(format!("more than {MAX_MEMBERS} disk directories"));
                return;
            }
            self.xva_dirs.insert(dir.to_owned());
        }
        let lower = name.to_ascii_lowercase();
        let text = match self.archive() {
            Some(Archive::Ova) => lower.ends_with(".ovf") || lower.ends_with(".mf"),
            Some(Archive::Xva) => name == XVA_HEADER && self.xva_header.is_none(),
            None => false,
        };
        let member = Member {
            sha256: ova.then(Sha256::new),
            sha1: (ova && self.manifest_sha1 != Some(false)).then(Sha1::new),
            text: (text && size <= MAX_TEXT_MEMBER).then(Vec::new),
            name,
            size,
        };
        if size == 0 {
            self.finish_member(member);
            self.state = State::Header(Vec::with_capacity(BLOCK));
        } else {
            self.state = State::Data {
                member: Box::new(member),
                left: size,
                pad,
            };
        }
    }

    fn finish_member(&mut self, m: Member) {
        let lower = m.name.to_ascii_lowercase();
        let Some(sha256) = m.sha256 else {
            if let Some(text) = m.text {
                self.xva_header = Some(text);
            }
            return;
        };
        if let Some(text) = m.text {
            if lower.ends_with(".ovf") && self.ovf.is_none() {
                self.ovf = Some(text);
            } else if lower.ends_with(".mf") && self.manifest.is_none() {
                self.manifest_sha1 = Some(String::from_utf8_lossy(&text).contains("SHA1("));
                self.manifest = Some(text);
            }
        }
        self.done.push(Done {
            name: m.name,
            size: m.size,
            sha256: hex(&sha256.finalize()),
            sha1: m.sha1.map(|s| hex(&s.finalize())),
        });
    }

    /// What the archive holds, or `None` for a tar that is neither an OVA
    /// nor an XVA.
    pub fn finish(self) -> Option<Result<ImageInfo, String>> {
        let archive = self.archive()?;
        Some(self.read(archive))
    }

    fn read(self, archive: Archive) -> Result<ImageInfo, String> {
        let label = archive.label();
        if let Some(e) = self.error {
            return Err(format!("{label}: {e}"));
        }
        if !matches!(self.state, State::End | State::Header(_)) {
            return Err(format!("{label}: truncated inside a member"));
        }
        if matches!(&self.state, State::Header(b) if !b.is_empty()) {
            return Err(format!("{label}: truncated inside a tar header"));
        }
        if archive == Archive::Xva {
            let xml = self.xva_header.ok_or("XVA: ova.xml is larger than 1 MiB")?;
            let (machine, disks) = super::xva::parse(&xml)?;
            if let Some(missing) = disks.iter().find(|d| !self.xva_dirs.contains(*d)) {
                return Err(format!(
                    "XVA: ova.xml lists the VM's disk {missing}, whose blocks ({missing}/...) \
                     the archive lacks"
                ));
            }
            let mut info = ImageInfo::of(
                ImageFormat::Xva,
                Some(machine.disks.iter().map(|d| d.capacity).sum()),
            );
            info.machine = Some(machine);
            return Ok(info);
        }
        let ovf = self
            .ovf
            .ok_or("OVA: the descriptor is missing or larger than 1 MiB")?;
        let descriptor = parse_ovf(&ovf)?;
        // Sizes the descriptor declares for its files.
        for (href, size) in &descriptor.file_sizes {
            let member = self.done.iter().find(|d| &d.name == href).ok_or_else(|| {
                format!("OVA: the descriptor lists {href:?}, which the archive lacks")
            })?;
            if let Some(size) = size.filter(|s| member.size != *s) {
                return Err(format!(
                    "OVA: {href:?} is {} bytes, the descriptor says {size}",
                    member.size
                ));
            }
        }
        if let Some(manifest) = self.manifest {
            check_manifest(&String::from_utf8_lossy(&manifest), &self.done)?;
        }
        let mut info = ImageInfo::of(
            ImageFormat::Ova,
            Some(descriptor.machine.disks.iter().map(|d| d.capacity).sum()),
        );
        info.machine = Some(descriptor.machine);
        Ok(info)
    }
}

/// Checks every `SHA256(name)= hex` / `SHA1(name)= hex` line.
fn check_manifest(text: &str, members: &[Done]) -> Result<(), String> {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (algo, rest) = line
            .split_once('(')
            .ok_or_else(|| format!("OVA manifest: bad line {line:?}"))?;
        let (name, digest) = rest
            .split_once(")=")
            .ok_or_else(|| format!("OVA manifest: bad line {line:?}"))?;
        let digest = digest.trim().to_ascii_lowercase();
        let member = members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| format!("OVA manifest lists {name:?}, which the archive lacks"))?;
        let actual = match algo.trim() {
            "SHA256" => Some(member.sha256.clone()),
            "SHA1" => member.sha1.clone(),
            other => return Err(format!("OVA manifest: unsupported digest {other}")),
        };
        match actual {
            Some(a) if a == digest => {}
            Some(a) => {
                return Err(format!(
                    "OVA: {name:?} does not match the archive's manifest ({algo} {digest}, actual {a})"
                ));
            }
            None => return Err(format!("OVA: {name:?} was not hashed with {algo}")),
        }
    }
    Ok(())
}

struct Descriptor {
    machine: Machine,
    /// File href and declared size, from References.
    file_sizes: Vec<(String, Option<u64>)>,
}

/// Reads the OVF descriptor: References, DiskSection, the VirtualSystem's
/// name, OS and virtual hardware.
fn parse_ovf(xml: &[u8]) -> Result<Descriptor, String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut files: BTreeMap<String, (String, Option<u64>)> = BTreeMap::new();
    let mut disks: Vec<(Option<String>, u64)> = Vec::new();
    let mut machine = Machine {
        name: None,
        os: None,
        cpus: None,
        memory_mib: None,
        disks: Vec::new(),
    };
    let mut path: Vec<String> = Vec::new();
    let mut item: BTreeMap<String, String> = BTreeMap::new();
    let mut text = String::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("OVA descriptor is not well-formed XML: {e}"))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = local(e.name().as_ref());
                let attrs = attributes(e)?;
                match name.as_str() {
                    "File" => {
                        let id = attrs.get("id").cloned().unwrap_or_default();
                        let href = attrs.get("href").cloned().unwrap_or_default();
                        let size = match attrs.get("size") {
                            Some(s) => Some(
                                s.parse()
                                    .map_err(|_| format!("OVF File {href:?}: bad size"))?,
                            ),
                            None => None,
                        };
                        files.insert(id, (href, size));
                    }
                    "Disk" => {
                        let capacity: u64 = attrs
                            .get("capacity")
                            .and_then(|c| c.parse().ok())
                            .ok_or("OVF Disk without a numeric capacity")?;
                        let unit = attrs
                            .get("capacityAllocationUnits")
                            .map(String::as_str)
                            .unwrap_or("byte");
                        let bytes = capacity
                            .checked_mul(allocation_unit(unit)?)
                            .ok_or("OVF Disk capacity overflows")?;
                        disks.push((attrs.get("fileRef").cloned(), bytes));
                    }
                    "VirtualSystem" if machine.name.is_none() => {
                        machine.name = attrs.get("id").cloned()
                    }
                    "OperatingSystemSection" => {
                        machine.os = attrs.get("osType").cloned().or(machine.os.take());
                    }
                    "Item" => item.clear(),
                    _ => {}
                }
                if matches!(event, Event::Start(_)) {
                    path.push(name);
                    text.clear();
                }
            }
            Event::Text(t) => text.push_str(&t.xml_content(XmlVersion::Implicit1_0)),
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                let parent = path.last().map(String::as_str).unwrap_or("");
                let value = std::mem::take(&mut text).trim().to_owned();
                match (parent, name.as_str()) {
                    ("VirtualSystem", "Name") if !value.is_empty() => machine.name = Some(value),
                    ("OperatingSystemSection", "Description") if machine.os.is_none() => {
                        machine.os = Some(value)
                    }
                    ("Item", field) => {
                        item.insert(field.to_owned(), value);
                    }
                    (_, "Item") => {
                        let quantity = item
                            .get("VirtualQuantity")
                            .and_then(|q| q.parse::<u64>().ok());
                        match item.get("ResourceType").map(String::as_str) {
                            Some("3") => machine.cpus = quantity,
                            Some("4") => {
                                let unit = item
                                    .get("AllocationUnits")
                                    .map(String::as_str)
                                    .unwrap_or("byte * 2^20");
                                machine.memory_mib = quantity
                                    .zip(allocation_unit(unit).ok())
                                    .and_then(|(q, u)| q.checked_mul(u))
                                    .map(|b| b >> 20);
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    machine.disks = disks
        .into_iter()
        .map(|(file_ref, capacity)| OvaDisk {
            file: file_ref.and_then(|r| files.get(&r).map(|f| f.0.clone())),
            capacity,
        })
        .collect();
    Ok(Descriptor {
        machine,
        file_sizes: files.into_values().collect(),
    })
}

fn local(name: &str) -> String {
    name.rsplit(':').next().unwrap_or(name).to_owned()
}

fn attributes(e: &quick_xml::events::BytesStart) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| format!("OVA descriptor: bad attribute: {err}"))?;
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| format!("OVA descriptor: bad attribute value: {err}"))?;
        out.insert(local(attr.key.as_ref()), value.into_owned());
    }
    Ok(out)
}

/// `byte`, `byte * 2^20`, `KiloBytes`, `MegaBytes`, `GigaBytes`.
fn allocation_unit(unit: &str) -> Result<u64, String> {
    let u = unit.replace(' ', "");
    let bytes = match u.as_str() {
        "byte" | "bytes" => 1,
        "KiloBytes" | "KB" => 1 << 10,
        "MegaBytes" | "MB" => 1 << 20,
        "GigaBytes" | "GB" => 1 << 30,
        _ => match u
            .strip_prefix("byte*2^")
            .and_then(|p| p.parse::<u32>().ok())
        {
            Some(p) if p < 63 => 1u64 << p,
            _ => return Err(format!("OVF: unknown allocation unit {unit:?}")),
        },
    };
    Ok(bytes)
}
