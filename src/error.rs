//! The errors that end container-run before or outside its event loop, the
//! one place where each becomes an exit code (SPEC section 7), and the one
//! style of every error line: `PROGRAM: MESSAGE`, where PROGRAM is
//! `container-run` in every mode, or `bpm` / `monit` when the binary is
//! invoked under that name.

use std::sync::OnceLock;

#[derive(Debug)]
pub enum Fatal {
    /// Bad flags, names, durations or paths: nothing has been created.
    Usage(String),
    /// The environment refused something container-run needs (base
    /// directory, socket in use, a system call at start-up).
    Setup(String),
    /// The job's command could not be executed: 126 or 127.
    Exec { code: u8, message: String },
    /// A client found no container-run to talk to (no socket at all): 3.
    NoAnswer(String),
    /// Not an error: the text that `--help`, `--version` or `help` asked
    /// for. It comes back to `main` as a value, which prints it on stdout
    /// and exits 0, so that nothing but `main` ends the process.
    Shown(String),
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::Usage(m)
            | Fatal::Setup(m)
            | Fatal::NoAnswer(m)
            | Fatal::Shown(m)
            | Fatal::Exec { message: m, .. } => f.write_str(m),
        }
    }
}

impl std::error::Error for Fatal {}

impl Fatal {
    pub fn exit_code(&self) -> u8 {
        match self {
            Fatal::Shown(_) => crate::exit::OK,
            Fatal::Usage(_) => crate::exit::USAGE,
            Fatal::Setup(_) => crate::exit::FAILURE,
            Fatal::NoAnswer(_) => crate::exit::NO_ANSWER,
            Fatal::Exec { code, .. } => *code,
        }
    }

    /// `CONTEXT: ERROR`, with an OS error worded once (`permission
    /// denied`), whether it comes from std or from nix.
    pub fn setup(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Fatal {
        Fatal::Setup(format!("{context}: {}", phrase(&err.to_string())))
    }
}

static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// Set once by `main`: `bpm` when invoked as bpm, else `container-run`.
pub fn set_program(name: &'static str) {
    let _ = PROGRAM.set(name);
}

/// The name every error line starts with.
pub fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("container-run")
}

/// Print one error line on stderr in the house style.
pub fn report(message: impl std::fmt::Display) {
    eprintln!("{}: {message}", program());
}

/// An OS error as one lower-case phrase, without Rust's `(os error N)`
/// suffix: `permission denied`, `no such file or directory`.
pub fn os_phrase(err: &std::io::Error) -> String {
    phrase(&err.to_string())
}

/// std's `Permission denied (os error 13)` and nix's `EACCES: Permission
/// denied` both become `permission denied`; other text is left as it is.
fn phrase(text: &str) -> String {
    let errno_name =
        |n: &str| n.len() > 1 && n.starts_with('E') && n.bytes().all(|b| b.is_ascii_uppercase());
    let os = match (text.find(" (os error "), text.split_once(": ")) {
        (Some(at), _) => &text[..at],
        (None, Some((name, rest))) if errno_name(name) => rest,
        _ => return text.to_string(),
    };
    let mut chars = os.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_are_one_phrase() {
        let e = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(os_phrase(&e), "permission denied");
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(os_phrase(&e), "no such file or directory");
        let e = std::io::Error::other("Custom text");
        assert_eq!(os_phrase(&e), "Custom text");
        let nix = nix::errno::Errno::EPERM;
        assert_eq!(
            Fatal::setup("cannot become a child subreaper", nix).to_string(),
            "cannot become a child subreaper: operation not permitted"
        );
        assert_eq!(
            Fatal::setup("x", "ENOTAFLAG is not an errno").to_string(),
            "x: ENOTAFLAG is not an errno"
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Fatal::Shown("help".into()).exit_code(), 0);
        assert_eq!(Fatal::Usage("x".into()).exit_code(), 2);
        assert_eq!(Fatal::Setup("x".into()).exit_code(), 1);
        assert_eq!(Fatal::NoAnswer("x".into()).exit_code(), 3);
    }
}
