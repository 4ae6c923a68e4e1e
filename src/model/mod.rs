//! The validated values every stage shares: newtypes that cannot hold an
//! invalid version, name, arch, digest or path, or a title that breaks its
//! line, and the release model. The
//! ground floor: it imports nothing of the crate but the cloud catalogs'
//! ids, which releases name.

mod digest;
mod image;
mod names;
mod release;
mod supply;

pub use digest::{
    Combined, Digested, FileDigest, FileId, FileState, KeyFile, Seen, Sha256, Sha512,
    world_readable,
};
pub use image::{
    Compression, Image, ImageFormat, ImageInfo, ImageSource, Machine, OvaDisk, VagrantBox,
    ZsyncFile,
};
pub use names::{Arch, FileName, Line, Name, RelPath, Version, hides_a_separator};
pub use release::{
    Appliance, CloudImage, Firmware, ImageLayout, Release, ReleaseInfo, Requirements,
};
pub use supply::{Format as SupplyFormat, Kind as SupplyKind, Signing, SupplyFile};

/// The largest text file of a site (a feed, the manifest, a key, a
/// signature) and the largest release.toml: `build` refuses to write one
/// larger, and `verify` refuses to read one larger, so the two agree.
pub const MAX_TEXT_FILE: u64 = 64 << 20;
