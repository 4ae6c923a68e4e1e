//! Digests, and what is known of a file from one read of it.

use std::fmt;

use super::ImageInfo;

/// A SHA-256 digest. Written by serde as its lowercase hex (read from hex
/// of either case) where the format is read by people, JSON; as its bytes
/// where it is not, postcard.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The SHA-256 of bytes in memory.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest;
        Sha256(sha2::Sha256::digest(data).into())
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// [`Sha256::to_hex`], appended to `out`.
    pub fn push_hex(&self, out: &mut String) {
        push_hex(out, &self.0);
    }

    /// Parses 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        from_hex(hex).map(Sha256)
    }

    /// The Subresource Integrity form: `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        use base64::Engine;
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    push_hex(&mut s, bytes);
    s
}

/// `bytes` as lowercase hex, written in `text` (twice their length).
fn hex_in<'a>(bytes: &[u8], text: &'a mut [u8]) -> &'a str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in text.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 15)];
    }
    std::str::from_utf8(text).expect("hex is ASCII")
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut text = [0; 128];
    for chunk in bytes.chunks(64) {
        out.push_str(hex_in(chunk, &mut text[..2 * chunk.len()]));
    }
}

/// Each byte's value as a hex digit, either case; 0xFF for none.
const HEX_DIGITS: [u8; 256] = {
    let mut table = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Parses exactly `2 * N` hex digits, either case. By table: a hash cache
/// holds tens of thousands of digests.
fn from_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let hex = hex.as_bytes();
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut bad = 0;
    for (b, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (high, low) = (
            HEX_DIGITS[usize::from(pair[0])],
            HEX_DIGITS[usize::from(pair[1])],
        );
        bad |= high | low;
        *b = high << 4 | low;
    }
    (bad & 0xF0 == 0).then_some(out)
}

/// A SHA-512 digest: what virt-builder checks a template with. Computed
/// only for the images its index lists, in the same read as the SHA-256.
/// Written by serde as [`Sha256`] is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha512(pub [u8; 64]);

impl Sha512 {
    /// The SHA-512 of bytes in memory.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest;
        Sha512(sha2::Sha512::digest(data).into())
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses 128 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        from_hex(hex).map(Sha512)
    }
}

impl fmt::Debug for Sha512 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha512({})", self.to_hex())
    }
}

impl fmt::Display for Sha512 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex_in(&self.0, &mut [0; 128]))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex_in(&self.0, &mut [0; 64]))
    }
}

/// Serde as hex, without a `String` on either way, where the format is
/// read by people (JSON), else as the bytes (postcard, the hash cache):
/// a hash cache holds tens of thousands.
macro_rules! hex_serde {
    ($digest:ident, $bytes:literal) => {
        impl serde::Serialize for $digest {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match s.is_human_readable() {
                    true => s.serialize_str(hex_in(&self.0, &mut [0; 2 * $bytes])),
                    false => s.serialize_bytes(&self.0),
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $digest {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                /// Whether it reads hex.
                struct Hex(bool);
                impl serde::de::Visitor<'_> for Hex {
                    type Value = $digest;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        match self.0 {
                            true => write!(f, "{} hex digits", 2 * $bytes),
                            false => write!(f, "{} bytes", $bytes),
                        }
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$digest, E> {
                        $digest::from_hex(v)
                            .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
                    }
                    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<$digest, E> {
                        v.try_into()
                            .map($digest)
                            .map_err(|_| E::invalid_length(v.len(), &self))
                    }
                }
                match d.is_human_readable() {
                    true => d.deserialize_str(Hex(true)),
                    false => d.deserialize_bytes(Hex(false)),
                }
            }
        }
    };
}

hex_serde!(Sha256, 32);
hex_serde!(Sha512, 64);

/// A file's identity on its file system: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// What identifies a file and its state, from one `stat`: which file it
/// is (device, inode), its size, and its mtime and ctime in nanoseconds.
/// A file in the same state holds the same bytes: replacing it moves its
/// inode, writing to it its mtime and ctime, and no call from user space
/// can set a ctime back. The hash cache keys what it remembers on it.
/// Written as an array, `[dev, ino, size, mtime_ns, ctime_ns]` (the cache
/// holds tens of thousands); read from one, or from a map of those names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileState {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl serde::Serialize for FileState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns).serialize(s)
    }
}

impl FileState {
    /// The file this state is of.
    pub fn id(&self) -> FileId {
        FileId {
            dev: self.dev,
            ino: self.ino,
        }
    }

    /// The same file with the same content as far as stat can tell: size
    /// and mtime. ctime is left out: a hard link into the output changes it.
    pub fn same_content(&self, other: &FileState) -> bool {
        self.id() == other.id() && self.size == other.size && self.mtime_ns == other.mtime_ns
    }

    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let ns = |secs: i64, nsecs: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
        FileState {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A file as the scan's one `lstat` saw it: what a later look-up may
/// trust without a stat of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seen {
    pub state: FileState,
    /// Whether its mode lets anyone read it ([`world_readable`]).
    pub world_readable: bool,
}

impl Seen {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Seen {
            state: FileState::of(meta),
            world_readable: world_readable(meta),
        }
    }

