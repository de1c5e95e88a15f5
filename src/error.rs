//! The errors that end container-run before or outside its event loop, and
//! the one place where each becomes an exit code (SPEC section 7).

#[derive(Debug)]
pub enum Fatal {
    /// Bad flags, names, durations or paths: nothing has been created.
    Usage(String),
    /// The environment refused something container-run needs (base
    /// directory, socket in use, a system call at start-up).
    Setup(String),
    /// The job's command could not be executed: 126 or 127.
    Exec { code: u8, message: String },
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::Usage(m) | Fatal::Setup(m) | Fatal::Exec { message: m, .. } => f.write_str(m),
        }
    }
}

impl std::error::Error for Fatal {}

impl Fatal {
    pub fn exit_code(&self) -> u8 {
        match self {
            Fatal::Usage(_) => crate::exit::USAGE,
            Fatal::Setup(_) => crate::exit::FAILURE,
            Fatal::Exec { code, .. } => *code,
        }
    }

    pub fn setup(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Fatal {
        Fatal::Setup(format!("{context}: {err}"))
    }
}
