//! The harness the integration tests share: fixture sites copied to a
//! temporary directory, the real binary run on them, and outside tools
//! that must exist in CI.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use libtest_mimic::{Completion, Trial};
use tempfile::TempDir;

/// The build time every fixture build uses unless a test says otherwise.
pub const EPOCH: &str = "1790000000";

/// A copy of tests/fixtures in a temporary directory, so fixtures can refer
/// to each other (`../known-answer/kat.key`) and tests can change them.
pub struct Fixture {
    pub tmp: TempDir,
    pub root: PathBuf,
}

impl Fixture {
    pub fn new(name: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        copy_tree(&src, &tmp.path().join("fixtures"));
        let root = tmp.path().join("fixtures").join(name);
        assert!(root.is_dir(), "no fixture {name}");
        Fixture { tmp, root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes a new release of webapp, dated 2026-06-01, whose one image
    /// is `webapp-<version>.raw` holding `image`.
    pub fn add_webapp_release(&self, version: &str, image: &[u8]) {
        let dir = self.path(&format!("releases/webapp/{version}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("release.toml"),
            format!("version = \"{version}\"\ndate = 2026-06-01\nnotes = \"New.\"\n"),
        )
        .unwrap();
        fs::write(dir.join(format!("webapp-{version}.raw")), image).unwrap();
    }

    pub fn build(&self, args: &[&str]) -> Output {
        self.run(&[&["build"], args].concat(), &[])
    }

    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        vmcast(&self.root, args, env)
    }

    /// Appends lines to the fixture's vmcast.toml.
    pub fn configure(&self, lines: &str) {
        let path = self.path("vmcast.toml");
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(lines);
        fs::write(path, text).unwrap();
    }
}

/// Runs the binary with a fixed SOURCE_DATE_EPOCH (overridable in `env`).
pub fn vmcast(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = vmcast_command(cwd, &[]);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The binary to run in `cwd`, by `wrapper` (a command that runs the
/// rest of its arguments) if not empty, in the environment of [`vmcast`]:
/// no key or password from the caller's, the tests' cache,
/// SOURCE_DATE_EPOCH fixed.
pub fn vmcast_command(cwd: &Path, wrapper: &[&str]) -> Command {
    let binary = env!("CARGO_BIN_EXE_vmcast-gen");
    let cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(binary);
            cmd
        }
        None => Command::new(binary),
    };
    in_test_env(cmd, cwd)
}

/// `cmd` (the binary, or a program that runs it) in `cwd`, with the
/// environment every test runs it in.
pub fn in_test_env(mut cmd: Command, cwd: &Path) -> Command {
    cmd.current_dir(cwd)
        .env_remove("VMCAST_SECRET_KEY")
        .env(
            "VMCAST_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmcast-cache"),
        )
        .env_remove("VMCAST_KEY_PASSWORD")
        .env_remove("VMCAST_OPENPGP_KEY")
        .env_remove("VMCAST_OPENPGP_PASSWORD")
        .env_remove("VMCAST_PKCS11_MODULE")
        .env_remove("VMCAST_PKCS11_PIN")
        .env("SOURCE_DATE_EPOCH", EPOCH);
    cmd
}

pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &to).unwrap();
        } else if kind.is_dir() {
            copy_tree(&from, &to);
        } else {
            fs::copy(&from, &to).unwrap();
            // git keeps no 0600: give the copies of secret keys the mode a
            // real key has, as a user's would.
            let name = from.file_name().unwrap().to_string_lossy();
            if name.ends_with(".key") || name.ends_with("-secret.asc") {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&to, fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }
}

