//! Release notes: Markdown to HTML that is safe to put in a feed and a page.
//!
//! comrak without its `unsafe` render option drops raw HTML and replaces
//! links and images with dangerous schemes (`javascript:`, `vbscript:`,
//! `file:`, `data:` other than images) with empty URLs.

use comrak::{Options, markdown_to_html};

pub fn to_html(markdown: &str) -> String {
    let mut options = Options::default();
    options.extension.strikethrough = true;
    options.extension.table = true;
    options.extension.autolink = true;
    options.extension.tasklist = true;
    options.render.r#unsafe = false;
    markdown_to_html(markdown, &options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_html_and_script_links_are_dropped() {
        let html = to_html(
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
}
