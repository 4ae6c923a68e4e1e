//! Delta downloads: with an older image at hand (one `pull` placed before
//! in `--dest`, the files named with `--seed`, what an interrupted delta
//! download left), `pull` fetches the image's zsync control file, checks
//! it against the signed feed, takes every block the seeds hold, and
//! downloads the rest with `Range` requests: runs of missing blocks as one
//! range each, many ranges to a request where the server answers
//! `multipart/byteranges`, one where it answers only single ranges (S3),
//! a few requests at a time. Every downloaded block is checked against
//! the control file as it arrives, and the rebuilt image against the
//! signed SHA-256 at the end. A server that ignores `Range`, a control
//! file that cannot be had, or seeds that hold none of the image leave the
//! download to the whole-file path.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use url::Url;

use super::{Failure, Progress};
use crate::error::{Error, Result};
use crate::fsutil::{self, Access, Dir, Mine};
use crate::model::{FileName, Image, Sha256, ZsyncFile};
use crate::net::{self, NetError, StreamError};
use crate::par;
use crate::warning::Warning;
use crate::zsync::{Control, Finder, find::ScanError};

/// Requests under way at once.
const PARALLEL: usize = 4;
/// The most ranges one request asks for: a header of under a KiB, which
/// every server takes.
const RANGES_PER_REQUEST: usize = 32;
/// The most bytes one request asks for, so that a long run of missing
/// blocks is shared among the requests under way.
const BYTES_PER_REQUEST: u64 = 8 << 20;
/// What a part of a `multipart/byteranges` answer costs besides its bytes
/// (a delimiter and two headers), and what another request costs (its
/// headers, its answer's, and a round trip, worth a few KiB on most
/// links): runs of missing blocks no further apart than that are asked
/// for as one range.
const PART_COST: u64 = 128;
const REQUEST_COST: u64 = 4096;

/// A file that may hold blocks of the image.
pub(super) struct Seed {
    pub path: PathBuf,
    pub file: File,
}

/// What a delta download did.
#[derive(Debug, Clone, Serialize)]
pub struct Delta {
    /// The seeds read, in order.
    pub seeds: Vec<PathBuf>,
    /// Bytes of the image taken from the seeds.
    pub reused: u64,
    /// Bytes of the image that are blocks of zeros: neither read nor
    /// downloaded.
    pub zeros: u64,
    /// Bytes of the image neither the seeds nor zeros give: to download.
    pub missing: u64,
    /// Bytes of the image downloaded, in `ranges` ranges over `requests`
    /// requests.
    pub fetched: u64,
    pub ranges: usize,
    pub requests: usize,
    /// The control file's length, downloaded first.
    pub control: u64,
}

/// How a delta download went.
pub(super) enum Tried {
    /// The image is at `name` in the partial directory, checked.
    Done {
        mine: Mine,
        name: FileName,
        delta: Delta,
    },
    /// No delta download: the whole image is downloaded instead, and why,
    /// when there is something to tell.
    Whole(Option<String>),
}

/// What a delta download works with.
pub(super) struct Ctx<'a> {
    pub client: &'a net::Client,
    /// Where the image is rebuilt.
    pub partials: &'a Dir,
    pub image: &'a Image,
    /// Where the image is served: its URL, then its mirrors'.
    pub sources: &'a [Url],
    pub progress: &'a dyn Progress,
}

