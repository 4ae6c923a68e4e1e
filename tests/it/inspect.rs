//! Format detection against the independent truth: images made by
//! `qemu-img create` / `convert` at test time, compared with what
//! `qemu-img info --output=json` says. Plus broken and truncated variants,
//! and a mutation fuzz loop over real images that must never panic.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Fixture, assert_success, stderr};
use vmcast_gen::inspect::{ImageInfo, inspect_bytes};
use vmcast_gen::model::ImageFormat;

tests! {
    formats_and_virtual_sizes_agree_with_qemu_img needs QEMU_IMG;
    parallels_original_header_counts_sectors_in_32_bits needs QEMU_IMG;
    xva_made_with_tar_shows_its_vm needs TAR;
    xz_with_a_dictionary_larger_than_the_inspected_head needs XZ;
    compressed_wrappers_show_the_format_inside needs QEMU_IMG, XZ, GZIP, ZSTD;
    truncated_headers_are_clear_errors_never_panics needs QEMU_IMG;
    ova_member_that_does_not_match_its_manifest;
    mutated_images_never_panic needs QEMU_IMG, TAR;
    extension_that_disagrees_with_content needs QEMU_IMG;
    image_with_a_backing_file needs QEMU_IMG;
    requirement_smaller_than_the_virtual_disk needs QEMU_IMG;
    ova_built_with_tar_and_a_sha1_manifest needs TAR, SHA1SUM;
}

/// Runs qemu-img in `dir` (`args` name the file, `name`).
fn qemu_img(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut full: Vec<&str> = args.to_vec();
    full.insert(1, "-q");
    let out = Command::new("qemu-img")
        .args(&full)
        .current_dir(dir)
        .output()
        .unwrap();
    assert_success(&out);
    path
}

/// What qemu-img says: (format, virtual size). `format` skips its probe,
/// which cannot see a fixed VHD (its only footer is at the end) and calls it
/// raw; we read the footer and say vhd.
fn oracle(path: &Path, format: Option<&str>) -> (String, u64) {
    let mut args = vec!["info", "--output=json"];
    if let Some(f) = format {
        args.extend(["-f", f]);
    }
    let out = Command::new("qemu-img")
        .args(&args)
        .arg(path)
        .output()
        .unwrap();
    assert_success(&out);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        info["format"].as_str().unwrap().to_owned(),
        info["virtual-size"].as_u64().unwrap(),
    )
}

/// Inspects in several chunkings; all must agree.
fn inspect(path: &Path) -> Result<ImageInfo, String> {
    let data = fs::read(path).unwrap();
    let whole = inspect_bytes(&data, 1 << 20);
    for chunk in [4097, 65_536 + 3, 3 << 20] {
        assert_eq!(
            inspect_bytes(&data, chunk),
            whole,
            "{path:?} in chunks of {chunk}"
        );
    }
    whole
}

fn qemu_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Vhd => "vpc",
        other => other.as_str(),
    }
}

/// A raw disk with some non-zero data, for `qemu-img convert`.
fn raw_with_data(dir: &Path) -> PathBuf {
    let path = dir.join("data.raw");
    let mut data = vec![0u8; 8 << 20];
    for (i, b) in data.iter_mut().enumerate().step_by(4093) {
        *b = (i % 251) as u8;
    }
    fs::write(&path, data).unwrap();
    path
}

