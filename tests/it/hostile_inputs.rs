//! A hostile co-tenant on the build machine: files swapped between the
//! scan and the read, sidecars that are FIFOs or devices, sidecars that
//! lie about what an image is, and values in a release.toml that would
//! break into the lines of a signed index. Each attack is performed for
//! real.

use std::fs;
use std::os::unix::fs::symlink;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Fixture, assert_success, stderr};

tests! {
    image_swapped_for_a_symlink_to_the_key_is_never_published;
    fifo_and_dev_zero_sidecars_are_refused_at_once;
    a_forged_sidecar_cannot_make_random_bytes_a_qcow2;
    a_sparse_image_stays_sparse_in_the_output;
    arch_with_a_newline_adds_no_section_to_the_virt_builder_index;
    titles_and_notes_that_would_break_a_line_are_refused_at_their_place;
    lines_of_notes_cannot_start_a_section_of_the_virt_builder_index needs VIRT_BUILDER;
    secret_key_in_the_release_tree_is_never_published;
    dense_notes_render_in_bounded_memory;
    notes_past_the_text_limit_are_refused_in_bounded_memory;
}

const IMAGE: &str = "releases/webapp/1.1.0/webapp-1.1.0.raw";

/// While builds run in a loop, the image is swapped atomically between a
/// regular file and a symbolic link to the secret key. No build may publish
/// the key's bytes: each one publishes the real image or fails clearly.
fn image_swapped_for_a_symlink_to_the_key_is_never_published() {
    let fixture = Fixture::new("ok-minimal");
    let key = fixture.tmp.path().join("fixtures/known-answer/kat.key");
    let key_bytes = fs::read(&key).unwrap();
    let image = fixture.path(IMAGE);
    let real = fs::read(&image).unwrap();
    let dir = image.parent().unwrap().to_path_buf();
    // Two ready-made entries, renamed over the image in turn (rename is
    // atomic): the attacker never leaves the name missing.
    let as_file = dir.join(".swap-file");
    let as_link = dir.join(".swap-link");
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, image) = (Arc::clone(&stop), image.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                fs::write(&as_file, &real).unwrap();
                fs::rename(&as_file, &image).unwrap();
                let _ = fs::remove_file(&as_link);
                symlink(&key, &as_link).unwrap();
                fs::rename(&as_link, &image).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let (mut built, mut refused) = (0, 0);
    for _ in 0..40 {
        let out = fixture.run(&["build", "--no-cache"], &[]);
        if out.status.success() {
            built += 1;
            let published = fixture.path("public/images/webapp/1.1.0/webapp-1.1.0.raw");
            assert_ne!(
                fs::read(&published).unwrap(),
                key_bytes,
                "the key was published"
            );
            let sums = fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap();
            let key_digest = vmcast_gen::model::Sha256::of(&key_bytes).to_hex();
            assert!(
                !sums.contains(&key_digest),
                "the key's digest was published"
            );
        } else {
            refused += 1;
            let err = stderr(&out);
            assert!(
                err.starts_with("error: releases/webapp/1.1.0/webapp-1.1.0.raw"),
                "{err}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 40, "the race barely ran: {swaps} swaps");
    // Both outcomes happen; neither leaks.
    assert!(refused > 0, "built {built}, refused {refused}");
}

/// Sidecars that are a FIFO, or a symbolic link to /dev/zero, must not hang
/// or grow the build: each is skipped with a warning and the image is read.
fn fifo_and_dev_zero_sidecars_are_refused_at_once() {
    let fixture = Fixture::new("ok-minimal");
    fixture.configure("trust_sidecars = true\n");
    let fifo = fixture.path("releases/webapp/1.1.0/webapp-1.1.0.raw.vmcast-hash");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    symlink(
        "/dev/zero",
        fixture.path("releases/webapp/1.0.0/webapp-1.0.0.raw.vmcast-hash"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmcast-gen"))
        .args(["build", "--no-cache"])
        .current_dir(&fixture.root)
        .env_remove("VMCAST_SECRET_KEY")
        .env("SOURCE_DATE_EPOCH", crate::common::EPOCH)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the build hung on a FIFO or /dev/zero sidecar");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(
        stderr(&out),
        "warning: releases/webapp/1.1.0/webapp-1.1.0.raw.vmcast-hash: is not a regular file \
         (it is a FIFO); the image is hashed instead\n\
         warning: releases/webapp/1.0.0/webapp-1.0.0.raw.vmcast-hash: is a symbolic link, \
         which is not allowed here; the image is hashed instead\n"
    );
}

/// A forged sidecar may claim a digest (that is all a sidecar is trusted
/// for), but not what the file is: random bytes named .qcow2 stay random
/// bytes, and the build refuses them as it would without the sidecar.
fn a_forged_sidecar_cannot_make_random_bytes_a_qcow2() {
    let fixture = Fixture::new("ok-minimal");
    fixture.configure("trust_sidecars = true\n");
    let dir = fixture.path("releases/webapp/1.1.0");
    fs::remove_file(dir.join("webapp-1.1.0.raw")).unwrap();
    let image = dir.join("webapp-1.1.0.qcow2");
    let noise: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(&image, &noise).unwrap();
    assert_success(&fixture.run(&["hash", image.to_str().unwrap()], &[]));
    // The forger's sidecar, in the old format that carried image facts.
    let sidecar = dir.join("webapp-1.1.0.qcow2.vmcast-hash");
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&sidecar).unwrap()).unwrap();
    json["info"] = serde_json::json!({"format": "qcow2", "detected": true,
        "compression": null, "virtual_size": 1073741824u64, "subformat": "v3",
        "cluster_size": 65536, "cluster_compression": null, "machine": null});
    fs::write(&sidecar, json.to_string()).unwrap();
    let out = fixture.run(&["build", "--no-cache"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "error: releases/webapp/1.1.0/webapp-1.1.0.qcow2: declared qcow2 (by its name or \
             [image] in releases/webapp/1.1.0/release.toml) but the content is raw (no image header)"
        ),
        "{}",
        stderr(&out)
    );
    // A well-formed sidecar is used for the digest, and the content is
    // still read from the file's own headers.
    assert_success(&fixture.run(&["hash", image.to_str().unwrap()], &[]));
    let out = fixture.run(&["build", "--no-cache"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: releases/webapp/1.1.0/webapp-1.1.0.qcow2: declared qcow2 (by its name or \
         [image] in releases/webapp/1.1.0/release.toml) but the content is raw (no image header)\n"
    );
}

/// A copy keeps holes: a sparse raw image stays sparse in the output,
/// whether it is copied from the hashing read (cold) or by the kernel from
/// a known digest (warm, into a new output).
fn a_sparse_image_stays_sparse_in_the_output() {
    use std::os::unix::fs::MetadataExt;
    let fixture = Fixture::new("ok-minimal");
    let image = fixture.path(IMAGE);
    let file = fs::File::create(&image).unwrap();
    file.set_len(1 << 30).unwrap();
    std::io::Write::write_all(&mut &file, b"not all zeros").unwrap();
    drop(file);
    let cache = fixture.tmp.path().join("cache");
    for out in ["public", "public2"] {
        let built = fixture.run(
            &[
                "build",
                "--cache-dir",
                cache.to_str().unwrap(),
                "--out",
                out,
            ],
            &[],
        );
        assert_success(&built);
        let copy = fixture.path(&format!("{out}/images/webapp/1.1.0/webapp-1.1.0.raw"));
        let meta = fs::metadata(&copy).unwrap();
        assert_eq!(meta.len(), 1 << 30);
        let allocated = meta.blocks() * 512;
        assert!(
            allocated < 16 << 20,
            "{out}: the 1 GiB sparse image takes {allocated} bytes in the output"
        );
    }
}

/// The arch went verbatim into virt-builder's index: a line break in it
/// added a whole section, with a `file=` outside the site and a chosen
/// checksum, to the signed index (the fixture's README shows what
/// `virt-builder --list` made of it). An arch is now a token, refused at
/// its line and column wherever it is written, and nothing is published.
fn arch_with_a_newline_adds_no_section_to_the_virt_builder_index() {
    let fixture = Fixture::new("arch-with-a-newline");
    let notes = fixture.path("releases/webapp/1.0.0/release.toml");
    let text = fs::read_to_string(&notes).unwrap();
    let line = text.lines().find(|l| l.starts_with("arch = ")).unwrap();
    // As the file writes it, between the quotes: the message escapes the
    // line breaks the same way.
    let written = &line["arch = \"".len()..line.len() - 1];
    let refused = |at: &str| {
        format!(
            "error: releases/webapp/1.0.0/release.toml:{at}: invalid arch `{written}`: it must \
             start with a letter or digit and hold only lower-case letters, digits and . _ -\n"
        )
    };
    crate::cli::assert_build_fails(&fixture, &refused("9:8"));
    let check = fixture.run(&["check"], &[]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        stderr(&check).starts_with(&refused("9:8")),
        "{}",
        stderr(&check)
    );

    // The same arch for one image, then for a cloud image.
    let head = text.split("[requirements]").next().unwrap();
    for (table, at) in [
        ("[image.\"webapp-1.0.0.raw\"]\n", "9:8"),
        (
            "[[cloud_image]]\nprovider = \"aws\"\nregion = \"eu-west-1\"\n\
             id = \"ami-0abc1234def567890\"\n",
            "12:8",
        ),
    ] {
        fs::write(&notes, format!("{head}{table}{line}\n")).unwrap();
        crate::cli::assert_build_fails(&fixture, &refused(at));
    }
}

/// A title reaches virt-builder's `name=` and every feed: a line break in
/// it is refused at its place, in release.toml and in the config, as is a
/// control character in the notes (only tabs and line breaks are theirs).
fn titles_and_notes_that_would_break_a_line_are_refused_at_their_place() {
    let fixture = Fixture::new("virt-builder");
    let notes = fixture.path("releases/webapp/1.0.0/release.toml");
    let text = fs::read_to_string(&notes).unwrap();
    fs::write(
        &notes,
        text.replace("osinfo", "title = \"Web\\r[evil]\"\nosinfo"),
    )
    .unwrap();
    crate::cli::assert_build_fails(
        &fixture,
        "error: releases/webapp/1.0.0/release.toml:3:9: title `Web\\r[evil]` holds a carriage \
         return (CR): it must stay on one line\n",
    );
    fs::write(
        &notes,
        text.replace("First release.", "First\\u0000 release."),
    )
    .unwrap();
    crate::cli::assert_build_fails(
        &fixture,
        "error: releases/webapp/1.0.0/release.toml:4:9: `notes` hold the control character \
         U+0000; only tabs and line breaks may be written\n",
    );
    fs::write(&notes, text).unwrap();
    fixture.configure("\n[appliances.webapp]\ntitle = \"Web\\napp\"\n");
    crate::cli::assert_build_fails(
        &fixture,
        "error: vmcast.toml:10:9: title `Web\\napp` holds a line feed (LF): it must stay on one \
         line\n",
    );
}

/// Notes are virt-builder's one multi-line value: every further line starts
/// with a space, so none can start a section or key. A lone CR ends a line
/// as LF does; none is left for a reader that breaks lines there.
fn lines_of_notes_cannot_start_a_section_of_the_virt_builder_index() {
    let fixture = Fixture::new("virt-builder");
    let notes = fixture.path("releases/webapp/1.0.0/release.toml");
    let text = fs::read_to_string(&notes).unwrap();
    let hostile = "First release.\r[evil]\rfile=../../elsewhere/evil.raw\r\narch=x86_64\n[x]";
    fs::write(
        &notes,
        text.replace("First release.", &hostile.replace('\r', "\\r")),
    )
    .unwrap();
    assert_success(&fixture.build(&[]));
    let site = fixture.path("public");
    let index = fs::read_to_string(site.join("virt-builder/index")).unwrap();
    assert!(!index.contains('\r'), "{index:?}");
    assert!(
        index.contains(
            "notes=First release.\n [evil]\n file=../../elsewhere/evil.raw\n arch=x86_64\n [x]\n \
             \n - A raw disk, xz-compressed.\n"
        ),
        "{index}"
    );
    let validated = Command::new("virt-index-validate")
        .arg("virt-builder/index")
        .current_dir(&site)
        .output()
        .unwrap();
    assert_success(&validated);
    let home = fixture.tmp.path().join("vb");
    let listed = Command::new("timeout")
        .arg("120")
        .arg("virt-builder")
        .args(["--list", "--list-format", "json", "--no-check-signature"])
        .arg(format!(
            "--source=file://{}/virt-builder/index",
            site.display()
        ))
        .env("HOME", &home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CONFIG_DIRS", "/nonexistent")
        .output()
        .unwrap();
    assert_success(&listed);
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let templates: Vec<(&str, &str)> = json["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["os-version"].as_str().unwrap(),
                t["notes"]["C"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        templates,
        [
            (
                "webapp-1.1.0",
                "Release 1.1.0.\n\n- A qcow2 disk, and the same raw disk in gzip for other tools."
            ),
            (
                "webapp-1.0.0",
                "First release.\n[evil]\nfile=../../elsewhere/evil.raw\narch=x86_64\n[x]\n\n\
                 - A raw disk, xz-compressed."
            ),
        ]
    );
}

const KEY_IN_TREE: &str = "warning: releases/vmcast.key: the secret key lies inside \
     releases_dir releases, which `build` publishes images from: no file there that is the key \
     is published, but whoever can write there can try; move the key out\n";

/// With the signing key inside the release tree, whoever can write the
/// tree but not read the key made a name there lead to it, and the key was
/// published as an image, mode 0644, listed in the signed SHA256SUMS. No
/// file with a secret key's device and inode is published now, whatever
/// name leads to it; the key in the tree is warned about.
fn secret_key_in_the_release_tree_is_never_published() {
    let fixture = Fixture::new("secret-key-in-release-tree");
    let out = fixture.build(&[]);
    assert_success(&out);
    assert_eq!(stderr(&out), KEY_IN_TREE);
    fs::remove_dir_all(fixture.path("public")).unwrap();

    let key = fixture.path("releases/vmcast.key");
    let disk = fixture.path("releases/webapp/1.0.0/webapp-1.0.0-disk.raw");
    let refused = |name: &str, key: &str| {
        format!(
            "error: releases/webapp/1.0.0/{name}: is the secret key {key} (the same device and \
             inode); refusing to publish it\n"
        )
    };
    symlink("../../vmcast.key", &disk).unwrap();
    crate::cli::assert_build_fails(
        &fixture,
        &format!(
            "{KEY_IN_TREE}{}",
            refused("webapp-1.0.0-disk.raw", "releases/vmcast.key")
        ),
    );
    let check = fixture.run(&["check"], &[]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        stderr(&check),
        format!(
            "{KEY_IN_TREE}{}",
            refused("webapp-1.0.0-disk.raw", "releases/vmcast.key")
        )
    );
    fs::remove_file(&disk).unwrap();
    fs::hard_link(&key, &disk).unwrap();
    crate::cli::assert_build_fails(
        &fixture,
        &format!(
            "{KEY_IN_TREE}{}",
            refused("webapp-1.0.0-disk.raw", "releases/vmcast.key")
        ),
    );
    fs::remove_file(&disk).unwrap();

    // The key itself, named as an image.
    let named = fixture.path("releases/webapp/1.0.0/signing.raw");
    fs::rename(&key, &named).unwrap();
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    fs::write(
        fixture.path("vmcast.toml"),
        config.replace("releases/vmcast.key", "releases/webapp/1.0.0/signing.raw"),
    )
    .unwrap();
    crate::cli::assert_build_fails(
        &fixture,
        &format!(
            "{}{}",
            KEY_IN_TREE.replace("releases/vmcast.key", "releases/webapp/1.0.0/signing.raw"),
            refused("signing.raw", "releases/webapp/1.0.0/signing.raw")
        ),
    );
    fs::rename(&named, &key).unwrap();
    fs::write(fixture.path("vmcast.toml"), &config).unwrap();

    // The OpenPGP key, and a key given as text while the config names the
    // file: refused all the same.
    let openpgp = fixture.path("releases/openpgp-secret.asc");
    fs::copy(
        fixture
            .tmp
            .path()
            .join("fixtures/known-answer/openpgp-secret.asc"),
        &openpgp,
    )
    .unwrap();
    fixture.configure("\n[catalogs]\nopenpgp_key = \"releases/openpgp-secret.asc\"\n");
    symlink("../../openpgp-secret.asc", &disk).unwrap();
    let out = fixture.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).ends_with(&refused(
            "webapp-1.0.0-disk.raw",
            "releases/openpgp-secret.asc"
        )),
        "{}",
        stderr(&out)
    );
    fs::remove_file(&disk).unwrap();
    symlink("../../vmcast.key", &disk).unwrap();
    let text = fs::read_to_string(&key).unwrap();
    let out = fixture.run(&["build"], &[("VMCAST_SECRET_KEY", &text)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).ends_with(&refused("webapp-1.0.0-disk.raw", "releases/vmcast.key")),
        "{}",
        stderr(&out)
    );
    assert!(!fixture.path("public/images").exists());
}

/// Runs `build` with its data segment (the heap and every private writable
/// mapping) capped at `mib` MiB: an allocation past that aborts it.
fn build_within(fixture: &Fixture, mib: u64) -> std::process::Output {
    let kib = (mib << 10).to_string();
    let limit = [
        "sh",
        "-c",
        "ulimit -d \"$1\" && shift && exec \"$@\"",
        "sh",
        &kib,
    ];
    crate::common::vmcast_command(&fixture.root, &limit)
        .arg("build")
        .output()
        .unwrap()
}

/// Writes release `version` of the oversized-release-notes fixture with
/// `notes`, and an image.
fn release_with_notes(fixture: &Fixture, version: &str, notes: &str) {
    let dir = fixture.path(&format!("releases/webapp/{version}"));
    fs::create_dir_all(&dir).unwrap();
    let image = dir.join(format!("webapp-{version}.raw"));
    if !image.exists() {
        fs::copy(
            fixture.path("releases/webapp/1.0.0/webapp-1.0.0.raw"),
            image,
        )
        .unwrap();
    }
    fs::write(
        dir.join("release.toml"),
        format!("version = \"{version}\"\ndate = 2026-01-15\nnotes = \"\"\"\n{notes}\"\"\"\n"),
    )
    .unwrap();
}

/// Markdown parsed whole took about 250 times its size in memory (2 MiB
/// of dense emphasis, over 500 MB). Notes are parsed a piece at a time now:
/// the build fits in 256 MiB, and renders every word.
fn dense_notes_render_in_bounded_memory() {
    let fixture = Fixture::new("oversized-release-notes");
    let line = format!("{}\n", "*a* ".repeat(50));
    let notes = line.repeat((2 << 20) / line.len());
    release_with_notes(&fixture, "1.0.0", &notes);
    let out = build_within(&fixture, 256);
    assert_success(&out);
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    assert_eq!(
        feed.matches("&lt;em&gt;a&lt;/em&gt;").count(),
        notes.matches("*a*").count()
    );
}

/// Notes that would take a feed past what `verify` reads once escaped are
/// refused as soon as their rendering passes it, and a feed whose
/// releases' notes alone would, before it is rendered: both in bounded
/// memory (parsed whole, 12 MiB of `<` took some 1.8 GB), leaving the
/// previous output as it was.
fn notes_past_the_text_limit_are_refused_in_bounded_memory() {
    let fixture = Fixture::new("oversized-release-notes");
    let previous = crate::cli::seed_previous_output(&fixture);
    // Each `<` is 4 bytes of HTML, 8 in the feed.
    let paragraph = format!("{}\n\n", "<".repeat(1000));
    release_with_notes(&fixture, "1.0.0", &paragraph.repeat(12 << 10));
    let out = build_within(&fixture, 256);
    assert_eq!(
        stderr(&out),
        "error: releases/webapp/1.0.0/release.toml: the notes escaped into the feed would be over \
         the limit of 67108864 bytes (64.0 MiB) for a site's text files: `verify` refuses a feed \
         that large; shorten the notes\n"
    );
    assert_eq!(out.status.code(), Some(1));
    // 40 MiB in the feed each: together, over the limit.
    release_with_notes(&fixture, "1.0.0", &paragraph.repeat(5 << 10));
    release_with_notes(&fixture, "1.1.0", &paragraph.repeat(5 << 10));
    let out = build_within(&fixture, 256);
    assert_eq!(
        stderr(&out),
        "error: feed.xml would be over 67108864 bytes (64.0 MiB) with its releases' notes alone, \
         the limit for a site's text files: `verify` refuses it; shorten the release notes or \
         split the site\n"
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        crate::common::snapshot_tree(&fixture.path("public")),
        previous
    );
}