/// Rebuilds the image from `seeds` and ranges of it, when the feed names
/// a control file for it and a seed holds some of it.
pub(super) fn try_delta(
    ctx: &Ctx,
    mut seeds: Vec<Seed>,
    warnings: &mut Vec<Warning>,
) -> Result<Tried> {
    let Some(zsync) = &ctx.image.zsync else {
        return Ok(Tried::Whole(None));
    };
    let digest = &ctx.image.digest;
    let name = FileName::parse(&format!("{}.delta", digest.sha256.to_hex()))
        .expect("a digest and .delta make a file name");
    // What an interrupted delta download left holds checked blocks only.
    if let Some(left) = ctx.partials.open_mine(&name, Access::Read, warnings)? {
        ctx.partials.remove_mine(&name, &left)?;
        seeds.push(Seed {
            path: ctx.partials.path_of(&name),
            file: left.file,
        });
    }
    if seeds.is_empty() {
        return Ok(Tried::Whole(None));
    }
    let (control, ranges) = match fetch_control(ctx.client, zsync) {
        Ok(fetched) => fetched,
        Err(why) => return Ok(Tried::Whole(Some(why))),
    };
    if control.params.length != digest.length {
        return Ok(Tried::Whole(Some(format!(
            "{}: describes {} bytes, not the {} the feed signs",
            zsync.url, control.params.length, digest.length
        ))));
    }
    let mine = ctx
        .partials
        .create_new(&name, fsutil::PUBLISHED_FILE_MODE)?;
    let path = ctx.partials.path_of(&name);
    mine.file
        .set_len(digest.length)
        .map_err(|e| Error::io("cannot write", &path, e))?;
    let mut finder = Finder::new(&control);
    take_from_seeds(&mut finder, &seeds, &mine, &path, &control, warnings)?;
    if finder.found() == 0 {
        ctx.partials.remove_mine(&name, &mine)?;
        return Ok(Tried::Whole(None));
    }
    let missing = finder.missing();
    let mut delta = Delta {
        seeds: seeds.into_iter().map(|s| s.path).collect(),
        reused: finder.found(),
        zeros: finder.zeros(),
        missing: missing.iter().map(|(a, b)| b - a).sum(),
        fetched: 0,
        ranges: 0,
        requests: 0,
        control: zsync.digest.length,
    };
    ctx.progress.delta(&delta);
    let fetch = Fetch {
        client: ctx.client,
        control: &control,
        file: &mine.file,
        path: &path,
        progress: ctx.progress,
        fetched: AtomicU64::new(0),
        control_url: &zsync.url,
        ranges,
    };
    let mut failures = Vec::new();
    let mut refused = false;
    let mut left = missing;
    for url in ctx.sources {
        match fetch.all(url, &left, &mut delta)? {
            Fetched::All => {
                left.clear();
                break;
            }
            Fetched::Whole => {
                ctx.partials.remove_mine(&name, &mine)?;
                return Ok(Tried::Whole(Some(format!(
                    "{url}: the server ignores Range"
                ))));
            }
            Fetched::Failed(rest, failure) => {
                left = rest;
                match failure {
                    Failure::Refused(why) => {
                        refused = true;
                        failures.push(why);
                    }
                    Failure::Interrupted(why) => failures.push(why),
                }
            }
        }
    }
    if !left.is_empty() {
        let failures = failures.join("\n  ");
        let message = format!(
            "{failures}; the blocks it has are kept, and the next run takes them as a seed"
        );
        return Err(if refused {
            Error::Refused(message)
        } else {
            Error::Interrupted(message)
        });
    }
    let rebuilt = sha256_of(&mine, digest.length, &path)?;
    if rebuilt != digest.sha256 {
        ctx.partials.remove_mine(&name, &mine)?;
        return Ok(Tried::Whole(Some(format!(
            "the image rebuilt from the seeds hashes to {rebuilt}, not the signed {}",
            digest.sha256
        ))));
    }
    Ok(Tried::Done { mine, name, delta })
}

/// Writes into `mine` every block of the image that a seed holds. A seed
/// that cannot be read is left out, with a warning.
fn take_from_seeds(
    finder: &mut Finder,
    seeds: &[Seed],
    mine: &Mine,
    path: &Path,
    control: &Control,
    warnings: &mut Vec<Warning>,
) -> Result<()> {
    for seed in seeds {
        let write = |i: u64, bytes: &[u8]| mine.file.write_all_at(bytes, control.params.block(i).0);
        let scanned = finder
            .scan(&seed.file, write)
            .and_then(|_| finder.scan_in_place(&seed.file, write));
        match scanned {
            Ok(_) => {}
            Err(ScanError::Read(e)) => warnings.push(Warning::file(
                &seed.path,
                format_args!("cannot be read as a seed ({e}); the download goes on without it"),
            )),
            Err(ScanError::Found(e)) => return Err(Error::io("cannot write", path, e)),
        }
    }
    Ok(())
}

/// The SHA-256 of the first `length` bytes of the rebuilt image.
fn sha256_of(mine: &Mine, length: u64, path: &Path) -> Result<Sha256> {
    let (_, sha256) = fsutil::sha256_bounded(&mine.file, length)
        .map_err(|(_, e)| Error::io("cannot read", path, e))?;
    Ok(sha256)
}