/// Runs ci/vmcast-release.sh (the Action's logic) in the fixture with only `env` of the VMCAST_*, AWS_*
/// and GitHub variables it reads, and the test binary first on PATH.
pub fn release_script(fixture: &Fixture, env: &[(&str, &str)]) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_vmcast-gen"))
        .parent()
        .unwrap();
    let path = std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/vmcast-release.sh"))
        .current_dir(&fixture.root)
        .env("PATH", path)
        .env(
            "VMCAST_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmcast-cache"),
        );
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("VMCAST_")
            || name.starts_with("AWS_")
            || ["SOURCE_DATE_EPOCH", "GITHUB_OUTPUT"].contains(&&*name)
        {
            cmd.env_remove(&*name);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Every file under `dir` with its bytes.
pub fn snapshot_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                files.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    files
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

/// An outside tool that tests run: a test lists the tools it needs (see
/// `tests!` in main.rs), and the harness looks for them when the test is
/// about to run, once per tool. A test whose tool is missing is listed as
/// ignored, with what is missing; with CI=true it fails instead, since
/// .ci/run installs every tool.
pub struct Tool {
    /// A shell command that succeeds when the tool is here.
    probe: &'static str,
    /// What the ignored test says.
    missing: &'static str,
    found: OnceLock<bool>,
}

impl Tool {
    const fn new(probe: &'static str, missing: &'static str) -> Self {
        Tool {
            probe,
            missing,
            found: OnceLock::new(),
        }
    }

    fn found(&self) -> bool {
        *self.found.get_or_init(|| {
            Command::new("sh")
                .args(["-c", self.probe])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }
}

pub static MINISIGN: Tool = Tool::new("command -v minisign", "minisign is not installed");
pub static XMLLINT: Tool = Tool::new("command -v xmllint", "xmllint is not installed");
pub static JING: Tool = Tool::new("command -v jing", "jing is not installed");
pub static CHROMIUM: Tool = Tool::new("command -v chromium", "chromium is not installed");
pub static QEMU_IMG: Tool = Tool::new("command -v qemu-img", "qemu-img is not installed");
pub static XZ: Tool = Tool::new("command -v xz", "xz is not installed");
pub static GZIP: Tool = Tool::new("command -v gzip", "gzip is not installed");
pub static ZSTD: Tool = Tool::new("command -v zstd", "zstd is not installed");
pub static TAR: Tool = Tool::new("command -v tar", "tar is not installed");
pub static NGINX: Tool = Tool::new(
    "command -v nginx || test -x /usr/sbin/nginx",
    "nginx is not installed",
);
pub static ZSYNC: Tool = Tool::new(
    "command -v zsync && command -v zsyncmake",
    "zsync and zsyncmake (Debian package zsync) are not installed",
);
pub static SHA1SUM: Tool = Tool::new("command -v sha1sum", "sha1sum is not installed");
pub static SHA256SUM: Tool = Tool::new("command -v sha256sum", "sha256sum is not installed");
pub static PYTHON3: Tool = Tool::new("command -v python3", "python3 is not installed");
pub static SS: Tool = Tool::new("command -v ss", "ss (iproute2) is not installed");
pub static GPO: Tool = Tool::new(
    "command -v gpo",
    "gpo (Debian package gpodder) is not installed",
);
pub static VAGRANT: Tool = Tool::new("command -v vagrant", "vagrant is not installed");
pub static SOFTHSM: Tool = Tool::new(
    "command -v softhsm2-util && test -e /usr/lib/softhsm/libsofthsm2.so",
    "SoftHSM2 (softhsm2-util and /usr/lib/softhsm/libsofthsm2.so, Debian package softhsm2) is \
     not installed",
);
pub static PKCS11_TOOL: Tool = Tool::new(
    "command -v pkcs11-tool",
    "pkcs11-tool (Debian package opensc) is not installed",
);
pub static GPG: Tool = Tool::new("command -v gpg", "gpg is not installed");
pub static GPGV: Tool = Tool::new("command -v gpgv", "gpgv is not installed");
pub static SYSTEMD_ANALYZE: Tool = Tool::new(
    "command -v systemd-analyze",
    "systemd-analyze (Debian package systemd) is not installed",
);
/// Debian 12's systemd-pull (systemd 252); see systemd_tools.rs.
pub static SYSTEMD_PULL: Tool = Tool::new(
    "test -x /lib/systemd/systemd-pull",
    "/lib/systemd/systemd-pull (Debian package systemd-container) is not installed",
);
/// Debian 13's systemd-sysupdate and systemd-pull (systemd 257), as
/// .ci/install-sysupdate.sh installs them (the default root is
/// systemd_tools::TRIXIE_ROOT_DEFAULT), and the host paths the tests mount
/// them over.
pub static SYSUPDATE: Tool = Tool::new(
    "r=\"${VMCAST_TRIXIE_ROOT:-/opt/vmcast-ci/trixie}\" && \"$r/systemd-sysupdate\" --version \
     && \"$r/systemd-pull-257\" --version && test -e /usr/lib/systemd/systemd-pull \
     && test -e /usr/lib/systemd/import-pubring.gpg",
    "trixie's systemd-sysupdate (.ci/install-sysupdate.sh, into $VMCAST_TRIXIE_ROOT or \
     /opt/vmcast-ci/trixie) is not installed",
);
/// A private mount namespace, in which systemd's tools get the test's
/// keyring: util-linux unshare, run as root.
pub static UNSHARE: Tool = Tool::new(
    "unshare -m --propagation private true",
    "unshare -m cannot make a mount namespace here (util-linux; needs root)",
);
pub static FEEDPARSER: Tool = Tool::new(
    "python3 -c 'import feedparser'",
    "python feedparser is not installed",
);
#[cfg(feature = "publish")]
pub static MOTO: Tool = Tool::new(
    "python3 -c 'import moto.server'",
    "python moto[server] is not installed",
);
pub static JSONSCHEMA: Tool = Tool::new(
    "python3 -c 'import jsonschema'",
    "python jsonschema is not installed",
);
pub static SSTREAM: Tool = Tool::new(
    "command -v sstream-query && command -v sstream-mirror",
    "sstream-query and sstream-mirror (pip python-simplestreams) are not installed",
);
pub static LXC: Tool = Tool::new(
    "command -v lxc && command -v openssl",
    "lxc (apt lxd-client) and openssl are not installed",
);
pub static VIRT_BUILDER: Tool = Tool::new(
    "command -v virt-builder && command -v virt-index-validate",
    "virt-builder and virt-index-validate (.ci/install-guestfs.sh) are not installed",
);
pub static PYSPDXTOOLS: Tool = Tool::new(
    "command -v pyspdxtools",
    "pyspdxtools (PyPI spdx-tools) is not installed",
);
pub static CYCLONEDX: Tool = Tool::new(
    "python3 -c 'from cyclonedx.schema import SchemaVersion; \
     from cyclonedx.validation.json import JsonStrictValidator; \
     JsonStrictValidator(SchemaVersion.V1_6).validate_str(\"{}\")'",
    "cyclonedx-python-lib[json-validation] is not installed",
);
pub static IN_TOTO: Tool = Tool::new(
    "python3 -c 'import in_toto.models.metadata, securesystemslib.signer, cryptography'",
    "the in-toto Python package is not installed",
);

/// One test as the harness runs it, named `module::test` as libtest names
/// it: ignored, saying what is missing, when a tool it needs is not here,
/// and failed instead under CI=true.
pub fn trial(module: &str, name: &str, test: fn(), needs: Vec<&'static Tool>) -> Trial {
    let module = module.strip_prefix("it::").unwrap_or(module);
    Trial::ignorable_test(format!("{module}::{name}"), move || {
        let missing: Vec<&str> = needs
            .iter()
            .filter(|tool| !tool.found())
            .map(|tool| tool.missing)
            .collect();
        if missing.is_empty() {
            test();
            Ok(Completion::Completed)
        } else if std::env::var("CI").as_deref() == Ok("true") {
            Err(format!("{}; .ci/run installs it", missing.join("; ")).into())
        } else {
            Ok(Completion::ignored_with(missing.join("; ")))
        }
    })
}

/// Stops a server started under `timeout`: SIGTERM to `timeout`, which
/// passes it on to the server (SIGKILL would orphan the server), then reap.
pub fn stop_under_timeout(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
