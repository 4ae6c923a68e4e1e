//! The landing page in a real browser: headless Chromium renders it at a
//! phone's and a desktop's width. The page must make no external request
//! (no CDN fonts, styles, scripts or images), so it works from a bucket
//! behind a strict policy.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::{Fixture, assert_success};

tests! {
    page_makes_no_external_request_and_has_no_script;
    page_renders_on_a_phone_and_a_desktop_in_chromium needs CHROMIUM;
    page_does_not_scroll_sideways_on_a_phone needs CHROMIUM;
}

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
fn page_renders_on_a_phone_and_a_desktop_in_chromium() {
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

/// At a phone's width (375 CSS pixels) nothing outside a scrolling block
/// (`pre`, the images table) may be wider than the screen: the inline
/// commands carry the 56-character base64 public key, which must wrap.
/// The page is measured in an iframe of that width, with a script added
/// to a copy of the page (the published page has none).
fn page_does_not_scroll_sideways_on_a_phone() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    assert_success(&crate::common::vmcast(
        repo,
        &["build", "--quiet", "--out", site.to_str().unwrap()],
        &[],
    ));
    let measure = "<script>window.onload = function () {\
        var wide = [];\
        document.querySelectorAll('body *').forEach(function (e) {\
          if (e.closest('pre') || e.closest('.table-wrap')) return;\
          var r = e.getBoundingClientRect();\
          if (r.right > window.innerWidth + 1) wide.push(e.tagName + ' ' + (e.textContent || '').slice(0, 50));\
        });\
        document.title = 'width=' + window.innerWidth + ' scroll=' + document.documentElement.scrollWidth\
          + ' wide=' + JSON.stringify(wide.slice(0, 5));\
      };</script></body>";
    let html = fs::read_to_string(site.join("index.html")).unwrap();
    fs::write(site.join("measured.html"), html.replace("</body>", measure)).unwrap();
    fs::write(
        site.join("phone.html"),
        "<html><body><iframe id=f src=\"measured.html\" width=375 height=800></iframe>\
         <script>setTimeout(function () { document.title = \
         document.getElementById('f').contentDocument.title; }, 1500);</script></body></html>",
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .args([
            "90",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .args([
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
        ])
        .args(["--disable-component-update", "--disable-sync"])
        .args([
            "--allow-file-access-from-files",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", site.join("phone.html").display()))
        .output()
        .unwrap();
    assert_success(&out);
    let dom = String::from_utf8_lossy(&out.stdout);
    let title = dom
        .split_once("<title>")
        .and_then(|(_, t)| t.split_once("</title>"))
        .map(|(t, _)| t.replace("&quot;", "\""))
        .unwrap_or_default();
    assert!(title.starts_with("width=375 "), "not measured: {title:?}");
    let scroll: u32 = title
        .split("scroll=")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(u32::MAX);
    assert!(scroll <= 375, "the page scrolls sideways: {title}");
    assert!(title.ends_with("wide=[]"), "{title}");
}
