//! One build of an output at a time, and what killed builds leave behind.

use std::fs;
use std::io::Write;

use crate::common::{Fixture, assert_success, stderr};

/// While another process holds the output's lock, a build fails at once,
/// naming it; once it is released, the build runs.
#[test]
fn second_build_of_one_output_fails_at_once() {
    let fixture = Fixture::new("ok-minimal");
    let lock_path = fixture.path(".public.lock");
    let mut lock = fs::File::create(&lock_path).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    lock.write_all(b"4242\n").unwrap();

    let out = fixture.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: .public.lock: another build of public is running (process 4242); \
         wait for it to finish\n"
    );
    assert!(!fixture.path("public").exists());

    // Released (as when its holder dies, the file left behind): the next
    // build takes it, and removes it when done.
    drop(lock);
    assert_success(&fixture.build(&[]));
    assert!(!lock_path.exists());
}

/// A build killed midway leaves its staging directory; the next build of
/// the output removes it and says so. Other sites' are left alone.
#[test]
fn build_sweeps_staging_directories_of_killed_builds() {
    let fixture = Fixture::new("ok-minimal");
    let left = fixture.path(".public.building-xyz");
    fs::create_dir_all(left.join("images")).unwrap();
    fs::write(left.join("images/half.raw"), b"half an image").unwrap();
    let other = fixture.path(".other.building-xyz");
    fs::create_dir(&other).unwrap();

    let out = fixture.build(&[]);
    assert_success(&out);
    assert!(!left.exists());
    assert!(other.is_dir());
    assert_eq!(
        stderr(&out),
        "warning: .public.building-xyz: removed: a build that was killed midway left it behind\n"
    );

    let again = fixture.build(&[]);
    assert_success(&again);
    assert_eq!(stderr(&again), "");
}