/// The control file, checked against the signed feed and read, and how
/// its server answered a request for two ranges; why not.
fn fetch_control(
    client: &net::Client,
    zsync: &ZsyncFile,
) -> std::result::Result<(Control, net::Ranges), String> {
    let (data, ranges) = client
        .get_small_probing(&zsync.url, zsync.digest.length)
        .map_err(|e| e.to_string())?;
    let digest = Sha256::of(&data);
    if data.len() as u64 != zsync.digest.length || digest != zsync.digest.sha256 {
        return Err(format!(
            "{}: {} bytes with SHA-256 {digest}, not the signed {} bytes with SHA-256 {}",
            zsync.url,
            data.len(),
            zsync.digest.length,
            zsync.digest.sha256
        ));
    }
    let control = Control::parse(&data).map_err(|m| format!("{}: {m}", zsync.url))?;
    Ok((control, ranges))
}

/// How the missing ranges were fetched from one source.
enum Fetched {
    All,
    /// The server ignores `Range`.
    Whole,
    /// What is still missing, and why.
    Failed(Vec<(u64, u64)>, Failure),
}

/// What one request brought.
enum Got {
    /// Every range asked for.
    All,
    /// Some of them (a server that answers only the first of many
    /// ranges): what is still missing.
    Some(Vec<(u64, u64)>),
    /// A 200: the server ignores `Range`.
    Whole,
}

/// Downloads ranges of the image into the file being rebuilt.
struct Fetch<'a> {
    client: &'a net::Client,
    control: &'a Control,
    file: &'a File,
    path: &'a std::path::Path,
    progress: &'a dyn Progress,
    /// Bytes of the image received.
    fetched: AtomicU64,
    /// Where the control file came from, and how that server answered a
    /// request for two ranges.
    control_url: &'a Url,
    ranges: net::Ranges,
}

