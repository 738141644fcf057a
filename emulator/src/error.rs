//! Error type of the emulator: load-time problems (parse, unsupported instruction) and misuse of
//! the backend API (unknown entry, bad launch configuration, bad device pointer). Problems found
//! *in the kernel while it runs* are not errors but [`Finding`](super::Finding)s.

/// Everything that can go wrong before or around a launch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmuError {
    /// The PTX text is malformed (or uses syntax this parser does not know).
    #[error("PTX parse error at line {line}: {msg} (in `{text}`)")]
    Parse {
        line: u32,
        text: String,
        msg: String,
    },
    /// A well-formed instruction that the emulator does not implement. Raised at load time so no
    /// kernel ever runs with an instruction silently skipped. `detail` names what exactly is
    /// missing (e.g. a qualifier no lowering consumed), or is empty.
    #[error("unsupported instruction `{opcode}` at line {line}{detail}: `{text}`")]
    Unsupported {
        line: u32,
        opcode: String,
        text: String,
        detail: String,
    },
    /// The module has no `.entry` of that name.
    #[error("no kernel entry named `{0}` in the module")]
    NoEntry(String),
    /// Launch configuration or parameter bytes do not fit the entry.
    #[error("invalid launch: {0}")]
    Launch(String),
    /// Host-side access through `Device::read`/`write` to memory that is not allocated.
    #[error("invalid device memory access: {0}")]
    Memory(String),
}

impl EmuError {
    pub(crate) fn parse(line: u32, text: &str, msg: impl Into<String>) -> Self {
        EmuError::Parse {
            line,
            text: text.trim().to_string(),
            msg: msg.into(),
        }
    }
}
