//! Release notes: Markdown to HTML that is safe to put in a feed and a page.
//!
//! comrak without its `unsafe` render option drops raw HTML and replaces
//! links and images with dangerous schemes (`javascript:`, `vbscript:`,
//! `file:`, `data:` other than images) with empty URLs.
//!
//! comrak keeps a node of some hundreds of bytes for every block and
//! inline it parses: dense Markdown takes up to 250 times its size. Notes
//! longer than [`PIECE`] are therefore parsed and rendered a piece at a
//! time, each cut where a top-level block starts, so the pieces render as
//! the whole would; only a reference-style link whose definition lies in
//! another piece stays text, and a single block longer than a piece is cut
//! at a line.

use comrak::{Arena, Options, format_html, parse_document};

/// The most Markdown parsed at once (a piece's tree is at most some 16 MB).
const PIECE: usize = 64 << 10;

/// The notes as sanitized HTML. `keep` is shown each piece's HTML as it
/// is rendered; once it returns false, rendering stops and the result is
/// `None`.
pub fn to_html(markdown: &str, keep: impl FnMut(&str) -> bool) -> Option<String> {
    render(markdown, PIECE, keep)
}

fn options() -> Options<'static> {
    let mut options = Options::default();
    options.extension.strikethrough = true;
    options.extension.table = true;
    options.extension.autolink = true;
    options.extension.tasklist = true;
    options.render.r#unsafe = false;
    options
}

/// [`to_html`] with pieces of at most `piece` bytes.
fn render(markdown: &str, piece: usize, mut keep: impl FnMut(&str) -> bool) -> Option<String> {
    let options = options();
    let mut html = String::new();
    let mut rest = markdown;
    while !rest.is_empty() {
        let window = &rest[..window_end(rest, piece)];
        let arena = Arena::new();
        let root = parse_document(&arena, window, &options);
        let mut taken = window.len();
        // Unless this is the end of the notes, the last top-level block
        // may go on past the window: it is left for the next piece, which
        // starts at its first line. Every block before it ended where it
        // would in the whole notes, since blocks are parsed line by line,
        // forwards.
        if taken < rest.len()
            && let Some(last) = root.last_child()
            && last.previous_sibling().is_some()
        {
            taken = line_start(window, last.data().sourcepos.start.line);
            last.detach();
        }
        let start = html.len();
        format_html(root, &options, &mut html).expect("formatting into a String cannot fail");
        if !keep(&html[start..]) {
            return None;
        }
        rest = &rest[taken..];
    }
    Some(html)
}

/// Where the window of at most `piece` bytes at the start of `text` ends:
/// after its last line break, else (one line longer than a piece) after
/// its last space, else at a character boundary; all of `text` when it is
/// no longer than a piece.
fn window_end(text: &str, piece: usize) -> usize {
    if text.len() <= piece {
        return text.len();
    }
    let mut end = piece;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    match head.rfind(['\n', '\r']) {
        // A CR and the LF after it end one line.
        Some(i) if text[i..].starts_with("\r\n") => i + 2,
        Some(i) => i + 1,
        None => head.rfind([' ', '\t']).map_or(end, |i| i + 1),
    }
}

/// The byte offset of 1-based line `line` of `text`, whose lines end with
/// LF, CRLF or a lone CR, as Markdown's do.
fn line_start(text: &str, line: usize) -> usize {
    let bytes = text.as_bytes();
    let mut offset = 0;
    for _ in 1..line {
        match bytes[offset..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            Some(i) => {
                offset += i + 1;
                if bytes[offset - 1] == b'\r' && bytes.get(offset) == Some(&b'\n') {
                    offset += 1;
                }
            }
            None => return text.len(),
        }
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(markdown: &str) -> String {
        render(markdown, usize::MAX, |_| true).unwrap()
    }

    #[test]
    fn raw_html_and_script_links_are_dropped() {
        let html = whole(
            "<script>alert(1)</script>\n\n[x](javascript:alert(1)) [y](data:text/html,hi) \
             <img src=x onerror=alert(1)> [ok](https://example.com/)",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("data:"), "{html}");
        assert!(!html.contains("onerror"), "{html}");
        assert!(
            html.contains(r#"<a href="https://example.com/">ok</a>"#),
            "{html}"
        );
    }

    /// Notes in which blocks span blank lines and lines end every way:
    /// fenced code, raw HTML blocks, loose lists, quotes, tables.
    const NOTES: &str = "# Release 2.0\n\nFirst *paragraph*\nwith a lazy line.\n\n\
        - one\n\n- two, loose\n\n  still two\n- three\n\nHeading\n=======\n\n\
        ```sh\nmake\n\nmake install\n```\n\n> quoted\n>\n> still quoted\n\n\
        <!-- a comment\n\nover blank lines -->\n\n<script>\n\nalert(1)\n</script>\n\n\
        | a | b |\n|---|---|\n| 1 | 2 |\n\n    indented code\n\n    more\n\n\
        1. first\r\n2. second\r\n\r\nCR\ronly\r\rlines\n\n~~~\ntilde\n~~~\n\n- [x] done\n";

    /// Exactly, with pieces that hold more than the longest block.
    #[test]
    fn notes_render_in_pieces_as_they_render_whole() {
        let expected = whole(NOTES);
        for piece in 80..=NOTES.len() {
            let mut pieces = 0;
            let html = render(NOTES, piece, |_| {
                pieces += 1;
                true
            })
            .unwrap();
            assert_eq!(html, expected, "in pieces of {piece} bytes");
            assert!(piece < NOTES.len() || pieces == 1);
        }
    }

    #[test]
    fn a_block_longer_than_a_piece_is_cut_at_a_line() {
        let list = "- item\n".repeat(100);
        let html = render(&list, 70, |_| true).unwrap();
        assert_eq!(html.matches("<li>item</li>").count(), 100);
        assert!(html.matches("<ul>").count() > 1, "{html}");
        let line = "word ".repeat(100);
        let html = render(&line, 64, |_| true).unwrap();
        assert_eq!(html.matches("word").count(), 100);
    }

    #[test]
    fn rendering_stops_when_told() {
        let mut seen = 0;
        let notes = "Paragraph.\n\n".repeat(100);
        assert_eq!(
            render(&notes, 100, |piece| {
                seen += piece.len();
                seen < 200
            }),
            None
        );
        assert!(seen < 300, "{seen}");
    }
}