fn formats_and_virtual_sizes_agree_with_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = raw_with_data(d);
    let raw = raw.to_str().unwrap();
    let cases: Vec<(&str, Vec<&str>, ImageFormat, Option<&str>)> = vec![
        (
            "v2.qcow2",
            vec!["create", "-f", "qcow2", "-o", "compat=0.10"],
            ImageFormat::Qcow2,
            Some("v2"),
        ),
        (
            "v3.qcow2",
            vec![
                "create",
                "-f",
                "qcow2",
                "-o",
                "compat=1.1,cluster_size=4096",
            ],
            ImageFormat::Qcow2,
            Some("v3"),
        ),
        (
            "compressed.qcow2",
            vec!["convert", "-c", "-O", "qcow2", raw],
            ImageFormat::Qcow2,
            Some("v3"),
        ),
        (
            "sparse.vmdk",
            vec!["create", "-f", "vmdk", "-o", "subformat=monolithicSparse"],
            ImageFormat::Vmdk,
            Some("monolithicSparse"),
        ),
        (
            "stream.vmdk",
            vec![
                "convert",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
                raw,
            ],
            ImageFormat::Vmdk,
            Some("streamOptimized"),
        ),
        (
            "fixed.vhd",
            vec!["create", "-f", "vpc", "-o", "subformat=fixed"],
            ImageFormat::Vhd,
            Some("fixed"),
        ),
        (
            "dynamic.vhd",
            vec!["convert", "-O", "vpc", "-o", "subformat=dynamic", raw],
            ImageFormat::Vhd,
            Some("dynamic"),
        ),
        (
            "disk.vhdx",
            vec!["create", "-f", "vhdx"],
            ImageFormat::Vhdx,
            None,
        ),
        (
            "disk.raw",
            vec!["create", "-f", "raw"],
            ImageFormat::Raw,
            None,
        ),
        (
            "disk.hds",
            vec!["create", "-f", "parallels"],
            ImageFormat::Parallels,
            None,
        ),
        (
            "data.hds",
            vec!["convert", "-O", "parallels", raw],
            ImageFormat::Parallels,
            None,
        ),
    ];
    for (name, mut args, format, subformat) in cases {
        // `create` needs a size after the file name; convert takes it from the source.
        let created = args[0] == "create";
        let path = d.join(name);
        let mut cmd_args: Vec<String> = args.drain(..).map(str::to_owned).collect();
        cmd_args.insert(1, "-q".into());
        let mut cmd = Command::new("qemu-img");
        cmd.args(&cmd_args).arg(&path);
        if created {
            cmd.arg(if format == ImageFormat::Vhd {
                "8M"
            } else {
                "3G"
            });
        }
        assert_success(&cmd.output().unwrap());
        let info = inspect(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let forced = (name == "fixed.vhd").then_some("vpc");
        let (qformat, qsize) = oracle(&path, forced);
        assert_eq!(qemu_name(info.format), qformat, "{name}");
        assert_eq!(info.format, format, "{name}");
        assert_eq!(
            info.virtual_size,
            Some(qsize),
            "{name}: qemu-img says {qsize}"
        );
        assert_eq!(info.subformat.as_deref(), subformat, "{name}");
        assert_eq!(info.detected, format != ImageFormat::Raw, "{name}");
    }
}

/// qemu-img writes the extended Parallels header (`WithouFreSpacExt`, a
/// 64-bit sector count); the original one (`WithoutFreeSpace`) counts in 32
/// bits. The same 3 TiB header under the original magic is a 1 TiB disk to
/// qemu, and must be to us.
fn parallels_original_header_counts_sectors_in_32_bits() {
    let dir = tempfile::tempdir().unwrap();
    let path = qemu_img(
        dir.path(),
        "big.hds",
        &["create", "-f", "parallels", "big.hds", "3T"],
    );
    assert_eq!(inspect(&path).unwrap().virtual_size, Some(3 << 40));
    let mut data = fs::read(&path).unwrap();
    data[..16].copy_from_slice(b"WithoutFreeSpace");
    fs::write(&path, &data).unwrap();
    let (qformat, qsize) = oracle(&path, None);
    assert_eq!((qformat.as_str(), qsize), ("parallels", 1 << 40));
    let info = inspect(&path).unwrap();
    assert_eq!(
        (info.format, info.virtual_size),
        (ImageFormat::Parallels, Some(qsize))
    );
    // A header version qemu does not read, and an image left open.
    data[16] = 3;
    assert_eq!(
        inspect_bytes(&data, 4096).unwrap_err(),
        "unsupported Parallels header version 3 (qemu reads version 2)"
    );
    data[16] = 2;
    data[44..48].copy_from_slice(&0x746F_6E59u32.to_le_bytes());
    assert!(
        inspect_bytes(&data, 4096)
            .unwrap_err()
            .starts_with("Parallels image was not closed cleanly"),
    );
}

