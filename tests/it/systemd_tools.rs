//! systemd's own update tools run against a site on 127.0.0.1: Debian 12's
//! `systemd-pull` (252, /lib/systemd/systemd-pull) and Debian 13's
//! `systemd-sysupdate` (257, unpacked by .ci/install-sysupdate.sh and run
//! through trixie's loader). The functions here are the harness; the tests
//! prove it against a hand-made flat directory, the layout both tools want
//! (see the reference notes on delta downloads and systemd, A1 and A2).
//!
//! Both tools take the signing key only from a fixed path,
//! /etc/systemd/import-pubring.gpg if it exists, else the vendor keyring
//! beside the binary, and sysupdate runs systemd-pull only as
//! /usr/lib/systemd/systemd-pull (where bookworm's 252 sits). So each run
//! is in a private mount namespace (`unshare -m`) in which the test's
//! keyring and trixie's systemd-pull are bind-mounted over those paths:
//! nothing changes on the host, which the tests check.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::{assert_success, stderr, stdout};
use crate::pull::Files;

tests! {
    systemd_pull_accepts_a_signed_flat_directory_and_refuses_tampering
        needs SYSTEMD_PULL, UNSHARE, GPG;
    systemd_sysupdate_lists_checks_and_installs_from_a_flat_directory
        needs SYSUPDATE, UNSHARE, GPG;
}

/// Debian 12's systemd-pull (systemd 252, package systemd-container).
pub(crate) const SYSTEMD_PULL_252: &str = "/lib/systemd/systemd-pull";

/// Where .ci/install-sysupdate.sh installs unless VMCAST_TRIXIE_ROOT says
/// otherwise (the `SYSUPDATE` probe in common.rs repeats it).
pub(crate) const TRIXIE_ROOT_DEFAULT: &str = "/opt/vmcast-ci/trixie";

/// How long one run of either tool may take before it is killed.
pub(crate) const LIMIT: Duration = Duration::from_secs(60);

/// The paths systemd-pull 252 and 257 read the signing keyring from: the
/// first if it exists, else the vendor one (252 as built by Debian says
/// /lib/..., 257 /usr/lib/...).
const KEYRING_PATHS: [&str; 3] = [
    "/etc/systemd/import-pubring.gpg",
    "/usr/lib/systemd/import-pubring.gpg",
    "/lib/systemd/import-pubring.gpg",
];

/// The one path systemd-sysupdate 257 runs systemd-pull from.
const PULL_PATH: &str = "/usr/lib/systemd/systemd-pull";

/// The install of .ci/install-sysupdate.sh: `$VMCAST_TRIXIE_ROOT`, else
/// /opt/vmcast-ci/trixie.
pub(crate) fn trixie_root() -> PathBuf {
    std::env::var_os("VMCAST_TRIXIE_ROOT")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(TRIXIE_ROOT_DEFAULT), PathBuf::from)
}

/// Debian 12's `systemd-pull raw --verify=VERIFY --image-root=IMAGE_ROOT
/// URL appliance` with `keyring` (a binary OpenPGP keyring, see
/// [`binary_keyring`]) as the import keyring: the image lands as
/// `IMAGE_ROOT/appliance.raw`. The sidecars (.nspawn, .roothash, .verity)
/// are not asked for: with them 252 hangs after its downloads. Killed,
/// failing the test, after [`LIMIT`].
pub(crate) fn pull_raw(keyring: &Path, url: &str, image_root: &Path, verify: &str) -> Output {
    let mounts = keyring_mounts(keyring);
    let verify = format!("--verify={verify}");
    let image_root = format!("--image-root={}", image_root.display());
    namespaced(
        &mounts,
        &[
            SYSTEMD_PULL_252,
            "raw",
            &verify,
            "--settings=no",
            "--roothash=no",
            "--roothash-signature=no",
            "--verity=no",
            &image_root,
            url,
            "appliance",
        ],
    )
}

