//! systemd's own update tools run against a site on 127.0.0.1: Debian 12's
//! `systemd-pull` (252, /lib/systemd/systemd-pull) and Debian 13's
//! `systemd-sysupdate` (257, unpacked by .ci/install-sysupdate.sh and run
//! through trixie's loader). The harness the `systemd` tests run them with
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