/// An XVA as `xe vm-export` lays it out: `ova.xml` first, then each disk's
/// blocks under `Ref:<n>/` with their checksums. `ova.xml` holds the
/// database records as one XML-RPC value.
fn xva(dir: &Path, name: &str, ova_xml: &str) -> PathBuf {
    fs::write(dir.join("ova.xml"), ova_xml).unwrap();
    fs::create_dir_all(dir.join("Ref:1")).unwrap();
    fs::write(dir.join("Ref:1/00000000"), vec![0x5a_u8; 4096]).unwrap();
    fs::write(
        dir.join("Ref:1/00000000.checksum"),
        "1e0eb2a5f4a1cd9c3b8f0e1c4e5a23c07d5bd3e4",
    )
    .unwrap();
    let out = Command::new("tar")
        .args([
            "--format=ustar",
            "--owner=0",
            "--group=0",
            "-cf",
            name,
            "ova.xml",
            "Ref:1/00000000",
            "Ref:1/00000000.checksum",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_success(&out);
    dir.join(name)
}

/// The records of one VM with one 10 GiB disk and an empty CD drive.
const OVA_XML: &str = r#"<value><struct>
<member><name>version</name><value><struct>
  <member><name>hostname</name><value>xcp-ng-1</value></member>
  <member><name>export_vsn</name><value>2</value></member>
</struct></value></member>
<member><name>objects</name><value><array><data>
<value><struct>
  <member><name>class</name><value>VM</value></member>
  <member><name>id</name><value>Ref:0</value></member>
  <member><name>snapshot</name><value><struct>
    <member><name>name_label</name><value>webapp 1.5.0</value></member>
    <member><name>is_a_template</name><value><boolean>0</boolean></value></member>
    <member><name>is_a_snapshot</name><value><boolean>0</boolean></value></member>
    <member><name>memory_static_max</name><value>2147483648</value></member>
    <member><name>VCPUs_max</name><value>2</value></member>
    <member><name>VBDs</name><value><array><data>
      <value>Ref:2</value><value>Ref:3</value>
    </data></array></value></member>
    <member><name>other_config</name><value><struct/></value></member>
  </struct></value></member>
</struct></value>
<value><struct>
  <member><name>class</name><value>VBD</value></member>
  <member><name>id</name><value>Ref:2</value></member>
  <member><name>snapshot</name><value><struct>
    <member><name>VM</name><value>Ref:0</value></member>
    <member><name>VDI</name><value>Ref:1</value></member>
    <member><name>type</name><value>Disk</value></member>
  </struct></value></member>
</struct></value>
<value><struct>
  <member><name>class</name><value>VBD</value></member>
  <member><name>id</name><value>Ref:3</value></member>
  <member><name>snapshot</name><value><struct>
    <member><name>VM</name><value>Ref:0</value></member>
    <member><name>VDI</name><value>OpaqueRef:NULL</value></member>
    <member><name>type</name><value>CD</value></member>
  </struct></value></member>
</struct></value>
<value><struct>
  <member><name>class</name><value>VDI</value></member>
  <member><name>id</name><value>Ref:1</value></member>
  <member><name>snapshot</name><value><struct>
    <member><name>name_label</name><value>webapp root</value></member>
    <member><name>virtual_size</name><value>10737418240</value></member>
  </struct></value></member>
</struct></value>
</data></array></value></member>
</struct></value>
"#;

fn xva_made_with_tar_shows_its_vm() {
    let dir = tempfile::tempdir().unwrap();
    let path = xva(dir.path(), "webapp.xva", OVA_XML);
    let info = inspect(&path).unwrap();
    assert_eq!(info.format, ImageFormat::Xva);
    assert_eq!(info.virtual_size, Some(10 << 30));
    let machine = info.machine.unwrap();
    assert_eq!(machine.name.as_deref(), Some("webapp 1.5.0"));
    assert_eq!((machine.cpus, machine.memory_mib), (Some(2), Some(2048)));
    assert_eq!(
        machine
            .disks
            .iter()
            .map(|d| (d.capacity, d.file.as_deref()))
            .collect::<Vec<_>>(),
        [(10 << 30, None)]
    );
    // Cut inside ova.xml, in the disk's tar header, inside its block, and
    // before it.
    let data = fs::read(&path).unwrap();
    let disk_header = 512 + OVA_XML.len().div_ceil(512) * 512;
    for (cut, expected) in [
        (700, "XVA: truncated inside a member"),
        (disk_header + 100, "XVA: truncated inside a tar header"),
        (disk_header + 512 + 1000, "XVA: truncated inside a member"),
        (
            disk_header,
            "XVA: ova.xml lists the VM's disk Ref:1, whose blocks (Ref:1/...) the archive lacks",
        ),
    ] {
        assert_eq!(
            inspect_bytes(&data[..cut], 4096).unwrap_err(),
            expected,
            "cut at {cut}"
        );
    }
    // ova.xml that is not XML-RPC.
    let bad = xva(
        dir.path(),
        "bad.xva",
        &OVA_XML.replace("<value>Ref:2</value>", "<ref>Ref:2</ref>"),
    );
    assert_eq!(
        inspect(&bad).unwrap_err(),
        "XVA: ova.xml is not an XML-RPC value: expected <value>, found <ref>"
    );
}

/// An xz stream whose dictionary is larger than what the first 4 MiB of
/// it decompress to (`xz -9` has 64 MiB): the inspection must still see
/// the data inside. A decoder that emits output only a dictionary at a
/// time saw nothing, and refused valid images as "not a valid xz stream".
fn xz_with_a_dictionary_larger_than_the_inspected_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    // 12 MB of hex text: it halves under xz, so the file is over 4 MiB.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let text: Vec<u8> = (0..12_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b"0123456789abcdef"[(state & 15) as usize]
        })
        .collect();
    fs::write(&path, &text).unwrap();
    assert_success(
        &Command::new("xz")
            .args(["-k", "-f", "-T1", "--lzma2=preset=0,dict=64MiB"])
            .arg(&path)
            .output()
            .unwrap(),
    );
    let xz = dir.path().join("disk.raw.xz");
    assert!(fs::metadata(&xz).unwrap().len() > 4 << 20);
    let info = inspect(&xz).unwrap();
    assert_eq!(info.format, ImageFormat::Raw);
    assert_eq!(info.compression.map(|c| c.as_str()), Some("xz"));
    assert_eq!(info.virtual_size, Some(12_000_000));
}

