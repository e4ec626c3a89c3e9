//! Log lines on stderr: human-readable or JSON, the level from `RUST_LOG` (`info` by default).
//!
//! Design constraints:
//! - Text lines carry colour only when stderr is a terminal: a file or a pipe gets plain text.
//! - JSON lines are one flat object each: the event's fields beside `level`, `target` and
//!   `message`, not nested under `fields`, so collectors index them as they come.
//! - Errors that end the process ([`fatal`]) follow the format too: `error: …` in text, a JSON
//!   line in JSON, so a collector sees why a pod failed to start.

use std::io::IsTerminal;
use std::sync::OnceLock;

/// Log line formats (`--log-format`, `HUNT_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The format [`init`] installed.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Installs the process's log subscriber, writing `format` lines to stderr. A second call
/// leaves the first subscriber in place.
pub fn init(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // `try_init` fails only when a subscriber is installed already: keep that one.
    let installed = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() {
        let _ = FORMAT.set(format);
    }
}

/// Says why the process stops, in the installed format: `error: <what>` on stderr in text (or
/// before [`init`]), an `ERROR` line with the same message in JSON.
pub fn fatal(what: impl std::fmt::Display) {
    match FORMAT.get() {
        Some(LogFormat::Json) => tracing::error!(error = %what, "error: {what}"),
        _ => eprintln!("error: {what}"),
    }
}