impl Fetch<'_> {
    /// Fetches every range in `missing` from `url`. The first request
    /// asks for many ranges and tells how the server answers them: if it
    /// answers only one range to a request (S3), or none but the whole
    /// file, one range is tried alone, and the rest go one to a request.
    /// Where the control file's server already showed it answers one range
    /// at most, and `url` is on that server, the first request asks for
    /// one: asking for many would start the whole image, which it sends
    /// until the connection closes. The others go a few at a time.
    fn all(&self, url: &Url, missing: &[(u64, u64)], delta: &mut Delta) -> Result<Fetched> {
        if missing.is_empty() {
            return Ok(Fetched::All);
        }
        let mut left = coalesce(missing, PART_COST);
        let one = self.ranges == net::Ranges::One && url.origin() == self.control_url.origin();
        let first = batches(&left, if one { 1 } else { RANGES_PER_REQUEST }).remove(0);
        delta.requests += 1;
        // Whether the server answers many ranges to a request, and how
        // many ranges the first request (or two) brought.
        let (many, brought) = match self.request(url, &first)? {
            Ok(Got::All) if one => {
                left = subtract(&left, &first);
                (false, 1)
            }
            Ok(Got::All) => (true, first.len()),
            Ok(Got::Whole) if first.len() == 1 => return Ok(Fetched::Whole),
            Err(failure) if first.len() == 1 => return Ok(Fetched::Failed(left, failure)),
            Ok(Got::Some(rest)) => {
                let done: Vec<(u64, u64)> = subtract(&first, &rest);
                left = subtract(&left, &done);
                (false, done.len())
            }
            // Many ranges are not answered, or not well: one alone may be.
            Ok(Got::Whole) | Err(_) => {
                delta.requests += 1;
                match self.request(url, &first[..1])? {
                    Ok(Got::All) => {
                        left = subtract(&left, &first[..1]);
                        (false, 1)
                    }
                    Ok(Got::Whole) => return Ok(Fetched::Whole),
                    Ok(Got::Some(_)) => return Ok(Fetched::Failed(left, incomplete(url))),
                    Err(failure) => return Ok(Fetched::Failed(left, failure)),
                }
            }
        };
        let batches = match many {
            true => batches(&subtract(&left, &first), RANGES_PER_REQUEST),
            false => batches(&coalesce(&left, REQUEST_COST), 1),
        };
        delta.requests += batches.len();
        delta.ranges = batches.iter().map(Vec::len).sum::<usize>() + brought;
        let results = par::map(PARALLEL, &batches, |batch| self.request(url, batch));
        delta.fetched = self.fetched.load(Ordering::Relaxed);
        let mut rest = Vec::new();
        let mut failure: Option<Failure> = None;
        for (batch, result) in batches.iter().zip(results) {
            let why = match result? {
                Ok(Got::All) => continue,
                Ok(Got::Some(missing)) => {
                    rest.extend(missing);
                    incomplete(url)
                }
                Ok(Got::Whole) => {
                    rest.extend(batch);
                    Failure::Interrupted(format!("{url}: the server stopped answering Range"))
                }
                Err(f) => {
                    rest.extend(batch);
                    f
                }
            };
            if !matches!(failure, Some(Failure::Refused(_))) {
                failure = Some(why);
            }
        }
        Ok(match failure {
            None => Fetched::All,
            Some(f) => {
                rest.sort_unstable();
                Fetched::Failed(rest, f)
            }
        })
    }

    /// Asks for `ranges` in one request, and writes the blocks the answer
    /// brings once they check. `Err` for a failure of this machine,
    /// `Ok(Err)` for one of the source.
    fn request(
        &self,
        url: &Url,
        ranges: &[(u64, u64)],
    ) -> Result<std::result::Result<Got, Failure>> {
        let spec: Vec<String> = ranges
            .iter()
            .map(|(a, b)| format!("{a}-{}", b - 1))
            .collect();
        let request =
            net::Request::stream(url).header("Range", format!("bytes={}", spec.join(",")));
        let response = match self.client.send(&request) {
            Ok(response) => response,
            Err(e) => return Ok(Err(net_failure(e))),
        };
        if response.status() == 200 {
            // Not read: the connection closes.
            return Ok(Ok(Got::Whole));
        }
        let (first, last) = (ranges[0].0, ranges[ranges.len() - 1].1);
        let limit = last - first + ranges.len() as u64 * PART_COST + 4096;
        let length = self.control.params.length;
        let mut writer = Writer::new(self, url);
        let parts = response
            .parts(length, limit, |at, bytes| writer.take(at, bytes))
            .and_then(|_| writer.flush().map_err(StreamError::Sink));
        match parts {
            Ok(()) => {}
            Err(StreamError::Net(e)) => return Ok(Err(net_failure(e))),
            Err(StreamError::Sink(Stop::Source(f))) => return Ok(Err(f)),
            Err(StreamError::Sink(Stop::Local(e))) => return Err(e),
        }
        let missing = subtract(ranges, &writer.got);
        Ok(Ok(match missing.is_empty() {
            true => Got::All,
            false => Got::Some(missing),
        }))
    }
}

/// Why the parts of an answer stopped being taken.
enum Stop {
    /// The source sent what it should not have.
    Source(Failure),
    /// This machine could not write them.
    Local(Error),
}

/// The parts of one answer as they arrive: whole blocks checked against
/// the control file, then written.
struct Writer<'a, 'f> {
    fetch: &'a Fetch<'f>,
    url: &'a Url,
    /// Where the bytes held start, and the bytes.
    start: u64,
    held: Vec<u8>,
    /// The ranges written, in order.
    got: Vec<(u64, u64)>,
}

impl<'a, 'f> Writer<'a, 'f> {
    fn new(fetch: &'a Fetch<'f>, url: &'a Url) -> Self {
        Writer {
            fetch,
            url,
            start: 0,
            held: Vec::new(),
            got: Vec::new(),
        }
    }

    /// Takes the bytes from `at` on. A part must start at a block.
    fn take(&mut self, at: u64, bytes: &[u8]) -> std::result::Result<(), Stop> {
        let size = self.fetch.control.params.block_size as u64;
        if at != self.start + self.held.len() as u64 {
            self.flush()?;
            if !at.is_multiple_of(size) {
                return Err(Stop::Source(Failure::Refused(format!(
                    "{}: answered bytes from {at}, which is no block's start",
                    self.url
                ))));
            }
            self.start = at;
        }
        self.held.extend_from_slice(bytes);
        if self.held.len() as u64 >= 64 * size {
            let whole = self.held.len() as u64 / size * size;
            self.write(whole)?;
        }
        Ok(())
    }