/// Debian 13's `systemd-sysupdate --root=ROOT ARGS...`, with `keyring` as
/// the import keyring and trixie's systemd-pull at the path sysupdate runs
/// it from. Transfer files go in `ROOT/etc/sysupdate.d/*.transfer`
/// (`--definitions` is resolved inside `--root`); their `[Target]`
/// `Path=` is inside ROOT too. Killed, failing the test, after
/// [`LIMIT`].
pub(crate) fn sysupdate(root: &Path, keyring: &Path, args: &[&str]) -> Output {
    let trixie = trixie_root();
    let mut mounts = keyring_mounts(keyring);
    mounts.push((trixie.join("systemd-pull-257"), PathBuf::from(PULL_PATH)));
    let wrapper = trixie.join("systemd-sysupdate");
    let root = format!("--root={}", root.display());
    let mut command = vec![wrapper.to_str().unwrap(), &root];
    command.extend_from_slice(args);
    namespaced(&mounts, &command)
}

/// `keyring` over each import keyring path the host has (a file can only
/// be bind-mounted over an existing one; a path the host lacks is not
/// read), each once (/lib may be a link to /usr/lib).
fn keyring_mounts(keyring: &Path) -> Vec<(PathBuf, PathBuf)> {
    let bytes = fs::read(keyring).unwrap_or_else(|e| panic!("keyring {}: {e}", keyring.display()));
    assert!(
        bytes.first().is_some_and(|b| b & 0x80 != 0),
        "{} is not a binary OpenPGP keyring (armored? see binary_keyring)",
        keyring.display()
    );
    let mut mounts: Vec<(PathBuf, PathBuf)> = KEYRING_PATHS
        .iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .map(|p| (keyring.to_path_buf(), p.canonicalize().unwrap()))
        .collect();
    mounts.sort();
    mounts.dedup();
    assert!(
        mounts
            .iter()
            .any(|(_, p)| p.starts_with("/usr/lib/systemd")),
        "no /usr/lib/systemd/import-pubring.gpg to mount the keyring over \
         (Debian package systemd-container)"
    );
    mounts
}

/// Runs `command` in a private mount namespace after bind-mounting each
/// `(file, over)`; kills it (its whole process group) after [`LIMIT`].
fn namespaced(mounts: &[(PathBuf, PathBuf)], command: &[&str]) -> Output {
    let script = r#"set -e
while [ "$1" != -- ]; do mount --bind "$1" "$2"; shift 2; done
shift
exec "$@""#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"]);
    for (file, over) in mounts {
        cmd.arg(file).arg(over);
    }
    cmd.arg("--").args(command);
    run_bounded(cmd, LIMIT)
}

/// Runs `cmd` in a process group of its own, its output in files (so
/// that nothing left behind can hold a pipe open), and kills the group
/// after `limit`, failing with what it printed so far.
pub(crate) fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_PAGER", "cat")
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!(
                "killed after {limit:?}: {cmd:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&fs::read(&out_path).unwrap()),
                String::from_utf8_lossy(&fs::read(&err_path).unwrap()),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: fs::read(&out_path).unwrap(),
        stderr: fs::read(&err_path).unwrap(),
    }
}

/// The keyring the tools take, from `key`: a binary OpenPGP keyring (a
/// site's `import-pubring.gpg`, `gpg --export`) as it is, an armored one
/// (`openpgp.asc`) dearmored into `scratch/import-pubring.gpg`.
pub(crate) fn binary_keyring(key: &Path, scratch: &Path) -> PathBuf {
    let bytes = fs::read(key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        return key.to_path_buf();
    }
    let out = scratch.join("import-pubring.gpg");
    // A home of its own: gpg would otherwise make ~/.gnupg.
    let home = tempfile::tempdir().unwrap();
    let dearmored = Command::new("gpg")
        .arg("--homedir")
        .arg(home.path())
        .args(["--batch", "--yes", "--output"])
        .arg(&out)
        .arg("--dearmor")
        .arg(key)
        .output()
        .unwrap();
    assert_success(&dearmored);
    out
}

/// Every file, directory and link under the host's /etc/systemd and
/// /usr/lib/systemd with its kind, size and mtime: equal before and after
/// a run when the run changed nothing there.
pub(crate) fn host_systemd_listing() -> BTreeMap<PathBuf, (u32, u64, i64, i64)> {
    let mut listing = BTreeMap::new();
    let mut stack = vec![
        PathBuf::from("/etc/systemd"),
        PathBuf::from("/usr/lib/systemd"),
    ];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
        let entry = (meta.mode(), meta.len(), meta.mtime(), meta.mtime_nsec());
        listing.insert(path, entry);
    }
    listing
}

