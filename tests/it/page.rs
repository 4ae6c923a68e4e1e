//! The landing page in a real browser: headless Chromium renders it at a
//! phone's and a desktop's width. The page must make no external request
//! (no CDN fonts, styles, scripts or images), so it works from a bucket
//! behind a strict policy.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::{Fixture, assert_success, have_tool};

/// Every URL the page would fetch by itself (not links a reader follows).
fn fetched_urls(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for tag in html.split('<').skip(1) {
        let name = tag
            .split([' ', '>', '\n'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let attr = match name.as_str() {
            "script" | "img" | "iframe" | "source" | "video" | "audio" | "embed" => "src=\"",
            "link" if !tag.contains("rel=\"alternate\"") => "href=\"",
            _ => continue,
        };
        if let Some(rest) = tag.split_once(attr).map(|(_, r)| r) {
            out.push(rest.split('"').next().unwrap_or_default().to_owned());
        }
    }
    for css in ["url(", "@import"] {
        if html.contains(css) {
            out.push(format!("css {css}"));
        }
    }
    out
}

#[test]
fn page_makes_no_external_request_and_has_no_script() {
    let fixture = Fixture::new("unsafe-notes");
    assert_success(&fixture.build(&[]));
    let html = fs::read_to_string(fixture.path("public/index.html")).unwrap();
    assert_eq!(fetched_urls(&html), Vec::<String>::new());
    assert!(!html.to_ascii_lowercase().contains("<script"));
    // The check itself can fail: a CDN stylesheet is caught.
    let bad = html.replace(
        "</head>",
        "<link rel=\"stylesheet\" href=\"https://cdn.example.com/x.css\"></head>",
    );
    assert_eq!(fetched_urls(&bad), ["https://cdn.example.com/x.css"]);
}

/// Renders the example site's page at 375 and 1280 pixels wide; the
/// screenshots land in target/ (and, refreshed by hand, in docs/screenshots/).
#[test]
fn page_renders_on_a_phone_and_a_desktop_in_chromium() {
    if !have_tool("chromium") {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page-shots");
    let site = out_dir.join("site");
    fs::create_dir_all(&out_dir).unwrap();
    assert_success(&crate::common::vmcast(
        repo,
        &["build", "--quiet", "--out", site.to_str().unwrap()],
        &[],
    ));
    let page = format!("file://{}", site.join("index.html").display());
    for (width, height) in [(375, 2000), (1280, 1400)] {
        let shot = out_dir.join(format!("page-{width}.png"));
        let _ = fs::remove_file(&shot);
        let profile = tempfile::tempdir().unwrap();
        let out = Command::new("timeout")
            .args([
                "90",
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
            ])
            .args([
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
            ])
            .args(["--disable-sync", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(&page)
            .output()
            .unwrap();
        assert_success(&out);
        let png = fs::read(&shot).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{shot:?} is not a PNG");
        // IHDR: the screenshot has the viewport's width.
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        assert_eq!(w, width, "{shot:?}");
        assert!(
            png.len() > 20_000,
            "{shot:?} looks blank ({} bytes)",
            png.len()
        );
    }
}
