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
    page_reads_whole_at_a_phones_and_a_desktops_width needs CHROMIUM;
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

/// The example site's page measured in Chromium at `width` CSS pixels: a
/// copy of the page with `script` added (the published page has none),
/// in an iframe of that width. `script` sets `document.title` to what it
/// found, which is returned.
fn measure(width: u32, script: &str) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    assert_success(&crate::common::vmcast(
        repo,
        &["build", "--quiet", "--out", site.to_str().unwrap()],
        &[],
    ));
    let html = fs::read_to_string(site.join("index.html")).unwrap();
    let script = format!("<script>window.onload = function () {{ {script} }};</script></body>");
    fs::write(site.join("measured.html"), html.replace("</body>", &script)).unwrap();
    fs::write(
        site.join("frame.html"),
        format!(
            "<html><body><iframe id=f src=\"measured.html\" width={width} height=800></iframe>\
             <script>setTimeout(function () {{ document.title = \
             document.getElementById('f').contentDocument.title; }}, 1500);</script></body></html>"
        ),
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
        .arg(format!("--window-size={},900", width + 100))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", site.join("frame.html").display()))
        .output()
        .unwrap();
    assert_success(&out);
    let dom = String::from_utf8_lossy(&out.stdout);
    dom.split_once("<title>")
        .and_then(|(_, t)| t.split_once("</title>"))
        .map(|(t, _)| {
            t.replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .unwrap_or_default()
}

/// At a phone's width (375 CSS pixels) nothing outside a scrolling block
/// (the images table, a code block of the notes) may be wider than the
/// screen: the commands to copy wrap inside their box.
fn page_does_not_scroll_sideways_on_a_phone() {
    let title = measure(
        375,
        "var wide = [];\
         document.querySelectorAll('body *').forEach(function (e) {\
           if (e.closest('.table-wrap') || e.closest('pre:not(.commands)')) return;\
           var r = e.getBoundingClientRect();\
           if (r.right > window.innerWidth + 1) wide.push(e.tagName + ' ' + (e.textContent || '').slice(0, 50));\
         });\
         document.title = 'width=' + window.innerWidth + ' scroll=' + document.documentElement.scrollWidth\
           + ' wide=' + JSON.stringify(wide.slice(0, 5));",
    );
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

/// What a reader sees of each thing that was cut, at 375 and 1280 pixels:
/// every command of "Verify your download" inside its box (no sideways
/// scroll of a 1,093 px block in a 349 px one); the public key whole on
/// one line wherever it is shown, and not in running text, where it broke
/// in mid-key; at a phone's width, every field of the stacked image list
/// with its label (the format and the architecture had none); at a
/// desktop's, each SHA-256 in even halves (it left 2 or 3 characters on
/// a line) and each size on one line (`384.0` / `KiB`).
fn page_reads_whole_at_a_phones_and_a_desktops_width() {
    // Characters per line of an element's text, the way the reader sees
    // them: each character's box, grouped by its top.
    let script = "\
        function lines(node) {\
          var tops = {}, range = document.createRange();\
          var walk = document.createTreeWalker(node, NodeFilter.SHOW_TEXT), texts = [], text;\
          if (node.nodeType === Node.TEXT_NODE) texts.push(node);\
          while ((text = walk.nextNode())) texts.push(text);\
          texts.forEach(function (text) {\
            for (var i = 0; i < text.length; i++) {\
              if (/\\s/.test(text.data[i])) continue;\
              range.setStart(text, i); range.setEnd(text, i + 1);\
              var top = Math.round(range.getBoundingClientRect().top);\
              tops[top] = (tops[top] || 0) + 1;\
            }\
          });\
          return Object.keys(tops).sort(function (a, b) { return a - b; }).map(function (k) { return tops[k]; });\
        }\
        var r = { width: window.innerWidth, overflowing: [], keys: [], hashes: [], sizes: [], unlabeled: [], inline_key: false };\
        document.querySelectorAll('pre.commands').forEach(function (pre) {\
          if (pre.scrollWidth > pre.clientWidth + 1) r.overflowing.push(pre.textContent.slice(0, 40));\
        });\
        var key = '';\
        document.querySelectorAll('.pubkey').forEach(function (k) {\
          key = k.textContent.trim();\
          var box = k.closest('pre, p').getBoundingClientRect(), own = k.getBoundingClientRect();\
          r.keys.push({ lines: lines(k).length, fits: own.right <= box.right + 1,\
            shrunk: parseFloat(getComputedStyle(k).fontSize) < parseFloat(getComputedStyle(k.parentElement).fontSize) });\
        });\
        document.querySelectorAll('p code:not(.pubkey)').forEach(function (c) {\
          if (key && c.textContent.indexOf(key) >= 0) r.inline_key = true;\
        });\
        document.querySelectorAll('table.images code.hash').forEach(function (h) { r.hashes.push(lines(h)); });\
        document.querySelectorAll('table.images td.size').forEach(function (td) { r.sizes.push(lines(td.firstChild).length); });\
        if (getComputedStyle(document.querySelector('table.images thead')).display === 'none') {\
          document.querySelectorAll('table.images td, table.images .arch').forEach(function (e) {\
            if (getComputedStyle(e, '::before').content === 'none') r.unlabeled.push(e.textContent.trim().slice(0, 30));\
          });\
        }\
        document.title = JSON.stringify(r);";
    for width in [375, 1280] {
        let title = measure(width, script);
        let r: serde_json::Value = serde_json::from_str(&title)
            .unwrap_or_else(|e| panic!("not measured at {width}: {e}: {title:?}"));
        assert_eq!(r["width"], width, "{title}");
        assert_eq!(r["overflowing"], serde_json::json!([]), "{width}: {title}");
        let keys = r["keys"].as_array().unwrap();
        assert_eq!(
            keys.len(),
            3,
            "{width}: the key in the header and in both commands"
        );
        for key in keys {
            assert_eq!(key["lines"], 1, "{width}: the key breaks: {title}");
            assert_eq!(
                key["fits"], true,
                "{width}: the key runs out of its box: {title}"
            );
        }
        assert_eq!(
            r["inline_key"], false,
            "{width}: the key is in running text"
        );
        if width == 375 {
            assert_eq!(r["unlabeled"], serde_json::json!([]), "{title}");
        } else {
            assert!(keys.iter().all(|k| k["shrunk"] == false), "{title}");
            let hashes = r["hashes"].as_array().unwrap();
            assert!(hashes.len() >= 7, "{title}");
            for hash in hashes {
                let lines: Vec<u64> = hash
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_u64().unwrap())
                    .collect();
                assert_eq!(lines.iter().sum::<u64>(), 64, "{title}");
                assert!(
                    lines.iter().all(|&n| n >= 16),
                    "a SHA-256 line of {lines:?}: {title}"
                );
            }
            let sizes = r["sizes"].as_array().unwrap();
            assert!(sizes.len() >= 14 && sizes.iter().all(|n| n == 1), "{title}");
        }
    }
}