fn compressed_wrappers_show_the_format_inside() {
    let dir = tempfile::tempdir().unwrap();
    qemu_img(
        dir.path(),
        "disk.qcow2",
        &["create", "-f", "qcow2", "disk.qcow2", "2G"],
    );
    let plain = dir.path().join("disk.qcow2");
    for (tool, flag, compression) in [
        ("xz", "-k", "xz"),
        ("gzip", "-k", "gzip"),
        ("zstd", "-k", "zstd"),
    ] {
        assert_success(
            &Command::new(tool)
                .args([flag, "-f"])
                .arg(&plain)
                .output()
                .unwrap(),
        );
        let ext = match tool {
            "xz" => "xz",
            "gzip" => "gz",
            _ => "zst",
        };
        let info = inspect(&dir.path().join(format!("disk.qcow2.{ext}"))).unwrap();
        assert_eq!(info.format, ImageFormat::Qcow2, "{tool}");
        assert_eq!(info.compression.map(|c| c.as_str()), Some(compression));
        assert_eq!(info.virtual_size, Some(2 << 30), "{tool}");
    }
}

fn truncated_headers_are_clear_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let qcow2 = qemu_img(d, "t.qcow2", &["create", "-f", "qcow2", "t.qcow2", "1G"]);
    let vmdk = qemu_img(d, "t.vmdk", &["create", "-f", "vmdk", "t.vmdk", "1G"]);
    let vhd = qemu_img(d, "t.vhd", &["create", "-f", "vpc", "t.vhd", "64M"]);
    let vhdx = qemu_img(d, "t.vhdx", &["create", "-f", "vhdx", "t.vhdx", "1G"]);
    let hds = qemu_img(d, "t.hds", &["create", "-f", "parallels", "t.hds", "1G"]);
    let ova = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("example-site/releases/dbnode/2.0.0/dbnode-2.0.0.ova");
    let cases: Vec<(&Path, Vec<usize>, &str)> = vec![
        (&qcow2, vec![4, 10, 23, 50], "truncated qcow2 header"),
        (&vmdk, vec![4, 13, 30], "truncated VMDK header"),
        (&vhd, vec![9, 100, 511], "truncated VHD footer"),
        (
            &vhdx,
            vec![8, 4096, 200 << 10, 1 << 20, (1 << 20) + 100],
            "VHDX",
        ),
        (&ova, vec![600, 2000, 100_000], "OVA: truncated"),
        (&hds, vec![16, 20, 36, 47], "truncated Parallels header"),
    ];
    for (path, cuts, expected) in cases {
        let data = fs::read(path).unwrap();
        for cut in cuts {
            let result = inspect_bytes(&data[..cut.min(data.len())], 4096);
            let err = result.expect_err(&format!("{path:?} cut at {cut} was accepted"));
            assert!(err.contains(expected), "{path:?} cut at {cut}: {err}");
        }
    }
}