/// An ed25519 signing key of gpg's own making, in a GNUPGHOME of its own
/// whose agent is stopped when this is dropped.
pub(crate) struct GpgKey {
    home: TempDir,
    /// Its public key as a binary keyring (`gpg --export`).
    pub(crate) keyring: PathBuf,
    /// Its public key armored (`gpg --export --armor`).
    pub(crate) armored: PathBuf,
}

impl GpgKey {
    pub(crate) fn new() -> GpgKey {
        let home = tempfile::tempdir().unwrap();
        let key = GpgKey {
            keyring: home.path().join("pubring.export"),
            armored: home.path().join("pubring.asc"),
            home,
        };
        key.gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            "vmcast-gen systemd test <systemd@example.com>",
            "ed25519",
            "sign",
            "never",
        ]);
        let exported = key.gpg(&["--export"]);
        fs::write(&key.keyring, exported.stdout).unwrap();
        let armored = key.gpg(&["--export", "--armor"]);
        fs::write(&key.armored, armored.stdout).unwrap();
        key
    }

    fn gpg(&self, args: &[&str]) -> Output {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .unwrap();
        assert_success(&out);
        out
    }

    /// Writes `dir/SHA256SUMS` (coreutils format, bare names) for `names`
    /// and its binary detached signature `dir/SHA256SUMS.gpg`.
    pub(crate) fn sign_sums(&self, dir: &Path, names: &[&str]) {
        let sums: String = names
            .iter()
            .map(|name| {
                let bytes = fs::read(dir.join(name)).unwrap();
                format!("{}  {name}\n", vmcast_gen::model::Sha256::of(&bytes))
            })
            .collect();
        fs::write(dir.join("SHA256SUMS"), sums).unwrap();
        let sums = dir.join("SHA256SUMS");
        let sig = dir.join("SHA256SUMS.gpg");
        self.gpg(&[
            "--yes",
            "--detach-sign",
            "--output",
            sig.to_str().unwrap(),
            sums.to_str().unwrap(),
        ]);
    }
}

impl Drop for GpgKey {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .status();
    }
}

/// A served tree: `flat/` with two versions signed by `key`, `flipped/`
/// the same with a byte of 1.1 changed after signing, `forged/` whose
/// SHA256SUMS was changed after signing to match its changed 1.1.
struct FlatSite {
    dir: TempDir,
    server: Files,
}

const IMAGES: [&str; 2] = ["appliance_1.0.raw", "appliance_1.1.raw"];

impl FlatSite {
    fn new(key: &GpgKey) -> FlatSite {
        let dir = tempfile::tempdir().unwrap();
        let flat = dir.path().join("flat");
        fs::create_dir(&flat).unwrap();
        for (i, name) in IMAGES.iter().enumerate() {
            let image: Vec<u8> = (0..256 * 1024u32)
                .map(|n| (n * 7 + i as u32) as u8)
                .collect();
            fs::write(flat.join(name), image).unwrap();
        }
        key.sign_sums(&flat, &IMAGES);
        for copy in ["flipped", "forged"] {
            crate::common::copy_tree(&flat, &dir.path().join(copy));
            let image = dir.path().join(copy).join(IMAGES[1]);
            let mut bytes = fs::read(&image).unwrap();
            bytes[1000] ^= 1;
            fs::write(&image, &bytes).unwrap();
        }
        // forged/: the manifest says what the changed image hashes to.
        let sums = dir.path().join("forged/SHA256SUMS");
        let forged = fs::read_to_string(&sums).unwrap().replace(
            &vmcast_gen::model::Sha256::of(&fs::read(flat.join(IMAGES[1])).unwrap()).to_string(),
            &vmcast_gen::model::Sha256::of(
                &fs::read(dir.path().join("forged").join(IMAGES[1])).unwrap(),
            )
            .to_string(),
        );
        assert_ne!(forged, fs::read_to_string(&sums).unwrap());
        fs::write(&sums, forged).unwrap();
        let server = Files::start(dir.path().to_path_buf());
        FlatSite { dir, server }
    }