    /// Writes what is held: whole blocks, and the short last one.
    fn flush(&mut self) -> std::result::Result<(), Stop> {
        if self.held.is_empty() {
            return Ok(());
        }
        let end = self.start + self.held.len() as u64;
        if !end.is_multiple_of(self.fetch.control.params.block_size as u64)
            && end != self.fetch.control.params.length
        {
            return Err(Stop::Source(Failure::Refused(format!(
                "{}: a part ends at byte {end}, inside a block",
                self.url
            ))));
        }
        self.write(self.held.len() as u64)
    }

    /// Checks and writes the first `len` bytes held.
    fn write(&mut self, len: u64) -> std::result::Result<(), Stop> {
        let control = self.fetch.control;
        let size = control.params.block_size as u64;
        let bytes = &self.held[..len as usize];
        if let Some(bad) = control.check(self.start / size, bytes) {
            return Err(Stop::Source(Failure::Refused(format!(
                "{}: the bytes from {} are not block {bad} of the signed control file",
                self.url,
                bad * size
            ))));
        }
        self.fetch
            .file
            .write_all_at(bytes, self.start)
            .map_err(|e| Stop::Local(Error::io("cannot write", self.fetch.path, e)))?;
        self.fetch.fetched.fetch_add(len, Ordering::Relaxed);
        self.fetch.progress.fetched(len);
        let end = self.start + len;
        match self.got.last_mut() {
            Some(last) if last.1 == self.start => last.1 = end,
            _ => self.got.push((self.start, end)),
        }
        self.held.drain(..len as usize);
        self.start = end;
        Ok(())
    }
}

/// A failure of the network: bytes that contradict what was signed, or
/// a network that failed.
fn net_failure(e: NetError) -> Failure {
    let why = e.to_string();
    match e.is_refusal() {
        true => Failure::Refused(why),
        false => Failure::Interrupted(why),
    }
}

fn incomplete(url: &Url) -> Failure {
    Failure::Interrupted(format!("{url}: the answers lacked ranges asked for"))
}

/// `ranges` (sorted, `[start, end)`) with the runs no more than `gap`
/// bytes apart made one: asking for the bytes between costs less than
/// another range would.
fn coalesce(ranges: &[(u64, u64)], gap: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges {
        match out.last_mut() {
            Some(last) if start - last.1 <= gap => last.1 = end,
            _ => out.push((start, end)),
        }
    }
    out
}

/// `ranges` in requests of at most `count` ranges and about
/// [`BYTES_PER_REQUEST`] bytes, a longer range cut at block boundaries.
fn batches(ranges: &[(u64, u64)], count: usize) -> Vec<Vec<(u64, u64)>> {
    let mut out: Vec<Vec<(u64, u64)>> = Vec::new();
    let mut bytes = 0;
    for &(start, end) in ranges {
        let mut at = start;
        while at < end {
            let piece = (at, end.min(at + BYTES_PER_REQUEST));
            let full = out
                .last()
                .is_none_or(|b| b.len() >= count || bytes + piece.1 - piece.0 > BYTES_PER_REQUEST);
            if full {
                out.push(Vec::new());
                bytes = 0;
            }
            out.last_mut().expect("pushed").push(piece);
            bytes += piece.1 - piece.0;
            at = piece.1;
        }
    }
    out
}

/// The parts of `ranges` that `taken` does not cover; both sorted.
fn subtract(ranges: &[(u64, u64)], taken: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(start, end) in ranges {
        let mut at = start;
        for &(a, b) in taken.iter().filter(|(a, b)| *b > start && *a < end) {
            if a > at {
                out.push((at, a));
            }
            at = at.max(b);
        }
        if at < end {
            out.push((at, end));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_merged_cut_and_subtracted() {
        let r = [(0, 2048), (4096, 6144), (6144 + 100, 10_000)];
        assert_eq!(coalesce(&r, 128), vec![(0, 2048), (4096, 10_000)]);
        assert_eq!(coalesce(&r, 4096), vec![(0, 10_000)]);
        let big = [(0, 3 * BYTES_PER_REQUEST + 10)];
        assert_eq!(batches(&big, 32).len(), 4);
        assert_eq!(batches(&r, 2).len(), 2);
        assert_eq!(batches(&r, 1).len(), 3);
        assert_eq!(
            subtract(&[(0, 100), (200, 300)], &[(50, 250)]),
            vec![(0, 50), (250, 300)]
        );
        assert_eq!(subtract(&[(0, 100)], &[(0, 100)]), vec![]);
    }
}