fn ova_member_that_does_not_match_its_manifest() {
    let ova = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("example-site/releases/dbnode/2.0.0/dbnode-2.0.0.ova");
    let mut data = fs::read(ova).unwrap();
    let good = inspect_bytes(&data, 1 << 20).unwrap();
    let machine = good.machine.as_ref().unwrap();
    assert_eq!((machine.cpus, machine.memory_mib), (Some(2), Some(2048)));
    assert_eq!(
        machine.disks[0].file.as_deref(),
        Some("dbnode-2.0.0-disk1.vmdk")
    );
    // A byte inside the disk member: the OVA's own .mf catches it.
    data[150_000] ^= 0x01;
    let err = inspect_bytes(&data, 1 << 20).unwrap_err();
    assert!(
        err.starts_with(
            "OVA: \"dbnode-2.0.0-disk1.vmdk\" does not match the archive's manifest (SHA256 "
        ),
        "{err}"
    );
}

/// A deterministic mutation fuzzer over real images: flips, truncations and
/// overwrites with interesting values. The inspector may refuse a mutant
/// but must never panic. `VMCAST_FUZZ_ITERATIONS` raises the count.
fn mutated_images_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-site/releases");
    for f in [
        "webapp/1.4.0/webapp-1.4.0.qcow2",
        "webapp/1.4.0/webapp-1.4.0.vmdk",
        "webapp/1.3.2/webapp-1.3.2.vhdx.xz",
        "dbnode/1.9.0/dbnode-1.9.0.vhd",
        "dbnode/2.0.0/dbnode-2.0.0.ova",
    ] {
        let data = fs::read(example.join(f)).unwrap();
        seeds.push(data[..data.len().min(300 << 10)].to_vec());
    }
    let vhdx = qemu_img(d, "f.vhdx", &["create", "-f", "vhdx", "f.vhdx", "1G"]);
    let data = fs::read(vhdx).unwrap();
    seeds.push(data[..data.len().min(1_200_000)].to_vec());
    let hds = qemu_img(d, "f.hds", &["create", "-f", "parallels", "f.hds", "1G"]);
    let data = fs::read(hds).unwrap();
    seeds.push(data[..data.len().min(300 << 10)].to_vec());
    let xva = xva(d, "f.xva", OVA_XML);
    seeds.push(fs::read(xva).unwrap());
    let iterations: usize = std::env::var("VMCAST_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let interesting: [u64; 6] = [0, 1, 0x7f, 0xff, u32::MAX as u64, u64::MAX];
    for i in 0..iterations {
        let seed = &seeds[i % seeds.len()];
        let mut data = seed.clone();
        for _ in 0..(1 + next() % 4) {
            let at = (next() as usize) % data.len().max(1);
            match next() % 4 {
                0 => data[at] ^= 1 << (next() % 8),
                1 => data.truncate(at),
                2 => {
                    let v = interesting[(next() % 6) as usize].to_le_bytes();
                    let end = (at + 8).min(data.len());
                    data[at..end].copy_from_slice(&v[..end - at]);
                }
                _ => {
                    let v = interesting[(next() % 6) as usize].to_be_bytes();
                    let end = (at + 8).min(data.len());
                    data[at..end].copy_from_slice(&v[..end - at]);
                }
            }
            if data.is_empty() {
                break;
            }
        }
        let _ = inspect_bytes(&data, 1 + (next() as usize % 70_000));
    }
    eprintln!(
        "fuzz: {iterations} mutants of {} seeds, no panic",
        seeds.len()
    );
}

