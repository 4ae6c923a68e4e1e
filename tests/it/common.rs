//! The harness the integration tests share: fixture sites copied to a
//! temporary directory, the real binary run on them, and outside tools
//! that must exist in CI.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(binary);
            cmd
        }
        None => Command::new(binary),
    };
    cmd.current_dir(cwd)
        .env_remove("VMCAST_SECRET_KEY")
        .env(
            "VMCAST_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmcast-cache"),
        )
        .env_remove("VMCAST_KEY_PASSWORD")
        .env_remove("VMCAST_OPENPGP_KEY")
        .env_remove("VMCAST_OPENPGP_PASSWORD")
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

/// Whether an outside tool can be run. In CI (CI=true) a missing tool is a
/// failure, since .ci/run installs it; elsewhere the caller skips.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tool {tool} missing; .ci/run installs it"
        );
        eprintln!("note: {tool} not installed; skipping this check");
    }
    found
}

/// Stops a server started under `timeout`: SIGTERM to `timeout`, which
/// passes it on to the server (SIGKILL would orphan the server), then reap.
pub fn stop_under_timeout(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