    fn url(&self, rel: &str) -> String {
        format!("{}{rel}", self.server.url())
    }
}

fn systemd_pull_accepts_a_signed_flat_directory_and_refuses_tampering() {
    let key = GpgKey::new();
    let site = FlatSite::new(&key);
    let scratch = tempfile::tempdir().unwrap();
    // From the armored key, as from a site's openpgp.asc.
    let keyring = binary_keyring(&key.armored, scratch.path());
    assert_ne!(keyring, key.armored);
    let before = host_systemd_listing();
    let pull = |dir: &str, verify: &str| {
        let root = scratch.path().join(format!("{dir}-{verify}"));
        fs::create_dir(&root).unwrap();
        let url = site.url(&format!("{dir}/{}", IMAGES[1]));
        (pull_raw(&keyring, &url, &root, verify), root)
    };

    let (out, root) = pull("flat", "signature");
    assert_success(&out);
    assert!(
        stderr(&out).contains("Signature verification succeeded"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read(root.join("appliance.raw")).unwrap(),
        fs::read(site.dir.path().join("flat").join(IMAGES[1])).unwrap()
    );

    let (out, root) = pull("flipped", "signature");
    assert!(
        !out.status.success(),
        "a changed image was accepted: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("did not check out"),
        "{}",
        stderr(&out)
    );
    assert!(!root.join("appliance.raw").exists());

    let (out, root) = pull("forged", "signature");
    assert!(
        !out.status.success(),
        "a changed SHA256SUMS was accepted: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("BAD signature"), "{}", stderr(&out));
    assert!(!root.join("appliance.raw").exists());

    assert_eq!(
        before,
        host_systemd_listing(),
        "the host's systemd files changed"
    );
}

fn systemd_sysupdate_lists_checks_and_installs_from_a_flat_directory() {
    let key = GpgKey::new();
    let site = FlatSite::new(&key);
    let before = host_systemd_listing();
    // A root of its own per source directory.
    let root_for = |dir: &str| {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc/sysupdate.d")).unwrap();
        fs::create_dir_all(root.path().join("var/lib/appliances")).unwrap();
        fs::write(
            root.path().join("etc/sysupdate.d/50-appliance.transfer"),
            format!(
                "[Transfer]\nVerify=yes\n\n\
                 [Source]\nType=url-file\nPath={}\nMatchPattern=appliance_@v.raw\n\n\
                 [Target]\nType=regular-file\nPath=/var/lib/appliances\n\
                 MatchPattern=appliance_@v.raw\nCurrentSymlink=appliance.raw\n",
                site.url(&format!("{dir}/"))
            ),
        )
        .unwrap();
        root
    };

    let root = root_for("flat");
    let list = sysupdate(root.path(), &key.keyring, &["list"]);
    assert_success(&list);
    let text = stdout(&list);
    let versions: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("1.")))
        .collect();
    assert_eq!(versions, ["1.1", "1.0"], "{text}");
    let check = sysupdate(root.path(), &key.keyring, &["check-new"]);
    assert_success(&check);
    assert_eq!(stdout(&check).trim(), "1.1");
    let update = sysupdate(root.path(), &key.keyring, &["update"]);
    assert_success(&update);
    let installed = root.path().join("var/lib/appliances");
    assert_eq!(
        fs::read(installed.join(IMAGES[1])).unwrap(),
        fs::read(site.dir.path().join("flat").join(IMAGES[1])).unwrap()
    );
    assert_eq!(
        fs::read_link(installed.join("appliance.raw")).unwrap(),
        Path::new(IMAGES[1])
    );
    assert!(
        site.server
            .requests()
            .iter()
            .any(|r| r == "GET /flat/SHA256SUMS.gpg"),
        "{:?}",
        site.server.requests()
    );

    let root = root_for("flipped");
    let update = sysupdate(root.path(), &key.keyring, &["update"]);
    assert!(
        !update.status.success(),
        "a changed image was installed: {}",
        stderr(&update)
    );
    let left: Vec<_> = fs::read_dir(root.path().join("var/lib/appliances"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "left behind: {left:?}\n{}",
        stderr(&update)
    );

    assert_eq!(
        before,
        host_systemd_listing(),
        "the host's systemd files changed"
    );
}
