//! What every server binary does before its own work: parse the command line, exiting 64 on
//! bad configuration, and start the runtime.

use std::process::ExitCode;

/// Exit code for bad configuration (`EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// The command line parsed as `T`. `--help` and `--version` print and exit 0; anything clap
/// refuses prints why and exits [`EXIT_CONFIG`].
///
/// # Errors
/// The exit code to return from `main` when the process should stop here.
pub fn parse<T: clap::Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(|err| {
        let _ = err.print();
        if err.use_stderr() {
            ExitCode::from(EXIT_CONFIG)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// A configuration error, said as `error: <what>` (in the log format, see
/// [`crate::logging::fatal`]), with [`EXIT_CONFIG`] to return.
pub fn config_error(what: impl std::fmt::Display) -> ExitCode {
    crate::logging::fatal(what);
    ExitCode::from(EXIT_CONFIG)
}

/// The flag (and environment variable) that sets a configuration field, as `--flag-name
/// (ENV_NAME)`, for error messages: the argument of `command` named like the field, or like it
/// with a unit suffix (`read_block` → `--read-block-ms`). `None` when no argument matches.
#[must_use]
pub fn flag_of(command: &clap::Command, field: &str) -> Option<String> {
    let field = field.replace('.', "_");
    let arg = ["", "_ms", "_s"].iter().find_map(|suffix| {
        let id = format!("{field}{suffix}");
        command
            .get_arguments()
            .find(|arg| arg.get_id().as_str() == id)
    })?;
    let long = arg.get_long()?;
    Some(match arg.get_env() {
        Some(env) => format!("--{long} ({})", env.to_string_lossy()),
        None => format!("--{long}"),
    })
}

/// The multi-threaded runtime a server runs on.
///
/// # Errors
/// The exit code to return from `main` when the runtime cannot start (said on stderr).
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|err| {
        crate::logging::fatal(format_args!("cannot start the runtime: {err}"));
        ExitCode::FAILURE
    })
}

/// A listening address flag that may be turned off: `host:port` (an IP address), or `off` (or
/// an empty value) for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrOrOff(pub Option<std::net::SocketAddr>);

impl std::str::FromStr for AddrOrOff {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        value
            .parse()
            .map(|addr| Self(Some(addr)))
            .map_err(|err| format!("{err}: expected host:port (an IP address) or `off`"))
    }
}

#[cfg(test)]
mod tests {
    use super::AddrOrOff;

    #[test]
    fn an_address_or_off() {
        assert_eq!("off".parse::<AddrOrOff>(), Ok(AddrOrOff(None)));
        assert_eq!(" ".parse::<AddrOrOff>(), Ok(AddrOrOff(None)));
        assert_eq!(
            "127.0.0.1:9101".parse::<AddrOrOff>(),
            Ok(AddrOrOff(Some(([127, 0, 0, 1], 9101).into())))
        );
        assert!("localhost".parse::<AddrOrOff>().is_err());
    }
}