// ---- what the build does with it ----

fn add_image(fixture: &Fixture, name: &str, args: &[&str]) {
    let dir = fixture.path("releases/webapp/1.1.0");
    qemu_img(&dir, name, args);
}

fn extension_that_disagrees_with_content() {
    let fixture = Fixture::new("ok-minimal");
    add_image(
        &fixture,
        "disk.vmdk",
        &["create", "-f", "qcow2", "disk.vmdk", "64M"],
    );
    let out = fixture.build(&[]);
    assert_eq!(
        stderr(&out),
        "error: releases/webapp/1.1.0/disk.vmdk: declared vmdk (by its name or [image] in \
         releases/webapp/1.1.0/release.toml) but the content is qcow2\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

fn image_with_a_backing_file() {
    let fixture = Fixture::new("ok-minimal");
    add_image(
        &fixture,
        "base.qcow2",
        &["create", "-f", "qcow2", "base.qcow2", "64M"],
    );
    let dir = fixture.path("releases/webapp/1.1.0");
    let out = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "overlay.qcow2",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_success(&out);
    let out = fixture.build(&[]);
    assert_eq!(
        stderr(&out),
        "error: releases/webapp/1.1.0/overlay.qcow2: qcow2 image has a backing file (\"base.qcow2\"); \
         it cannot be used alone: flatten it first (qemu-img convert -O qcow2)\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

fn requirement_smaller_than_the_virtual_disk() {
    let fixture = Fixture::new("ok-minimal");
    add_image(
        &fixture,
        "big.qcow2",
        &["create", "-f", "qcow2", "big.qcow2", "20G"],
    );
    let notes = fixture.path("releases/webapp/1.1.0/release.toml");
    let mut text = fs::read_to_string(&notes).unwrap();
    text.push_str("\n[requirements]\nmin_disk_gib = 2\n");
    fs::write(&notes, text).unwrap();
    let out = fixture.build(&[]);
    assert_eq!(
        stderr(&out),
        "error: releases/webapp/1.1.0/release.toml: requirements say min_disk_gib = 2, but big.qcow2 \
         has a 20.0 GiB virtual disk (21474836480 bytes); the minimum must be at least 20 GiB\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

/// An OVA made here with `tar`, in the order the OVF spec gives (descriptor,
/// manifest, disks), with a SHA-1 manifest; then one whose manifest lies.
fn ova_built_with_tar_and_a_sha1_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("example-site/releases/dbnode/2.0.0/dbnode-2.0.0.ova");
    let out = Command::new("tar")
        .arg("-xf")
        .arg(&example)
        .current_dir(d)
        .output()
        .unwrap();
    assert_success(&out);
    let disk = "dbnode-2.0.0-disk1.vmdk";
    let sha1 = |name: &str| {
        let out = Command::new("sha1sum")
            .arg(name)
            .current_dir(d)
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let pack = |manifest: &str, ova: &str| {
        fs::write(d.join("dbnode.mf"), manifest).unwrap();
        let out = Command::new("tar")
            .args([
                "--format=ustar",
                "--owner=0",
                "--group=0",
                "-cf",
                ova,
                "dbnode.ovf",
                "dbnode.mf",
                disk,
            ])
            .current_dir(d)
            .output()
            .unwrap();
        assert_success(&out);
        inspect_bytes(&fs::read(d.join(ova)).unwrap(), 65_537)
    };
    let good = format!(
        "SHA1(dbnode.ovf)= {}\nSHA1({disk})= {}\n",
        sha1("dbnode.ovf"),
        sha1(disk)
    );
    let info = pack(&good, "good.ova").unwrap();
    assert_eq!(info.format, ImageFormat::Ova);
    assert_eq!(info.virtual_size, Some(512 << 20));
    let lying = good.replace(&sha1(disk), &"0".repeat(40));
    let err = pack(&lying, "bad.ova").unwrap_err();
    assert!(
        err.starts_with(&format!(
            "OVA: \"{disk}\" does not match the archive's manifest (SHA1 "
        )),
        "{err}"
    );
}