    /// An image of `length` bytes known only from a feed: no file's
    /// (device and inode 0), never opened.
    pub fn unscanned(length: u64) -> Self {
        Seen {
            state: FileState {
                dev: 0,
                ino: 0,
                size: length,
                mtime_ns: 0,
                ctime_ns: 0,
            },
            world_readable: false,
        }
    }
}

/// Whether anyone may read the file: only then is an image published by
/// hard link (a link shares the mode), else copied.
pub fn world_readable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o004 != 0
}

/// A secret key file and which file it is, by device and inode: no file
/// of that identity is published, whatever name leads to it (the scan's
/// `Plan::refuse_secret_keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub path: std::path::PathBuf,
    pub id: FileId,
}

/// The length and digests of a file, from one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileDigest {
    pub length: u64,
    pub sha256: Sha256,
    /// Only for the images the virt-builder index lists; `None` when it
    /// was not asked for.
    pub sha512: Option<Sha512>,
}

impl FileDigest {
    /// Whether two digests describe the same bytes: the same length and
    /// SHA-256, and the same SHA-512 where both know it.
    pub fn same_bytes(&self, other: &FileDigest) -> bool {
        self.length == other.length
            && self.sha256 == other.sha256
            && match (self.sha512, other.sha512) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// A digest of a prefix followed by an image, from the image's one read:
/// LXD's image fingerprint, SHA-256 of its metadata tarball and then the
/// disk. Written by serde as both digests (the hash cache keeps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Combined {
    /// SHA-256 of the prefix (the metadata tarball) it was taken with.
    pub prefix: Sha256,
    /// SHA-256 of the prefix and the image.
    pub sha256: Sha256,
}

/// What one read of an image gives, or the hash cache kept of one: its
/// digests and what its bytes say it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    pub digest: FileDigest,
    pub info: ImageInfo,
    /// LXD's fingerprint, when the simplestreams catalog asked for it.
    pub lxd: Option<Combined>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_states_are_written_as_arrays_and_read_from_maps_too() {
        let state = FileState {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 4,
            ctime_ns: -5,
        };
        let written = serde_json::to_string(&state).unwrap();
        assert_eq!(written, "[1,2,3,4,-5]");
        assert_eq!(serde_json::from_str::<FileState>(&written).unwrap(), state);
        // As caches before this one wrote them.
        let old = r#"{"dev":1,"ino":2,"size":3,"mtime_ns":4,"ctime_ns":-5}"#;
        assert_eq!(serde_json::from_str::<FileState>(old).unwrap(), state);
    }

    /// Every byte value, both cases of each digit, through hex and serde;
    /// every byte that is not a digit, in either place of a pair, refused.
    #[test]
    fn hex_is_read_in_either_case_and_nothing_else() {
        let mut bytes = [0u8; 32];
        for high in 0..8u8 {
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = high * 32 + i as u8;
            }
            let digest = Sha256(bytes);
            let hex = digest.to_hex();
            assert_eq!(Sha256::from_hex(&hex), Some(digest));
            assert_eq!(Sha256::from_hex(&hex.to_uppercase()), Some(digest));
            let json = serde_json::to_string(&digest).unwrap();
            assert_eq!(json, format!("\"{hex}\""));
            assert_eq!(serde_json::from_str::<Sha256>(&json).unwrap(), digest);
            // Where the format is not read by people: the bytes.
            let packed = postcard::to_allocvec(&digest).unwrap();
            assert_eq!(packed, [&[32u8][..], &bytes].concat());
            assert_eq!(postcard::from_bytes::<Sha256>(&packed).unwrap(), digest);
        }
        let short = postcard::to_allocvec(&[0u8; 31][..]).unwrap();
        assert!(postcard::from_bytes::<Sha256>(&short).is_err());
        let zeros = "0".repeat(64);
        for c in (0..=255u8).filter(|c| !c.is_ascii_hexdigit()) {
            for at in [0, 1] {
                let mut text = zeros.clone().into_bytes();
                text[at] = c;
                let text = String::from_utf8_lossy(&text).into_owned();
                assert_eq!(Sha256::from_hex(&text), None, "{c:#x} at {at}");
            }
        }
        // Two bytes, neither ASCII, in 64.
        assert_eq!(Sha256::from_hex(&format!("é{}", &zeros[2..])), None);
        assert_eq!(Sha256::from_hex(&zeros[1..]), None);
        assert_eq!(Sha256::from_hex(&format!("{zeros}0")), None);
        assert!(serde_json::from_str::<Sha256>("\"abc\"").is_err());
    }

    #[test]
    fn digests_print_as_hex_and_sri() {
        let d = Sha256([0xab; 32]);
        assert_eq!(d.to_hex(), "ab".repeat(32));
        assert_eq!(Sha256::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Sha256::from_hex("ab"), None);
        assert_eq!(Sha256::from_hex(&"zz".repeat(32)), None);
        assert_eq!(Sha256::from_hex(&"+f".repeat(32)), None);
        assert_eq!(Sha256::from_hex(&"AB".repeat(32)), Some(d));
        // 64 bytes, not 64 characters: "é" is two bytes of UTF-8.
        assert_eq!(Sha256::from_hex(&"é".repeat(32)), None);
        let d512 = Sha512([0xcd; 64]);
        assert_eq!(Sha512::from_hex(&d512.to_hex()), Some(d512));
        assert_eq!(Sha512::from_hex(&d.to_hex()), None);
        assert_eq!(
            d.to_sri(),
            "sha256-q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="
        );
    }
}
