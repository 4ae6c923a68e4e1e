//! How errors look on a terminal, and how reports reach stdout.

use std::io::{IsTerminal, Write};

/// Writes to stdout (see `outln!`): a closed pipe ends the process with
/// status 141, any other failure with the error and status 1.
pub fn write_out(args: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!(
            "{}",
            paint_error(&format!("error: cannot write to stdout: {e}"))
        );
        std::process::exit(1);
    }
}

/// `error: <message>: <cause>: ...`, the whole source chain on one line,
/// with `error` in bold red on a terminal unless NO_COLOR is set. A cause
/// the line already says is left out: some libraries' messages repeat
/// their own causes, which would otherwise be said two or three times.
pub fn error_line(err: &dyn std::error::Error) -> String {
    let mut line = format!("error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(&format!(": {text}"));
        }
        source = cause.source();
    }
    paint_error(&line)
}

/// `error:` in bold red on a terminal, unless NO_COLOR is set.
pub fn paint_error(line: &str) -> String {
    let color = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    match (color, line.strip_prefix("error:")) {
        (true, Some(rest)) => format!("\x1b[1;31merror\x1b[0m:{rest}"),
        _ => line.to_owned(),
    }
}
